// A fast reader for the YAML that kubectl writes (`kubectl get -o yaml`: go-yaml through sigs.k8s.io/yaml)
// and js-yaml's dump writes: block mappings and sequences laid out by indentation, one-line plain and quoted
// scalars, literal and folded block scalars, the empty flow collections `{}` and `[]`, comments. It reads a
// piece of the file (file-split.ts) about twice as fast as js-yaml's general parser, and its strings need no
// copy afterwards. It is only ever tried first: anything it does not know (anchors, aliases, tags, flow
// collections with content, scalars over several lines, complex keys, tabs, duplicate keys, directives, an
// empty text ...) makes it answer NOT_HANDLED, and the caller parses the text with js-yaml, which reads it
// (or says where it is wrong) as it always did. What it does read, it reads exactly as js-yaml's
// `load(text, { json: true })` does: scalars are typed by js-yaml's own default (core) schema tags, and
// test/unit/yaml-block.test.ts compares the two on many texts. Every string it returns is a copy, not a view
// into the text (see fresh), so the objects read from a piece never keep the piece's text alive.
import { CORE_SCHEMA, NOT_RESOLVED, type ScalarTagDefinition } from 'js-yaml';

export const NOT_HANDLED: unique symbol = Symbol('not handled');

/** Thrown inside the reader when the text is outside what it reads; caught at the top (never escapes). */
const BAIL: unique symbol = Symbol('bail');

/**
 * Characters the reader leaves to js-yaml: tabs (YAML's whitespace rules for them differ by position), CR
 * (the splitter already strips it before LF), characters YAML does not allow in a stream, line and
 * paragraph separators, the BOM, and surrogates (a lone one is an error; pairs are rare enough to leave).
 */
const UNHANDLED_CHARS = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]/;

/**
 * Whether a character inside a line (never a line break) is one of UNHANDLED_CHARS. The reader looks at every
 * character of keys, scalars and indentation as it reads them, and checks each then (a look at a character
 * code, where a pass of the regular expression over the whole text took a twentieth of the reading); what it
 * does not look at (comments, block scalars' lines) it tests with UNHANDLED_CHARS.
 */
function isUnhandled(c: number): boolean {
  return c < 0x20 || (c >= 0x7f && (c <= 0x9f || c === 0x2028 || c === 0x2029 || (c >= 0xd800 && c <= 0xdfff) || c === 0xfeff || c >= 0xfffe));
}

/** Deeper nesting than this is left to js-yaml (the reader recurses; Kubernetes objects nest about ten deep). */
const MAX_DEPTH = 64;

// The implicit scalar tags of js-yaml's default schema, dispatched by first character as js-yaml does
// (Schema.resolveImplicitScalarTag): a plain scalar is typed by the first tag that resolves it, else a string.
const implicitTags = CORE_SCHEMA.tags.filter((t): t is ScalarTagDefinition => t.nodeKind === 'scalar' && t.implicit);
const anyFirstChar = implicitTags.filter((t) => t.implicitFirstChars === null);
const byFirstChar = new Map<string, ScalarTagDefinition[]>();
for (const t of implicitTags) {
  for (const c of t.implicitFirstChars ?? [])
    byFirstChar.set(
      c,
      implicitTags.filter((u) => u.implicitFirstChars === null || u.implicitFirstChars.includes(c)),
    );
}
/** byFirstChar by ASCII code, to spare a Map lookup per scalar. */
const byASCII = Array.from({ length: 128 }, (_, c) => byFirstChar.get(String.fromCharCode(c)) ?? anyFirstChar);

/** A plain scalar's value as js-yaml's default schema types it (null, a boolean, a number), or NOT_RESOLVED: a string. */
function typed(raw: string): unknown {
  const c = raw.charCodeAt(0);
  const tags = c < 128 ? byASCII[c]! : (byFirstChar.get(raw.charAt(0)) ?? anyFirstChar);
  for (const t of tags) {
    const v: unknown = t.resolve(raw, false, t.tagName);
    if (v !== NOT_RESOLVED) return v;
  }
  return NOT_RESOLVED;
}

/**
 * A copy of a string cut from the text. V8 makes a cut of 13 characters or more a view that keeps the whole
 * text alive (a shorter one is copied); flattening a concatenation makes a new string. Concatenations (block
 * and escaped scalars) are flattened the same way.
 */
function fresh(s: string): string {
  return s.length < 13 ? s : (' ' + s).slice(1);
}

const CACHE_SLOTS = 4096;
const CACHE_MAX_LENGTH = 64;

/**
 * Scalars read recently, by their text, so that the objects read share one string per repeated value, as
 * JSON.parse's do: a dump repeats many values (kinds, API versions, protocols, namespaces, node names,
 * timestamps), and one string each instead of one per object is megabytes less held at 10,000 services. A
 * hit costs a hash of the text and a comparison; a miss, the copy it would cost anyway. One slot per hash,
 * short texts only: at most CACHE_SLOTS strings of CACHE_MAX_LENGTH characters are held between reads.
 */
class ScalarCache {
  private readonly hashes = new Int32Array(CACHE_SLOTS);
  private readonly texts: string[] = new Array<string>(CACHE_SLOTS).fill('');
  private readonly values: unknown[] = new Array<unknown>(CACHE_SLOTS).fill(undefined);
  /** The value of a scalar's text (a copy: see fresh). */
  private readonly make: (text: string) => unknown;

  constructor(make: (text: string) => unknown) {
    this.make = make;
  }

  /** The value of the scalar whose text is s[from, to). */
  get(s: string, from: number, to: number): unknown {
    const length = to - from;
    if (length > CACHE_MAX_LENGTH) return this.make(fresh(s.slice(from, to)));
    // A hash of a few characters, the last ones (where names, addresses and uids differ) among them: a
    // collision costs a miss, never a wrong value (the text is compared).
    let h = length;
    if (length > 0) {
      h = Math.imul(h, 31) + s.charCodeAt(from);
      h = Math.imul(h, 31) + s.charCodeAt(from + (length >> 1));
      h = Math.imul(h, 31) + s.charCodeAt(Math.max(from, to - 3));
      h = Math.imul(h, 31) + s.charCodeAt(Math.max(from, to - 2));
      h = Math.imul(h, 31) + s.charCodeAt(to - 1);
      h ^= h >>> 13;
    }
    const slot = h & (CACHE_SLOTS - 1);
    // The hashes first: a miss never loads the string it would compare with (a load from anywhere in the heap).
    if (this.hashes[slot] === h) {
      const cached = this.texts[slot]!;
      let k = 0;
      while (k < length && cached.charCodeAt(k) === s.charCodeAt(from + k)) k++;
      if (k === length && cached.length === length && (length > 0 || this.values[slot] !== undefined)) return this.values[slot];
    }
    const text = fresh(s.slice(from, to));
    const value = this.make(text);
    this.hashes[slot] = h;
    this.texts[slot] = text;
    this.values[slot] = value;
    return value;
  }
}

/** Plain scalars: typed (null, booleans, numbers) or strings. */
const plainScalars = new ScalarCache((text) => {
  const v = typed(text);
  return v === NOT_RESOLVED ? text : v;
});
/** Plain keys: property names (a typed key is named by its value's string, as js-yaml names it). */
const keys = new ScalarCache((text) => {
  const v = typed(text);
  return v === NOT_RESOLVED ? text : String(v);
});
/** Quoted scalars without escapes: strings. */
const quotedScalars = new ScalarCache((text) => text);

const SPACE = 0x20;
const HASH = 0x23;
const DASH = 0x2d;
const COLON = 0x3a;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const BACKSLASH = 0x5c;

/** First characters of a node this reader leaves to js-yaml (anchors, aliases, tags, flow content, reserved, complex keys). */
const INDICATORS = new Set([...'&*!%@`?:,[]{}#|>'].map((c) => c.charCodeAt(0)));

/** The characters of the one-character escapes of double-quoted scalars (YAML 1.2, 5.7). */
const ESCAPES: Record<string, string> = {
  '0': '\0',
  a: '\x07',
  b: '\b',
  t: '\t',
  n: '\n',
  v: '\v',
  f: '\f',
  r: '\r',
  e: '\x1b',
  ' ': ' ',
  '"': '"',
  '/': '/',
  '\\': '\\',
  N: '\x85',
  _: '\xa0',
  L: '\u2028',
  P: '\u2029',
};
const HEX_ESCAPES: Record<string, number> = { x: 2, u: 4, U: 8 };
const HEX = /^[0-9a-fA-F]+$/;

/**
 * The value of one YAML document's text, as js-yaml's `load(text, { json: true })` returns it, or NOT_HANDLED
 * when the text is outside what this reader reads (then js-yaml must read it: it may be valid or not).
 */
export function readBlockYAML(text: string): unknown {
  try {
    return new BlockReader(text).document();
  } catch (e) {
    if (e === BAIL) return NOT_HANDLED;
    throw e;
  }
}

/**
 * The reader stands on one content line at a time (blank and comment-only lines are skipped, except inside
 * block scalars): [start, end) is the line, indent its leading spaces. Each parse method is called on the
 * line where its node starts and returns with the reader on the first content line after the node.
 */
class BlockReader {
  private readonly s: string;
  private start = 0;
  private end = -1;
  private indent = 0;
  private eof = false;
  private depth = 0;
  /**
   * The entries of the sequences being read, the inner ones above the outer ones: each sequence is copied out
   * at its end, at exactly its length (an array pushed to leaves room for 16 more entries, which the objects
   * kept would hold: 100,000 endpoints' one-address lists), and no array is made per sequence to push to.
   */
  private readonly entries: unknown[] = [];
  /** The end of the entries in use (those above it are stale: the stack is never shrunk, only written over). */
  private top = 0;

  constructor(text: string) {
    this.s = text;
  }

  document(): unknown {
    // The one document marker read: `---` (with at most a comment) on the first line; a text that is
    // nothing but comments would be skipped to its end.
    let marked = false;
    const s = this.s;
    if (s.startsWith('---') && (s.length === 3 || s.charCodeAt(3) === 0x0a || s.charCodeAt(3) === SPACE)) {
      this.end = s.indexOf('\n');
      if (this.end < 0) this.end = s.length;
      if (!this.restIsEmpty(3)) throw BAIL;
      marked = true;
    }
    this.advance();
    if (this.eof) {
      // js-yaml: an empty text is an error, `---` alone a null document.
      if (!marked) throw BAIL;
      return null;
    }
    const value = this.block(-1);
    if (!this.eof) throw BAIL; // a dedent below the root node, or a second document
    return value;
  }

  /** Moves to the next content line (or to the end). */
  private advance(): void {
    const s = this.s;
    const n = s.length;
    let from = this.end + 1;
    while (from <= n) {
      let end = s.indexOf('\n', from);
      if (end < 0) end = n;
      let i = from;
      while (i < end && s.charCodeAt(i) === SPACE) i++;
      if (i < end && s.charCodeAt(i) === HASH) this.comment(i, end);
      else if (i < end) {
        // Directives and document markers (another document) are left to js-yaml.
        const c = s.charCodeAt(from);
        if (i === from && (c === 0x25 /* % */ || ((c === DASH || c === 0x2e) && /^(---|\.\.\.)( |$)/.test(s.slice(from, from + 4))))) throw BAIL;
        this.start = from;
        this.end = end;
        this.indent = i - from;
        return;
      }
      from = end + 1;
    }
    this.start = this.end = n;
    this.indent = -1;
    this.eof = true;
  }

  /** Whether [i, end of line) holds only spaces and perhaps a comment (which needs a space before it). */
  private restIsEmpty(i: number): boolean {
    const s = this.s;
    const from = i;
    while (i < this.end && s.charCodeAt(i) === SPACE) i++;
    if (i === this.end) return true;
    if (s.charCodeAt(i) !== HASH || i === from) return false;
    this.comment(i, this.end);
    return true;
  }

  /** A comment's text [from, to), which the reader does not read: only checked for what it leaves to js-yaml. */
  private comment(from: number, to: number): void {
    if (UNHANDLED_CHARS.test(this.s.slice(from, to))) throw BAIL;
  }

  /** `-` followed by a space or the end of the line: a block sequence entry at i. */
  private isEntry(i: number): boolean {
    return this.s.charCodeAt(i) === DASH && (i + 1 === this.end || this.s.charCodeAt(i + 1) === SPACE);
  }

  /** The node whose first line is the current one, more indented than its parent (at column `parent`). */
  private block(parent: number): unknown {
    const at = this.start + this.indent;
    if (this.isEntry(at)) return this.sequence(this.indent, at);
    const colon = this.keyColon(at);
    if (colon >= 0) return this.mapping(this.indent, at, colon);
    if (this.s.charCodeAt(at) === 0x7c || this.s.charCodeAt(at) === 0x3e) throw BAIL; // a block scalar on a line of its own
    const value = this.inline(at, parent);
    if (!this.eof && this.indent > parent) throw BAIL; // a scalar continued on the next line
    return value;
  }

  private nest(): void {
    if (++this.depth > MAX_DEPTH) throw BAIL;
  }

  /** A block sequence whose dashes are at column col, the first at index at of the current line. */
  private sequence(col: number, at: number): unknown[] {
    this.nest();
    const base = this.top;
    for (;;) {
      let i = at + 1;
      while (i < this.end && this.s.charCodeAt(i) === SPACE) i++;
      let entry: unknown;
      if (i === this.end || this.s.charCodeAt(i) === HASH) {
        if (i < this.end) this.comment(i, this.end);
        // The entry's node starts on the next line (or it is null).
        this.advance();
        entry = !this.eof && this.indent > col ? this.block(col) : null;
      } else if (this.isEntry(i)) {
        entry = this.sequence(i - this.start, i); // `- - x`: a sequence in a sequence
      } else {
        const colon = this.keyColon(i);
        // `- name: x`: the mapping's keys are at the column of `name`
        entry = colon >= 0 ? this.mapping(i - this.start, i, colon) : this.inline(i, col);
      }
      // Stored once the entry is read: the sequences inside it have used the stack above top, and are done.
      this.entries[this.top++] = entry;
      if (this.eof || this.indent < col) break;
      if (this.indent > col) throw BAIL;
      at = this.start + col;
      // A line at the dashes' column that is not an entry: a key of the mapping this sequence is a value of.
      if (!this.isEntry(at)) break;
    }
    this.depth--;
    const sequence = this.entries.slice(base, this.top);
    this.top = base;
    return sequence;
  }

  /** A block mapping whose keys are at column col, the first at index at of the current line, its `:` at colon. */
  private mapping(col: number, at: number, colon: number): Record<string, unknown> {
    this.nest();
    const out: Record<string, unknown> = {};
    for (;;) {
      const key = this.key(at, colon);
      // js-yaml defines `__proto__` as an own property, and (with json: true) lets a later duplicate win.
      if (key === '__proto__' || Object.hasOwn(out, key)) throw BAIL;
      out[key] = this.value(col, colon + 1);
      if (this.eof || this.indent < col) break;
      if (this.indent > col) throw BAIL;
      at = this.start + col;
      colon = this.keyColon(at);
      if (colon < 0) throw BAIL; // not a key: a scalar over several lines, or an error
    }
    this.depth--;
    return out;
  }

  /** The value of the key (of a mapping at column col) whose `:` ends just before index i. */
  private value(col: number, i: number): unknown {
    if (this.restIsEmpty(i)) {
      this.advance();
      if (this.eof || this.indent < col) return null;
      if (this.indent > col) return this.block(col);
      // go-yaml writes a sequence under a key at the key's own column (`ports:\n- name: x`).
      const at = this.start + col;
      return this.isEntry(at) ? this.sequence(col, at) : null;
    }
    while (this.s.charCodeAt(i) === SPACE) i++;
    return this.inline(i, col);
  }

  /**
   * The index of the `:` that ends the key starting at index at of the current line, or -1 when the line is
   * not a `key: value` line. A plain key ends at the first `:` followed by a space or the end of the line.
   */
  private keyColon(at: number): number {
    const s = this.s;
    const c = s.charCodeAt(at);
    let colon: number;
    if (c === DQUOTE || c === SQUOTE) {
      const close = this.closingQuote(at);
      if (close < 0) return -1;
      colon = close + 1;
      if (s.charCodeAt(colon) !== COLON) return -1;
    } else {
      // The first `: ` (or `:` at the end of the line), unless a comment (` #`) comes first.
      for (colon = at; colon < this.end; colon++) {
        const c = s.charCodeAt(colon);
        if (c === COLON && (colon + 1 === this.end || s.charCodeAt(colon + 1) === SPACE)) break;
        if (c === HASH && s.charCodeAt(colon - 1) === SPACE) return -1;
        if ((c < SPACE || c >= 0x7f) && isUnhandled(c)) throw BAIL;
      }
      if (colon === this.end) return -1;
    }
    return colon + 1 === this.end || s.charCodeAt(colon + 1) === SPACE ? colon : -1;
  }

  /** The key text [at, colon): a quoted key's string, or a plain key's value as js-yaml makes it a property name. */
  private key(at: number, colon: number): string {
    const s = this.s;
    const c = s.charCodeAt(at);
    if (c === DQUOTE) return this.doubleQuoted(at, colon - 1);
    if (c === SQUOTE) return this.singleQuoted(at, colon - 1);
    // `-x:` is a plain key, `- x:` an entry where a key should be (an error), `-:` left to js-yaml.
    if (INDICATORS.has(c) || (c === DASH && (s.charCodeAt(at + 1) === SPACE || at + 1 === colon))) throw BAIL;
    // A key with spaces before its `:` is legal but never written by kubectl.
    if (s.charCodeAt(colon - 1) === SPACE) throw BAIL;
    return keys.get(s, at, colon) as string;
  }

  /** A scalar or empty flow collection starting at index i of the current line; leaves the reader after it. */
  private inline(i: number, col: number): unknown {
    const s = this.s;
    const c = s.charCodeAt(i);
    let value: unknown;
    let after: number;
    if (c === DQUOTE || c === SQUOTE) {
      const close = this.closingQuote(i);
      if (close < 0) throw BAIL; // over several lines
      value = c === DQUOTE ? this.doubleQuoted(i, close) : this.singleQuoted(i, close);
      after = close + 1;
    } else if (c === 0x7c /* | */ || c === 0x3e /* > */) {
      return this.blockScalar(i, col);
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (s.charCodeAt(i + 1) !== c + 2) throw BAIL; // a flow collection with content
      value = c === 0x7b ? {} : [];
      after = i + 2;
    } else if (INDICATORS.has(c) || (c === DASH && (i + 1 === this.end || s.charCodeAt(i + 1) === SPACE))) {
      throw BAIL;
    } else {
      // A plain scalar: to a comment (` #`) or the end of the line, trailing spaces left out.
      let end = i;
      for (; end < this.end; end++) {
        const e = s.charCodeAt(end);
        // `a: b: c` is an error; js-yaml says so.
        if (e === COLON && (end + 1 === this.end || s.charCodeAt(end + 1) === SPACE)) throw BAIL;
        if (e === HASH && s.charCodeAt(end - 1) === SPACE) {
          this.comment(end, this.end);
          break;
        }
        if ((e < SPACE || e >= 0x7f) && isUnhandled(e)) throw BAIL;
      }
      while (s.charCodeAt(end - 1) === SPACE) end--;
      value = plainScalars.get(s, i, end);
      after = this.end;
    }
    if (!this.restIsEmpty(after)) throw BAIL;
    this.advance();
    return value;
  }

  /** The index of the quote closing the quoted scalar opening at index at, on the same line; -1 if none. */
  private closingQuote(at: number): number {
    const s = this.s;
    const q = s.charCodeAt(at);
    for (let i = at + 1; i < this.end; i++) {
      const c = s.charCodeAt(i);
      // An escaped character is looked at by doubleQuoted, which reads only printable ASCII ones.
      if (q === DQUOTE && c === BACKSLASH) i++;
      else if ((c < SPACE || c >= 0x7f) && isUnhandled(c)) throw BAIL;
      else if (c === q) {
        if (q === SQUOTE && s.charCodeAt(i + 1) === SQUOTE) i++;
        else return i;
      }
    }
    return -1;
  }

  /** A double-quoted scalar between the quotes at open and close, its escapes decoded. */
  private doubleQuoted(open: number, close: number): string {
    const s = this.s;
    let i = s.indexOf('\\', open + 1);
    if (i < 0 || i > close) return quotedScalars.get(s, open + 1, close) as string;
    const parts: string[] = [s.slice(open + 1, i)];
    while (i >= 0 && i < close) {
      const e = s.charAt(i + 1);
      let next = i + 2;
      const simple = ESCAPES[e];
      if (simple !== undefined) parts.push(simple);
      else {
        const digits = HEX_ESCAPES[e];
        const hex = digits === undefined ? '' : s.slice(i + 2, i + 2 + digits);
        if (hex.length !== digits || !HEX.test(hex)) throw BAIL; // an escaped line break, or an error
        const code = parseInt(hex, 16);
        if ((code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff) throw BAIL; // surrogates are paired by js-yaml
        parts.push(String.fromCodePoint(code));
        next += digits;
      }
      i = s.indexOf('\\', next);
      parts.push(s.slice(next, i < 0 || i > close ? close : i));
    }
    return parts.join('');
  }

  /** A single-quoted scalar between the quotes at open and close (`''` is a quote). */
  private singleQuoted(open: number, close: number): string {
    const s = this.s;
    const quote = s.indexOf("''", open + 1);
    if (quote < 0 || quote > close) return quotedScalars.get(s, open + 1, close) as string;
    return s
      .slice(open + 1, close)
      .split("''")
      .join("'");
  }

  /**
   * A literal (`|`) or folded (`>`) block scalar whose header is at index at, the value of a node at column
   * col: its lines follow, all indented as the first. Clip and strip chomping (`|`, `|-`); keep (`|+`), an
   * explicit indentation, leading empty lines and, in folded scalars, more-indented lines are left to js-yaml.
   */
  private blockScalar(at: number, col: number): string {
    const s = this.s;
    const folded = s.charCodeAt(at) === 0x3e;
    let i = at + 1;
    const strip = s.charCodeAt(i) === DASH;
    if (strip) i++;
    if (!this.restIsEmpty(i)) throw BAIL;
    const n = s.length;
    const lines: string[] = [];
    let contentIndent = -1;
    /** Empty lines read since the last content line. */
    let empty = 0;
    let from = this.end + 1;
    let lineEnd = this.end;
    while (from <= n) {
      let end = s.indexOf('\n', from);
      if (end < 0) end = n;
      let k = from;
      while (k < end && s.charCodeAt(k) === SPACE) k++;
      const spaces = k - from;
      if (k === end) {
        if (contentIndent < 0 || spaces > contentIndent) throw BAIL; // a leading empty line, or spaces that are content
        empty++;
      } else {
        if (spaces <= col) break; // the next node
        if (contentIndent < 0) contentIndent = spaces;
        else if (spaces < contentIndent || (folded && spaces > contentIndent)) throw BAIL;
        const line = s.slice(from + contentIndent, end);
        if (UNHANDLED_CHARS.test(line)) throw BAIL;
        if (lines.length > 0) {
          if (folded) lines.push(empty === 0 ? ' ' : '\n'.repeat(empty));
          else for (let e = 0; e <= empty; e++) lines.push('\n');
        }
        lines.push(line);
        empty = 0;
        lineEnd = end;
      }
      from = end + 1;
    }
    if (contentIndent < 0) throw BAIL; // an empty block scalar
    if (!strip) lines.push('\n');
    // The reader goes on from the scalar's last content line (the empty lines after it are skipped anyway).
    this.end = lineEnd;
    this.advance();
    return lines.length === 1 ? fresh(lines[0]!) : lines.join('');
  }
}
