// A watch answer is one JSON event per line ({"type":"ADDED","object":{...}}\n...). The bytes are split on
// '\n' as they arrive, and each complete line is parsed alone: nothing holds more than one line and one chunk.

const NEWLINE = 0x0a;

export class WatchLineError extends Error {}

export class WatchLines {
  readonly #line: (event: unknown) => void;
  /** The start of a line whose end has not arrived yet. */
  #pending: Buffer[] = [];

  /** `line` receives each line parsed (blank lines are skipped). */
  constructor(line: (event: unknown) => void) {
    this.#line = line;
  }

  /** Feeds bytes of the answer; throws WatchLineError for a line that is not JSON. */
  push(chunk: Buffer): void {
    let from = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, from)) {
      const part = chunk.subarray(from, nl);
      from = nl + 1;
      const line = this.#pending.length === 0 ? part : Buffer.concat([...this.#pending, part]);
      this.#pending = [];
      this.#emit(line);
    }
    if (from < chunk.length) this.#pending.push(chunk.subarray(from));
  }

  /** The answer ended: a last line without its newline still counts. */
  end(): void {
    const rest = Buffer.concat(this.#pending);
    this.#pending = [];
    this.#emit(rest);
  }

  #emit(line: Buffer): void {
    const text = line.toString('utf8');
    if (text.trim() === '') return;
    let event: unknown;
    try {
      event = JSON.parse(text);
    } catch {
      throw new WatchLineError(`a watch event is not JSON: ${JSON.stringify(text.slice(0, 100))}`);
    }
    this.#line(event);
  }
}
