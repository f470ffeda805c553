// Reads list answers in Kubernetes' protobuf encoding (application/vnd.kubernetes.protobuf), which kube-proxy
// asks for: the fields the proxy reads are taken straight from the bytes, and everything else (managedFields,
// last-applied annotations, owner references, each endpoint's targetRef) is stepped over by its length, never
// decoded. At 10,000 services x 10 endpoints that is most of the bytes of the lists.
//
// The encoding (k8s.io/apimachinery runtime/serializer/protobuf): the 4 bytes "k8s\0", then a runtime.Unknown
// message whose `raw` (field 2) holds the List message: its ListMeta (field 1), then one length-delimited item per
// entry (field 2). Go writes fields in field-number order, so the ListMeta comes before the items and each item can
// be decoded as soon as its last byte is in. What an item decodes to: protobuf-objects.ts; the bytes themselves:
// protobuf-wire.ts.
import { ITEM_DECODERS, type ProtobufKind } from './protobuf-objects.ts';
import { LENGTH, MAGIC, ProtobufError, Reader, startsWithMagic } from './protobuf-wire.ts';

export { decodeItem, decodeObject, isProtobufKind, type ProtobufKind } from './protobuf-objects.ts';
export { ProtobufError } from './protobuf-wire.ts';

export const PROTOBUF_CONTENT_TYPE = 'application/vnd.kubernetes.protobuf';

/**
 * Feeds the bytes of a protobuf list answer; `item` receives each item, decoded, as soon as its last byte is in.
 * Only the bytes of one unfinished field are kept between chunks. Throws ProtobufError on anything that is not a
 * complete list of that shape.
 */
export class ProtobufListScanner {
  readonly #decode: (r: Reader) => Record<string, unknown>;
  readonly #item: (o: Record<string, unknown>) => void;
  /** Bytes read but not consumed (the start of a field not wholly in yet). */
  #rest: Buffer = Buffer.alloc(0);
  /** Bytes of the answer consumed before #rest. */
  #consumed = 0;
  #state: 'magic' | 'envelope' | 'list' = 'magic';
  /** Where the List message ends, in bytes of the answer (while in it). */
  #listEnd = 0;
  #sawList = false;
  #resourceVersion = '';

  constructor(kind: ProtobufKind, item: (o: Record<string, unknown>) => void) {
    this.#decode = ITEM_DECODERS[kind];
    this.#item = item;
  }

  push(chunk: Buffer): void {
    const buf = this.#rest.length === 0 ? chunk : Buffer.concat([this.#rest, chunk]);
    let pos = 0;
    if (this.#state === 'magic') {
      if (buf.length < MAGIC.length) {
        this.#rest = buf;
        return;
      }
      if (!startsWithMagic(buf)) throw new ProtobufError('no "k8s\\0" prefix');
      pos = MAGIC.length;
      this.#state = 'envelope';
    }
    for (;;) {
      const field = this.#field(buf, pos);
      if (field === null) break;
      pos = this.#take(buf, pos, field);
    }
    this.#consumed += pos;
    // Copied: a chunk the rest keeps a view of would be kept whole.
    this.#rest = pos === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(pos));
  }

  /**
   * The field that starts at buf[pos]: its number, wire type, and where its value starts and ends (for a
   * length-delimited one; the List itself ends later and is entered, not waited for); null when not wholly in.
   */
  #field(buf: Buffer, pos: number): { n: number; wire: number; start: number; end: number } | null {
    const limit = this.#state === 'list' ? Math.min(buf.length, this.#listEnd - this.#consumed) : buf.length;
    if (pos >= limit) return null;
    const r = new Reader(buf, pos, limit);
    try {
      const tag = r.varint();
      const n = tag >>> 3;
      const wire = tag & 7;
      if (wire !== LENGTH) {
        r.skip(wire);
        return { n, wire, start: pos, end: r.pos };
      }
      const length = r.varint();
      // The envelope's raw field is the List: entered at once, its items read as they come.
      if (this.#state === 'envelope' && n === 2) return { n, wire, start: r.pos, end: r.pos + length };
      return r.pos + length <= limit ? { n, wire, start: r.pos, end: r.pos + length } : null;
    } catch (e) {
      // A varint or fixed value cut by the chunk's end: wait for more.
      if (e instanceof ProtobufError && limit === buf.length) return null;
      throw e;
    }
  }

  /** Consumes one field; returns the position after what it consumed. */
  #take(buf: Buffer, pos: number, f: { n: number; wire: number; start: number; end: number }): number {
    if (this.#state === 'envelope') {
      if (f.n === 2 && f.wire === LENGTH) {
        if (this.#sawList) throw new ProtobufError('two lists in one answer');
        this.#sawList = true;
        this.#state = 'list';
        this.#listEnd = this.#consumed + f.end;
        this.#leaveListIfDone(f.start);
        return f.start;
      }
      return f.end;
    }
    if (f.wire === LENGTH && f.n === 2) this.#item(this.#decode(new Reader(buf, f.start, f.end)));
    else if (f.wire === LENGTH && f.n === 1) this.#resourceVersion = listResourceVersion(new Reader(buf, f.start, f.end));
    this.#leaveListIfDone(f.end);
    return f.end;
  }

  #leaveListIfDone(pos: number): void {
    if (this.#consumed + pos === this.#listEnd) this.#state = 'envelope';
  }

  /** Checks the answer was complete; returns the list's resourceVersion. */
  end(): { resourceVersion: string } {
    if (this.#state !== 'envelope' || this.#rest.length > 0 || !this.#sawList) throw new ProtobufError('the answer ends early');
    return { resourceVersion: this.#resourceVersion };
  }
}

function listResourceVersion(r: Reader): string {
  let rv = '';
  while (r.more) {
    const tag = r.varint();
    if (tag === (2 << 3) + LENGTH) rv = r.string();
    else r.skip(tag & 7);
  }
  return rv;
}
