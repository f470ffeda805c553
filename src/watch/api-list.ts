// Reads a list answer ({"kind":"...List","metadata":{...},"items":[...]}) item by item as its bytes arrive.
// JSON.parse of a whole 10,000 x 10 list built every served object in full at once (hundreds of megabytes,
// which the process then kept as its resident size) before anything could be cut down; here each item is
// parsed alone and handed on, so only the slim copies and one chunk are ever held. This is a scanner of the
// structure, not a parser: each item and the list's metadata go through JSON.parse, which checks them.

export class NotAListError extends Error {}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COLON = 0x3a;
const COMMA = 0x2c;
const isSpace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

export interface ListHead {
  /** The list's metadata.resourceVersion ('' without one). */
  resourceVersion: string;
  /** Items that are not objects (null, scalars, lists), skipped. */
  notObjects: number;
}

/** Whether chunk[from, end) ends in an odd run of backslashes (the byte at `end` is then escaped). */
function endsInOddBackslashes(chunk: Buffer, from: number, end: number): boolean {
  let j = end;
  while (j > from && chunk[j - 1] === BACKSLASH) j--;
  return (end - j) % 2 === 1;
}

/** Bytes of one value that may span chunks: the parts of earlier chunks, and where it starts in this one. */
class Span {
  parts: Buffer[] = [];
  start: number;
  constructor(start: number) {
    this.start = start;
  }
  /** The chunk ended with the value still open. */
  carry(chunk: Buffer): void {
    this.parts.push(chunk.subarray(Math.max(0, this.start)));
    this.start = -1;
  }
  /** The value ends before `end` in this chunk. */
  text(chunk: Buffer, end: number): string {
    const last = chunk.subarray(Math.max(0, this.start), end);
    return (this.parts.length === 0 ? last : Buffer.concat([...this.parts, last])).toString('utf8');
  }
}

/**
 * Feeds the bytes of a list answer; `item` receives each element of `items` that is an object, parsed. Throws
 * NotAListError when the answer is not a JSON object with an `items` list, or an item is not JSON.
 */
export class ListScanner {
  readonly #item: (o: unknown) => void;
  #depth = 0;
  #inString = false;
  #escape = false;
  #started = false;
  #ended = false;
  /** At depth 1: whether the next string is a key, the key being read, and the last key read. */
  #expectKey = false;
  #keySpan: Span | null = null;
  #key = '';
  /** The value being captured: the list's metadata (at depth 1) or an item (at depth 2 of items). */
  #capture: Span | null = null;
  #captureKind: 'metadata' | 'item' = 'item';
  /** Inside the items list (its elements are at depth 2). */
  #inItems = false;
  #sawItems = false;
  /** Inside a literal element of items (null, a number, true). */
  #inLiteral = false;
  #metadata: unknown = null;
  #notObjects = 0;

  constructor(item: (o: unknown) => void) {
    this.#item = item;
  }

  push(chunk: Buffer): void {
    const n = chunk.length;
    for (let i = 0; i < n; i++) {
      const b = chunk[i]!;
      if (this.#inString) {
        if (this.#escape) {
          this.#escape = false;
          continue;
        }
        // Most of a list's bytes are inside strings: jump to the next quote (Buffer.indexOf) instead of
        // stepping through them; the quote ends the string unless an odd run of backslashes precedes it.
        const quote = chunk.indexOf(QUOTE, i);
        if (quote === -1) {
          this.#escape = endsInOddBackslashes(chunk, i, n);
          i = n;
          continue;
        }
        const escaped = endsInOddBackslashes(chunk, i, quote);
        i = quote;
        if (escaped) continue;
        this.#inString = false;
        if (this.#keySpan) {
          this.#key = JSON.parse(`"${this.#keySpan.text(chunk, i)}"`) as string;
          this.#keySpan = null;
        }
        continue;
      }
      if (isSpace(b)) {
        this.#inLiteral = false;
        continue;
      }
      if (this.#ended) throw new NotAListError('text after the end of the answer');
      if (!this.#started) {
        if (b !== OPEN_OBJECT) throw new NotAListError('not an object');
        this.#started = true;
        this.#depth = 1;
        this.#expectKey = true;
        continue;
      }
      if (b === QUOTE) {
        this.#inString = true;
        if (this.#depth === 1 && this.#expectKey) this.#keySpan = new Span(i + 1);
        else this.#valueStart(i, b);
        continue;
      }
      if (b === OPEN_OBJECT || b === OPEN_ARRAY) {
        this.#valueStart(i, b);
        this.#depth++;
        continue;
      }
      if (b === CLOSE_OBJECT || b === CLOSE_ARRAY) {
        this.#inLiteral = false;
        this.#depth--;
        if (this.#depth === 0) this.#ended = true;
        else if (this.#depth === 1 && this.#inItems) this.#inItems = false;
        else if (this.#capture && this.#depth === (this.#captureKind === 'metadata' ? 1 : 2)) this.#endCapture(chunk, i + 1);
        continue;
      }
      if (this.#depth === 1) {
        if (b === COLON) this.#expectKey = false;
        else if (b === COMMA) this.#expectKey = true;
        // "items": null is an empty list (Go writes a nil slice so).
        else if (b === 0x6e && this.#key === 'items' && !this.#expectKey) this.#sawItems = true;
        continue;
      }
      if (this.#depth === 2 && this.#inItems) {
        if (b === COMMA) this.#inLiteral = false;
        else if (!this.#inLiteral) {
          this.#inLiteral = true;
          this.#notObjects++;
        }
      }
    }
    this.#capture?.carry(chunk);
    this.#keySpan?.carry(chunk);
  }

  /** Checks the answer was complete and returns its head. */
  end(): ListHead {
    if (!this.#ended) throw new NotAListError('the answer ended early');
    if (!this.#sawItems) throw new NotAListError('no items');
    const meta = this.#metadata as { resourceVersion?: unknown } | null;
    return { resourceVersion: typeof meta?.resourceVersion === 'string' ? meta.resourceVersion : '', notObjects: this.#notObjects };
  }

  /** A value starts at byte i (b): at depth 1 the value of the last key; at depth 2 of items, an item. */
  #valueStart(i: number, b: number): void {
    if (this.#depth === 1) {
      if (this.#key === 'items') {
        if (b !== OPEN_ARRAY) throw new NotAListError('items is not a list');
        this.#sawItems = true;
        this.#inItems = true;
      } else if (this.#key === 'metadata' && b === OPEN_OBJECT) {
        this.#capture = new Span(i);
        this.#captureKind = 'metadata';
      }
      return;
    }
    if (this.#depth === 2 && this.#inItems) {
      if (b === OPEN_OBJECT) {
        this.#capture = new Span(i);
        this.#captureKind = 'item';
      } else this.#notObjects++; // a string or a list
    }
  }

  #endCapture(chunk: Buffer, end: number): void {
    const text = this.#capture!.text(chunk, end);
    const kind = this.#captureKind;
    this.#capture = null;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new NotAListError(`${kind === 'item' ? 'an item' : 'the metadata'} is not JSON`);
    }
    if (kind === 'metadata') this.#metadata = value;
    else this.#item(value);
  }
}
