// Kubernetes' protobuf encoding at the level of bytes: the "k8s\0" prefix, and a cursor over protobuf's wire
// format (varints, length-delimited fields) that reads nested messages in place. What the fields mean is in
// protobuf-objects.ts; how a list answer is read as it streams in, in protobuf.ts.

export const MAGIC = Buffer.from('k8s\u0000', 'latin1');

/** Whether `buf` starts with the "k8s\0" prefix every protobuf answer of an API server has. */
export const startsWithMagic = (buf: Buffer): boolean => buf.length >= MAGIC.length && buf.compare(MAGIC, 0, MAGIC.length, 0, MAGIC.length) === 0;

export class ProtobufError extends Error {}

export const VARINT = 0;
const FIXED64 = 1;
export const LENGTH = 2;
const FIXED32 = 5;

type Utf8Slice = (this: Buffer, start: number, end: number) => string;
/** Buffer's own UTF-8 decoder, without toString's argument handling (a third of the decoder's time on short strings). */
const utf8Slice: Utf8Slice =
  (Buffer.prototype as unknown as { utf8Slice?: Utf8Slice }).utf8Slice ??
  function (this: Buffer, start: number, end: number) {
    return this.toString('utf8', start, end);
  };

const SHARED_STRINGS = new Map<string, string>();
const MAX_SHARED_STRINGS = 10_000;

/**
 * A cursor over buf[pos, end). A nested message is read in place: enter() narrows `end` to it and returns the
 * outer end, which leave() restores (no object per message: an EndpointSlice list has several per endpoint).
 * Varints up to 2^53 are exact (lengths, int32 and int64 values the proxy reads); past that, precision is lost,
 * not the position.
 */
export class Reader {
  buf: Buffer;
  pos: number;
  end: number;
  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  get more(): boolean {
    return this.pos < this.end;
  }

  varint(): number {
    const buf = this.buf;
    let b = buf[this.pos++]!;
    if (b < 0x80 && this.pos <= this.end) return b;
    let value = b & 0x7f;
    let scale = 0x80;
    for (let i = 1; ; i++) {
      if (this.pos >= this.end || i > 9) throw new ProtobufError('a varint runs past its message');
      b = buf[this.pos++]!;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 0x80;
    }
  }

  /**
   * An int32 field: negative values are written as 10-byte varints of their 64-bit two's complement, of which the
   * low 32 bits are the value.
   */
  int32(): number {
    const buf = this.buf;
    let low = 0;
    for (let i = 0; ; i++) {
      if (this.pos >= this.end || i > 9) throw new ProtobufError('a varint runs past its message');
      const b = buf[this.pos++]!;
      if (i < 5) low |= (b & 0x7f) << (7 * i);
      if (b < 0x80) return low | 0;
    }
  }

  /** The end of a length-delimited field's value that starts here. */
  lengthEnd(): number {
    const n = this.varint();
    const e = this.pos + n;
    if (e > this.end) throw new ProtobufError('a field runs past its message');
    return e;
  }

  string(): string {
    const e = this.lengthEnd();
    const s = utf8Slice.call(this.buf, this.pos, e);
    this.pos = e;
    return s;
  }

  /**
   * A string that repeats across objects (a namespace, a node or zone name, a protocol): one copy of each value is
   * kept, as JSON.parse shares such short strings. At 10,000 x 10, every endpoint's node name as a string of its
   * own was about 3 MB more resident than the JSON path.
   */
  shared(): string {
    const s = this.string();
    const known = SHARED_STRINGS.get(s);
    if (known !== undefined) return known;
    // Bounded: a cluster with more distinct values than this shares only the first ones.
    if (SHARED_STRINGS.size < MAX_SHARED_STRINGS) SHARED_STRINGS.set(s, s);
    return s;
  }

  /** Narrows the reader to the nested message that starts here; returns what leave() needs. */
  enter(): number {
    const e = this.lengthEnd();
    const outer = this.end;
    this.end = e;
    return outer;
  }

  /** Back to the enclosing message, after the nested one (read whole or not). */
  leave(outer: number): void {
    this.pos = this.end;
    this.end = outer;
  }

  /** Steps over the value of a field of wire type `wire`. */
  skip(wire: number): void {
    if (wire === VARINT) this.varint();
    else if (wire === LENGTH) this.pos = this.lengthEnd();
    else if (wire === FIXED64) this.pos += 8;
    else if (wire === FIXED32) this.pos += 4;
    else throw new ProtobufError(`wire type ${wire} is not read`);
    if (this.pos > this.end) throw new ProtobufError('a field runs past its message');
  }

  /** Whether the length-delimited value here equals `bytes` (moves past it either way). */
  equals(bytes: Uint8Array): boolean {
    const e = this.lengthEnd();
    const start = this.pos;
    this.pos = e;
    if (e - start !== bytes.length) return false;
    const buf = this.buf;
    for (let i = 0; i < bytes.length; i++) if (buf[start + i] !== bytes[i]) return false;
    return true;
  }
}

/** What a field's tag says, for a value that must be length-delimited. */
export function expectLength(wire: number): void {
  if (wire !== LENGTH) throw new ProtobufError(`wire type ${wire} where a length-delimited value belongs`);
}

export function expectVarint(wire: number): void {
  if (wire !== VARINT) throw new ProtobufError(`wire type ${wire} where a number belongs`);
}
