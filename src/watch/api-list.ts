// Reads a list answer ({"kind":"...List","metadata":{...},"items":[...]}) item by item as its bytes arrive.
// JSON.parse of a whole 10,000 x 10 list built every served object in full at once (hundreds of megabytes,
// which the process then kept as its resident size) before anything could be cut down; here each item is
// parsed alone and handed on, so only the slim copies and one chunk are ever held. The bytes are cut by the
// scanner that cuts an objects file into its List's entries (file-split.ts), which follows only the nesting;
// each item, and the list without its items, go through JSON.parse, which checks them.
import { JSONListScanner, SplitError } from './file-split.ts';

export class NotAListError extends Error {}

export interface ListHead {
  /** The list's metadata.resourceVersion ('' without one). */
  resourceVersion: string;
  /** Items that are not objects (null, scalars, lists), skipped. */
  notObjects: number;
}

/** A parsed JSON value that is an object (not null, not an array). */
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Feeds the bytes of a list answer; `item` receives each element of `items` that is an object, parsed. Throws
 * NotAListError when the answer is not a JSON object with an `items` list, or an item is not JSON.
 */
export class ListScanner {
  readonly #scanner: JSONListScanner;
  /** The answer without its items' contents (`"items":[]`), once end() has cut it. */
  #header: string | null = null;
  #notObjects = 0;

  constructor(item: (o: unknown) => void) {
    this.#scanner = new JSONListScanner((piece) => {
      if (piece.role === 'header') {
        this.#header = piece.text();
        return;
      }
      let value: unknown;
      try {
        value = JSON.parse(piece.text());
      } catch {
        throw new NotAListError('an item is not JSON');
      }
      if (isObject(value)) item(value);
      else this.#notObjects++;
    });
  }

  push(chunk: Buffer): void {
    notAListOnSplitError(() => this.#scanner.scan(chunk));
  }

  /** Checks the answer was complete and returns its head. */
  end(): ListHead {
    notAListOnSplitError(() => this.#scanner.end());
    let head: unknown;
    try {
      head = JSON.parse(this.#header!);
    } catch {
      throw new NotAListError('not JSON');
    }
    if (!isObject(head)) throw new NotAListError('not an object');
    // "items": null is an empty list (Go writes a nil slice so).
    if (!('items' in head)) throw new NotAListError('no items');
    if (head.items !== null && !Array.isArray(head.items)) throw new NotAListError('items is not a list');
    const rv = isObject(head.metadata) ? head.metadata.resourceVersion : undefined;
    return { resourceVersion: typeof rv === 'string' ? rv : '', notObjects: this.#notObjects };
  }
}

/** Runs `scan`, turning the splitter's SplitError (not a JSON object, unbalanced, cut short) into NotAListError. */
function notAListOnSplitError(scan: () => void): void {
  try {
    scan();
  } catch (e) {
    throw e instanceof SplitError ? new NotAListError(e.message) : e;
  }
}
