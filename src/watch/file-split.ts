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

/** The state of splitJSONList between chunks; scan() keeps it in locals while it runs (the hot loop). */
class JSONListScanner {
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
    this.onPiece({ digest: digestOf(item), text: () => Buffer.concat(item).toString('utf8'), role: 'item', doc: 0 });
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

const DOC_MARKER = /^(---|\.\.\.)(?=\s|$)/;
const ITEMS_KEY = /^items:[ \t]*(#.*)?$/;
const NOT_ASCII = /[^\x00-\x7f]/;

/**
 * The text lines are read from: a chunk decoded, after the end of the chunk before's last line. When the
 * chunk is ASCII, text[offset + i] is the character of bytes[i].
 */
interface LineSource {
  text: string;
  bytes: Buffer | null;
  offset: number;
}

/**
 * The lines of a piece, kept as runs of the text they were read from: one string per run instead of one per
 * line (a 55 MB dump has 2.5 million lines). A run ends where the text is replaced (the next chunk), at a
 * line whose CR was left out, and where a line is left out or replaced; the runs are joined by line breaks.
 * A run of an ASCII chunk is decoded from its bytes: a string of its own, which V8 reads faster than a slice
 * of the chunk's text (about a fifth, for the YAML reader), and which does not keep the chunk alive.
 */
class LineRuns {
  private parts: string[] = [];
  /** The open run: text[from, to), or none (from -1). */
  private from = -1;
  private to = -1;

  /** Adds the line text[from, to). */
  add(src: LineSource, from: number, to: number): void {
    if (this.from >= 0 && from === this.to + 1) {
      this.to = to;
      return;
    }
    this.flush(src);
    this.from = from;
    this.to = to;
  }

  /** Closes the open run (before the text it indexes is replaced). */
  flush(src: LineSource): void {
    if (this.from < 0) return;
    const { text, bytes, offset } = src;
    this.parts.push(bytes !== null && this.from >= offset ? bytes.toString('latin1', this.from - offset, this.to - offset) : text.slice(this.from, this.to));
    this.from = -1;
  }

  /** Replaces the last line added. */
  replaceLast(src: LineSource, line: string): void {
    this.flush(src);
    const last = this.parts.pop() ?? '';
    const nl = last.lastIndexOf('\n');
    this.parts.push(nl < 0 ? line : last.slice(0, nl + 1) + line);
  }

  /** The lines, joined by line breaks; the runs are emptied. */
  take(src: LineSource): string {
    this.flush(src);
    const joined = this.parts.length === 1 ? this.parts[0]! : this.parts.join('\n');
    this.parts = [];
    return joined;
  }
}

/**
 * A YAML stream: each document as a 'whole' piece, except a document whose top level has a block `items:`
 * sequence, whose entries become 'item' pieces (each a one-entry sequence, as indented in the file) and whose
 * remaining lines, with `items: []`, the 'header'. Line by line, from chunks: the file's text is never held
 * whole.
 */
export async function splitYAML(file: string, onPiece: (p: Piece) => void): Promise<void> {
  let doc = 0;
  const src: LineSource = { text: '', bytes: null, offset: 0 };
  let text = '';
  const header = new LineRuns();
  let entry: LineRuns | null = null;
  /** The block items sequence being read: the indentation of its dashes; -1 outside one. */
  let itemsIndent = -1;
  /** The line before was the top-level `items:` key (blank lines aside). */
  let afterItemsKey = false;
  /** This document's items have been split off: its header is a List with `items: []`. */
  let isList = false;
  const emitEntry = () => {
    if (entry === null) return;
    onPiece(textPiece(entry.take(src), 'item', doc));
    entry = null;
  };
  const endDoc = () => {
    emitEntry();
    const joined = header.take(src);
    if (isList || joined.trim() !== '') onPiece(textPiece(joined, isList ? 'header' : 'whole', doc));
    itemsIndent = -1;
    afterItemsKey = false;
    isList = false;
    doc++;
  };
  /** The line text[from, to). */
  const line = (from: number, to: number) => {
    const c0 = text.charCodeAt(from);
    if ((c0 === 0x2d /* - */ || c0 === 0x2e) /* . */ && DOC_MARKER.test(text.slice(from, Math.min(to, from + 4)))) {
      endDoc();
      if (c0 === 0x2d) header.add(src, from, to);
      return;
    }
    let k = from;
    while (k < to && text.charCodeAt(k) === 0x20) k++;
    const indent = k - from;
    const first = text.charCodeAt(k);
    // Whitespace other than spaces is rare: the regular expression only looks at lines that start with some.
    const blank = k === to || first === 0x23 /* # */ || ((first <= 0x20 || first >= 0x80) && /^\s*$/.test(text.slice(k, to)));
    /** `-` then a space or the end of the line: a block sequence entry. */
    const isEntry = first === 0x2d && (k + 1 === to || text.charCodeAt(k + 1) === 0x20);
    if (afterItemsKey) {
      if (blank) return;
      afterItemsKey = false; // `items:` with a nested mapping or a flow value on the next line: no split
      if (isEntry) {
        // The entries' dash column decides what belongs to them.
        itemsIndent = indent;
        isList = true;
        header.replaceLast(src, 'items: []');
      }
    }
    if (itemsIndent >= 0) {
      if (indent === itemsIndent && isEntry) {
        emitEntry();
        entry = new LineRuns();
        entry.add(src, from, to);
        return;
      }
      if (blank || indent > itemsIndent) {
        entry?.add(src, from, to);
        return;
      }
      // A line back at the dashes' column or left of it: the sequence is over.
      emitEntry();
      itemsIndent = -1;
    }
    header.add(src, from, to);
    if (!isList && c0 === 0x69 /* i */ && ITEMS_KEY.test(text.slice(from, to))) afterItemsKey = true;
  };
  const decoder = new TextDecoder('utf8');
  let pending = '';
  for await (const chunk of chunks(file)) {
    const decoded = decoder.decode(chunk, { stream: true });
    text = pending + decoded;
    src.text = text;
    src.offset = pending.length;
    src.bytes = decoded.length === chunk.length && !NOT_ASCII.test(decoded) ? chunk : null;
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      line(start, nl > start && text.charCodeAt(nl - 1) === 0x0d ? nl - 1 : nl);
      start = nl + 1;
    }
    pending = text.slice(start);
    // The runs index this text, which the next chunk replaces.
    header.flush(src);
    (entry as LineRuns | null)?.flush(src);
  }
  text = pending + decoder.decode();
  Object.assign(src, { text, bytes: null, offset: 0 });
  if (text !== '') line(0, text.length);
  endDoc();
}
