// Restore text of a full sync, tens of megabytes in a big cluster, written into one growing buffer
// instead of joined from strings.
/**
 * Restore text built in place, growing as lines are added; ASCII only (every formatter guarantees
 * it). `headroom` bytes are kept free in front, so that a small text (the filter table) can later
 * be put before it without copying the whole (see prepend).
 */
export class TextBuffer {
  private buf: Buffer;
  private start: number;
  private end: number;

  constructor(estimate = 64 * 1024, headroom = 0) {
    this.buf = Buffer.allocUnsafe(Math.max(1024, estimate) + headroom);
    this.start = headroom;
    this.end = headroom;
  }

  /** Appends `s` and a newline. */
  line(s: string): void {
    this.reserve(s.length + 1);
    this.end += this.buf.write(s, this.end, 'latin1');
    this.buf[this.end++] = 10;
  }

  /** Appends `s` as it is. */
  append(s: string): void {
    this.reserve(s.length);
    this.end += this.buf.write(s, this.end, 'latin1');
  }

  /** Puts `s` in front of the text: in the headroom when it fits (no copy), else after a copy. */
  prepend(s: string): void {
    this.prependLines([s], '', '');
  }

  /**
   * Puts `head`, then `before + line + after` for every line, in front of the text, written piece
   * by piece (a block of a hundred thousand chain declarations is never built as one string).
   */
  prependLines(lines: readonly string[], before: string, after: string, head = ''): void {
    let size = head.length;
    for (const l of lines) size += before.length + l.length + after.length;
    if (size > this.start) {
      const next = Buffer.allocUnsafe(size + this.buf.length - this.start);
      this.buf.copy(next, size, this.start, this.end);
      this.end = size + this.end - this.start;
      this.start = size;
      this.buf = next;
    }
    this.start -= size;
    let at = this.start + this.buf.write(head, this.start, 'latin1');
    for (const l of lines) {
      if (before) at += this.buf.write(before, at, 'latin1');
      at += this.buf.write(l, at, 'latin1');
      if (after) at += this.buf.write(after, at, 'latin1');
    }
  }

  get length(): number {
    return this.end - this.start;
  }

  /** The text (a view, not a copy). */
  toBuffer(): Buffer {
    return this.buf.subarray(this.start, this.end);
  }

  private reserve(n: number): void {
    if (this.end + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.end + n, this.buf.length * 2));
    this.buf.copy(next, 0, 0, this.end);
    this.buf = next;
  }
}
