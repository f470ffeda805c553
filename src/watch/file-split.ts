// Splits an objects file into the texts of its objects without ever holding the file's whole parsed tree:
// a 10,000 x 10 dump is 100 MB of JSON, and its parsed tree several times that. A JSON List is read in
// chunks and its top-level `items` array cut into item texts by a small scanner (strings and escapes
// honoured); a YAML file is cut into documents at `---` lines and a List document's block `items:` sequence
// into its entries. Each piece is parsed (and reduced to the model's fields) by the caller before the next is
// read. Anything else (a single object, a flow-style List, a top-level array) is one piece, parsed whole.
// The splitter does not validate: every byte ends up in a piece that the caller parses, and a caller that
// meets an error parses the whole file again, to say where the error is (file.ts).
import { createHash, hash } from 'node:crypto';
import { open } from 'node:fs/promises';

/**
 * One piece of a file, handed to the caller's onPiece. Its digest and text read the bytes of the chunk being
 * scanned, which the next read overwrites (chunks): take them during the call, never after it.
 */
export interface Piece {
  /** A digest of the text: equal digests, equal objects (the file source re-reads only changed pieces). */
  digest(): string;
  /** The piece's text, decoded when asked for (a re-read skips the unchanged pieces without decoding them). */
  text(): string;
  /** 'item': an entry of a List (in YAML: a one-entry sequence); 'header': the List without its entries (`items: []`); 'whole': a document. */
  role: 'item' | 'header' | 'whole';
  /** Which document of the file (the List an item belongs to). */
  doc: number;
}

const CHUNK = 1 << 20;

export class SplitError extends Error {}

/** Computed only when asked for: one-shot commands (state, explain, --dry-run) never need it. */
function digestOf(parts: readonly (Buffer | string)[]): () => string {
  return () => {
    if (parts.length === 1) return hash('sha1', parts[0]!, 'base64'); // one-shot: most pieces lie in one chunk
    const h = createHash('sha1');
    for (const p of parts) h.update(p);
    return h.digest('base64');
  };
}

function textPiece(text: string, role: Piece['role'], doc: number): Piece {
  return { digest: digestOf([text]), text: () => text, role, doc };
}

/** Whether the file's text is JSON (its first non-blank byte opens an object or array). */
export async function sniffJSON(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const first = buf.subarray(0, bytesRead).toString('latin1').trimStart()[0];
    return first === '{' || first === '[';
  } finally {
    await fh.close();
  }
}

/**
 * The file's bytes, a chunk at a time, every chunk read into the same buffer: its bytes are valid until the next
 * chunk is read, so a scanner copies what it keeps across chunks. (A new 1 MiB buffer per read is a new memory
 * mapping and its page faults each time under bin's MALLOC_MMAP_THRESHOLD_: a re-read of a 100 MB dump took
 * 200 ms instead of 120.)
 */
async function* chunks(file: string): AsyncGenerator<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.allocUnsafeSlow(CHUNK);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, null);
      if (bytesRead === 0) return;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/**
 * A JSON file whose top level is an object: its `items` array's entries as 'item' pieces, then the object
 * with `"items": []` as the 'header'. Throws SplitError when the file is not of that shape (the caller parses
 * it whole). Nothing is validated here beyond the nesting: each piece is parsed by the caller.
 */
export async function splitJSONList(file: string, onPiece: (p: Piece) => void): Promise<void> {
  const scanner = new JSONListScanner(onPiece);
  for await (const chunk of chunks(file)) scanner.scan(chunk);
  scanner.end();
}

/**
 * Cuts a JSON List, fed chunk by chunk, into its `items` entries ('item' pieces, as each ends) and the rest
 * ('header', at end()): splitJSONList for a file, api-list.ts for a list answer as it streams in. A piece reads
 * the chunk being scanned: take it during onPiece. The state between chunks; scan() keeps it in locals while
 * it runs (the hot loop).
 */
export class JSONListScanner {
  private depth = 0;
  private inString = false;
  private escaped = false;
  private inItems = false;
  private itemsSeen = false;
  /** Whether a ',' was read since the last entry: the next ']' needs an entry before it. */
  private afterComma = false;
  private readonly header: Buffer[] = [];
  private item: Buffer[] | null = null;
  private readonly onPiece: (p: Piece) => void;

  constructor(onPiece: (p: Piece) => void) {
    this.onPiece = onPiece;
  }

  scan(chunk: Buffer): void {
    let { depth, inString, escaped, inItems } = this;
    // [from, i) is the run of bytes not yet copied to where they belong (the header, or the open entry).
    let from = 0;
    const n = chunk.length;
    for (let i = 0; i < n; i++) {
      if (inString) {
        // The quote that ends the string: one not preceded by an odd run of backslashes. Short strings (most)
        // are looked through here, longer ones hopped over with indexOf (a byte loop over a 100 MB dump
        // takes twice as long; an indexOf call per short string, a third longer).
        if (escaped) {
          escaped = false;
          i++;
        }
        let j = i;
        const near = Math.min(n, i + 24);
        while (j < near && chunk[j] !== QUOTE && chunk[j] !== BACKSLASH) j++;
        if (j < near && chunk[j] === QUOTE) {
          inString = false;
          i = j;
          continue;
        }
        let q = chunk.indexOf(QUOTE, i);
        while (q >= 0 && backslashesBefore(chunk, i, q) % 2 === 1) q = chunk.indexOf(QUOTE, q + 1);
        if (q < 0) {
          escaped = backslashesBefore(chunk, i, n) % 2 === 1;
          break;
        }
        inString = false;
        i = q;
        continue;
      }
      const c = chunk[i]!;
      if (c === 0x20 || c === 0x0a) {
        if (inItems && depth === 1 && this.item === null) from = i + 1;
        continue;
      }
      if (depth === 0 && !isSpace(c) && c !== 0x7b /* { */) throw new SplitError('not a JSON object');
      if (inItems && depth === 1) {
        // Between entries of items: entries open at their first byte and close at ',' or ']'.
        if (c === 0x2c /* , */ || c === 0x5d /* ] */) {
          if (i > from && this.item !== null) this.item.push(chunk.subarray(from, i));
          // `[]` has no entry; `[,` and `,]` are errors
          if (this.item !== null || c === 0x2c || this.afterComma) this.emitItem();
          this.afterComma = c === 0x2c;
          from = i + 1;
          if (c === 0x5d) inItems = false;
          continue;
        }
        if (this.item === null) {
          if (isSpace(c)) {
            from = i + 1;
            continue;
          }
          this.item = [];
          from = i;
          const close = c === 0x7b ? closingLine(chunk, i) : -1;
          if (close >= 0) {
            // The entry is skipped to its closing brace without looking at its bytes; depth stays at items.
            i = close;
            continue;
          }
        }
      }
      if (c === QUOTE) inString = true;
      else if (c === 0x7b || c === 0x5b /* [ */) {
        depth++;
        if (depth === 2 && c === 0x5b && !inItems && !this.itemsSeen && /"items"\s*:\s*$/.test(tail(this.header, chunk.subarray(from, i)))) {
          // The top level's items array: its entries become pieces; the header gets an empty array.
          if (i > from) this.header.push(Buffer.from(chunk.subarray(from, i)));
          this.header.push(Buffer.from('[]'));
          inItems = true;
          this.itemsSeen = true;
          depth = 1; // counted from the array's inside, as for the top level
          from = i + 1;
        }
      } else if (c === 0x7d || c === 0x5d) {
        depth--;
        if (depth < 0 || (inItems && depth === 0)) throw new SplitError('unbalanced brackets');
      }
    }
    // Copied: the next chunk is read into the same buffer (chunks).
    if (n > from) (inItems ? this.item : this.header)?.push(Buffer.from(chunk.subarray(from, n)));
    Object.assign(this, { depth, inString, escaped, inItems });
  }

  private emitItem(): void {
    const item = this.item;
    if (item === null) throw new SplitError('an empty entry in items');
    this.item = null;
    // Most entries lie in one chunk: decoded from it, without first copying them into a Buffer of their own.
    const text = () => (item.length === 1 ? item[0]!.toString('utf8') : Buffer.concat(item).toString('utf8'));
    this.onPiece({ digest: digestOf(item), text, role: 'item', doc: 0 });
  }

  end(): void {
    if (this.inItems || this.inString) throw new SplitError('the file ends inside the List');
    // A List with no entries, or a file without a List, is just its header.
    const text = Buffer.concat(this.header).toString('utf8');
    this.onPiece(textPiece(text, 'header', 0));
  }
}

/**
 * The index of the brace that closes the entry opening at chunk[open], when the file is pretty-printed (as
 * kubectl prints it): the entry's `{` is the first thing on its line, and the entry ends at the first later
 * line holding only that much indentation and `}`. A raw line break cannot occur inside a JSON string, so
 * every line starts outside one, and with consistent indentation no deeper line starts at the entry's
 * column. -1 when the entry's line does not start in this chunk, or its end is not in it: the byte scan
 * handles it. Nothing is trusted blindly: a wrong cut leaves a piece JSON.parse rejects (an unbalanced
 * object, or a raw line break in a string), and the caller then parses the file whole. The search hops from
 * `}` to `}` (a native byte search) instead of looking at every byte: a 100 MB dump is cut in a few tens of
 * milliseconds instead of about 300.
 */
function closingLine(chunk: Buffer, open: number): number {
  let k = open - 1;
  while (k >= 0 && chunk[k] === 0x20) k--;
  if (k < 0 || chunk[k] !== 0x0a) return -1;
  // ... and the last thing on it (an entry written on one line is left to the byte scan).
  let e = open + 1;
  while (e < chunk.length && (chunk[e] === 0x20 || chunk[e] === 0x0d)) e++;
  if (chunk[e] !== 0x0a) return -1;
  const indent = open - k - 1;
  for (let b = chunk.indexOf(0x7d, open + 1); b >= 0; b = chunk.indexOf(0x7d, b + 1)) {
    const lineStart = b - indent - 1;
    if (lineStart <= open || chunk[lineStart] !== 0x0a) continue;
    let spaces = 0;
    while (spaces < indent && chunk[lineStart + 1 + spaces] === 0x20) spaces++;
    if (spaces === indent) return b;
  }
  return -1;
}

/** How many backslashes end chunk[from, to). */
function backslashesBefore(chunk: Buffer, from: number, to: number): number {
  let k = to;
  while (k > from && chunk[k - 1] === BACKSLASH) k--;
  return to - k;
}

/** The last characters of the header so far (where an `"items":` key would end). */
function tail(header: readonly Buffer[], pending: Buffer): string {
  const parts: Buffer[] = [pending];
  let n = pending.length;
  for (let k = header.length - 1; k >= 0 && n < 64; k--) {
    parts.unshift(header[k]!);
    n += header[k]!.length;
  }
  const b = Buffer.concat(parts);
  return b.subarray(Math.max(0, b.length - 64)).toString('latin1');
}

const SPACE = 0x20;
const NEWLINE = 0x0a;
const CR = 0x0d;
const TAB = 0x09;
const HASH = 0x23;
const DASH = 0x2d;
const DOT = 0x2e;
const ITEMS_KEY = /^items:[ \t]*(#.*)?$/;
const ITEMS_EMPTY = Buffer.from('items: []\n');
const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** Whether b is a byte of what YAML calls white space (space, tab). */
const isWhite = (b: number) => b === SPACE || b === TAB;

/**
 * Whether buf[from, to) is white space only: a blank line to YAML. Other spaces (Unicode's, form feeds) are
 * content to YAML, and to the splitter: a line of them is not skipped as blank, and the YAML parser says
 * what it makes of them.
 */
function isBlankText(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (!isWhite(buf[i]!)) return false;
  return true;
}

/** `---` or `...` at buf[from], then white space or the end of the line: a document marker (as js-yaml reads one). */
function isDocMarker(buf: Buffer, from: number, to: number): boolean {
  const c = buf[from];
  if (to - from < 3 || buf[from + 1] !== c || buf[from + 2] !== c) return false;
  return to - from === 3 || isWhite(buf[from + 3]!) || buf[from + 3] === CR;
}

/** A piece's text from its bytes. The YAML reader reads lines without the CR of a CRLF, as the splitter's lines are. */
function decodeLines(parts: readonly Buffer[]): string {
  const text = parts.length === 1 ? parts[0]!.toString('utf8') : Buffer.concat(parts).toString('utf8');
  return text.includes('\r') ? text.replaceAll('\r\n', '\n') : text;
}

/**
 * The bytes of one piece being gathered, whole lines with their line breaks: copies of what earlier chunks held
 * (parts), then a run [from, to) of the chunk being scanned, copied only when that chunk is about to be
 * replaced (flush). A piece inside one chunk (most) is hashed and decoded straight from the chunk's bytes.
 */
class LineBytes {
  private parts: Buffer[] = [];
  private from = -1;
  private to = -1;

  /** Adds the line buf[from, to). */
  add(buf: Buffer, from: number, to: number): void {
    if (this.from >= 0 && from === this.to) {
      this.to = to;
      return;
    }
    this.flush(buf);
    this.from = from;
    this.to = to;
  }

  /** Adds bytes of their own, which replaceLast can take back. */
  addOwn(buf: Buffer, bytes: Buffer): void {
    this.flush(buf);
    this.parts.push(bytes);
  }

  /** Replaces what addOwn added last (nothing was added since). */
  replaceLast(bytes: Buffer): void {
    this.parts[this.parts.length - 1] = bytes;
  }

  /** Copies the open run: the chunk it lies in is about to be replaced. */
  flush(buf: Buffer): void {
    if (this.from < 0) return;
    this.parts.push(Buffer.from(buf.subarray(this.from, this.to)));
    this.from = -1;
  }

  /** The piece of the lines gathered (valid during the onPiece call: it may read buf); the lines are emptied. */
  take(buf: Buffer, role: Piece['role'], doc: number): Piece {
    const parts = this.from >= 0 ? [...this.parts, buf.subarray(this.from, this.to)] : this.parts;
    this.parts = [];
    this.from = -1;
    return { digest: digestOf(parts), text: () => decodeLines(parts), role, doc };
  }
}

/**
 * A YAML stream: each document as a 'whole' piece, except a document whose top level has a block `items:`
 * sequence, whose entries become 'item' pieces (each a one-entry sequence, as indented in the file) and whose
 * remaining lines, with `items: []`, the 'header'. Line by line on the file's bytes, from chunks: the file's
 * text is never held whole, and a piece is decoded only when its text is asked for (a re-read hashes the
 * bytes of unchanged pieces and decodes nothing else). A line costs a look at its indentation and first
 * characters and a native search for its end: the reader (yaml-block.ts) reads the rest.
 */
export async function splitYAML(file: string, onPiece: (p: Piece) => void): Promise<void> {
  const splitter = new YAMLSplitter(onPiece);
  /** The start of a line the last chunk ended in, copied. */
  let pending: Buffer | null = null;
  let first = true;
  for await (let chunk of chunks(file)) {
    // The BOM is not part of the text (as TextDecoder reads it).
    if (first && chunk.subarray(0, 3).equals(UTF8_BOM)) chunk = chunk.subarray(3);
    first = false;
    let from = 0;
    if (pending !== null) {
      const nl = chunk.indexOf(NEWLINE);
      if (nl < 0) {
        pending = Buffer.concat([pending, chunk]);
        continue;
      }
      // The line over the two chunks, on its own.
      const line = Buffer.concat([pending, chunk.subarray(0, nl + 1)]);
      splitter.scan(line, false);
      splitter.flush(line);
      from = nl + 1;
    }
    const body = chunk.subarray(from);
    const rest = splitter.scan(body, false);
    splitter.flush(body);
    pending = rest < body.length ? Buffer.from(body.subarray(rest)) : null;
  }
  const last = pending ?? Buffer.alloc(0);
  splitter.scan(last, true);
  splitter.end(last);
}

/** The state of splitYAML between lines and chunks. */
class YAMLSplitter {
  private readonly onPiece: (p: Piece) => void;
  private doc = 0;
  private readonly header = new LineBytes();
  /** Whether the header has a character other than whitespace (else the document is empty, and not a piece). */
  private headerText = false;
  private entry: LineBytes | null = null;
  /** The block items sequence being read: the indentation of its dashes; -1 outside one. */
  private itemsIndent = -1;
  /** The line before was the top-level `items:` key (blank lines aside). */
  private afterItemsKey = false;
  /** This document's items have been split off: its header is a List with `items: []`. */
  private isList = false;

  constructor(onPiece: (p: Piece) => void) {
    this.onPiece = onPiece;
  }

  /**
   * Reads the whole lines of buf; returns where the unfinished last line starts (buf.length when there is none).
   * last: buf ends the file, and its last line needs no line break.
   */
  scan(buf: Buffer, last: boolean): number {
    const n = buf.length;
    let start = 0;
    while (start < n) {
      const nl = buf.indexOf(NEWLINE, start);
      if (nl < 0) {
        if (!last) return start;
        this.line(buf, start, n, n);
        return n;
      }
      if (this.continues(buf, start)) (this.entry ?? this.header).add(buf, start, nl + 1);
      else this.line(buf, start, nl > start && buf[nl - 1] === CR ? nl - 1 : nl, nl + 1);
      start = nl + 1;
    }
    return n;
  }

  /** Copies what the pieces being gathered hold of buf: the next chunk replaces it. */
  flush(buf: Buffer): void {
    this.header.flush(buf);
    this.entry?.flush(buf);
  }

  end(buf: Buffer): void {
    this.endDoc(buf);
  }

  private emitEntry(buf: Buffer): void {
    if (this.entry === null) return;
    this.onPiece(this.entry.take(buf, 'item', this.doc));
    this.entry = null;
  }

  private endDoc(buf: Buffer): void {
    this.emitEntry(buf);
    const piece = this.header.take(buf, this.isList ? 'header' : 'whole', this.doc);
    if (this.isList || this.headerText) this.onPiece(piece);
    this.headerText = false;
    this.itemsIndent = -1;
    this.afterItemsKey = false;
    this.isList = false;
    this.doc++;
  }

  private toHeader(buf: Buffer, from: number, next: number, text: boolean): void {
    this.header.add(buf, from, next);
    if (text) this.headerText = true;
  }

  /**
   * Whether the line at buf[from] goes where the line before went, whatever else it holds (most lines: those
   * inside a List entry or a document's top-level node), which line() would say after a longer look.
   */
  private continues(buf: Buffer, from: number): boolean {
    if (this.afterItemsKey) return false;
    // Inside the entries: more indented than their dashes.
    if (this.itemsIndent >= 0) {
      for (let i = from, last = from + this.itemsIndent; i <= last; i++) if (buf[i] !== SPACE) return false;
      return true;
    }
    // Outside them, indented: neither a document marker nor a top-level `items:` key.
    return this.headerText && buf[from] === SPACE;
  }

  /** The line buf[from, to) (without its line break), whose next line starts at next. */
  private line(buf: Buffer, from: number, to: number, next: number): void {
    const c0 = from < to ? buf[from]! : -1;
    if ((c0 === DASH || c0 === DOT) && isDocMarker(buf, from, to)) {
      this.endDoc(buf);
      if (c0 === DASH) this.toHeader(buf, from, next, true);
      return;
    }
    let k = from;
    while (k < to && buf[k] === SPACE) k++;
    const indent = k - from;
    const first = k < to ? buf[k]! : -1;
    // Tabs are rare: only lines that start with one are looked at further.
    const noText = first === -1 || (first === TAB && isBlankText(buf, k, to));
    const blank = noText || first === HASH;
    /** `-` then a space or the end of the line: a block sequence entry. */
    const isEntry = first === DASH && (k + 1 === to || buf[k + 1] === SPACE);
    if (this.afterItemsKey) {
      if (blank) return;
      this.afterItemsKey = false; // `items:` with a nested mapping or a flow value on the next line: no split
      if (isEntry) {
        // The entries' dash column decides what belongs to them.
        this.itemsIndent = indent;
        this.isList = true;
        this.header.replaceLast(ITEMS_EMPTY);
      }
    }
    if (this.itemsIndent >= 0) {
      if (indent === this.itemsIndent && isEntry) {
        this.emitEntry(buf);
        this.entry = new LineBytes();
        this.entry.add(buf, from, next);
        return;
      }
      if (blank || indent > this.itemsIndent) {
        this.entry!.add(buf, from, next);
        return;
      }
      // A line back at the dashes' column or left of it: the sequence is over.
      this.emitEntry(buf);
      this.itemsIndent = -1;
    }
    if (!this.isList && c0 === 0x69 /* i */ && ITEMS_KEY.test(buf.toString('utf8', from, to))) {
      // Its own bytes: replaced by `items: []` when entries follow.
      this.header.addOwn(buf, Buffer.from(buf.subarray(from, next)));
      this.headerText = true;
      this.afterItemsKey = true;
      return;
    }
    this.toHeader(buf, from, next, !noText);
  }
}
