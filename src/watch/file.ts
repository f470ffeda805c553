// The file source: a YAML or JSON file holding a v1 List (or any *List) or a multi-document stream of
// Services, EndpointSlices and Nodes (or a routing scenario file, whose `objects` are read). Other kinds are
// skipped with a debug log. The file is read piece by piece (file-split.ts), each object reduced to the
// fields the model reads (model/k8s.ts readFields, as the API source does) as soon as it is parsed; a re-read parses only the pieces that changed.
import { type FSWatcher, watch } from 'node:fs';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { type LoadOptions, type YAMLException, load, loadAll } from 'js-yaml';
import { log } from '../log.ts';
import { type KubeObject, readFields } from '../model/k8s.ts';
import { type Piece, SplitError, sniffJSON, splitJSONList, splitYAML } from './file-split.ts';
import type { Source, SourceHandler } from './types.ts';
import { NOT_HANDLED, readBlockYAML } from './yaml-block.ts';

/** The kinds read, with the API versions accepted (v1beta1 slices: what API servers before 1.21 serve). */
const WATCHED: Record<string, readonly string[]> = { Service: ['v1'], EndpointSlice: ['discovery.k8s.io/v1', 'discovery.k8s.io/v1beta1'], Node: ['v1'] };

export class SourceFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SourceFileError';
  }
}

/** How deep Lists may nest (a List of Lists...); deeper is a hostile or broken file. */
const MAX_DEPTH = 8;
/** YAML aliases allowed per document (Kubernetes objects never need them; a "billion laughs" file does). */
const MAX_ALIASES = 100;

/**
 * Parses a whole file's text into the watched objects, as they are; throws SourceFileError naming the file
 * and position. JSON (what `kubectl get -o json` writes) goes through JSON.parse; one document of the YAML
 * kubectl writes through the fast reader (yaml-block.ts); anything else, or JSON that does not parse, through
 * js-yaml (which takes a trailing comma in a flow mapping, and says where it stops).
 * The file source reads piece by piece (readObjects below) and comes here for what it does not cut and for
 * errors; the test API server serves what this returns.
 */
export function parseObjects(text: string, file: string): KubeObject[] {
  const first = text.trimStart()[0];
  let docs: unknown[] | null = null;
  if (first === '{' || first === '[') {
    try {
      docs = [JSON.parse(text)];
    } catch {
      docs = null; // the YAML parser below says where
    }
  }
  if (docs === null) {
    // One document as kubectl writes it: the fast reader (yaml-block.ts); anything else, js-yaml.
    const value = readBlockYAML(text);
    if (value !== NOT_HANDLED) docs = [value];
  }
  if (docs === null) {
    try {
      docs = loadAll(text, { filename: file, json: true, maxAliases: MAX_ALIASES });
    } catch (e) {
      const mark = (e as YAMLException).mark;
      const where = mark ? `${file}:${mark.line + 1}:${mark.column + 1}` : file;
      const reason = (e as YAMLException).reason ?? (e as Error).message;
      throw new SourceFileError(`${where}: ${String(reason).split('\n')[0]}`);
    }
  }
  const out: KubeObject[] = [];
  const seen = new Set<object>();
  for (const value of docs) {
    if (value === null || value === undefined) continue;
    collect(value, file, out, 0, seen);
  }
  return out;
}

function collect(value: unknown, file: string, out: KubeObject[], depth: number, seen: Set<object>): void {
  // A self-referencing List (a YAML alias to itself) would recurse forever.
  if (depth > MAX_DEPTH) throw new SourceFileError(`${file}: Lists nested more than ${MAX_DEPTH} deep (a List that contains itself?)`);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SourceFileError(`${file}: a document is not a Kubernetes object (found ${Array.isArray(value) ? 'a list' : typeof value})`);
  }
  // YAML aliases share objects: one object listed twice would be applied twice, and a web of aliases to Lists
  // would take exponential time to walk.
  if (seen.has(value)) throw new SourceFileError(`${file}: the same object appears more than once (a YAML alias)`);
  seen.add(value);
  const o = value as { kind?: unknown; apiVersion?: unknown; items?: unknown; objects?: unknown };
  // A routing scenario (test/scenarios/README.md format, examples/demo.yaml): its objects are the cluster.
  if (o.kind === undefined && Array.isArray(o.objects)) {
    for (const item of o.objects) collect(item, file, out, depth + 1, seen);
    return;
  }
  if (typeof o.kind === 'string' && o.kind.endsWith('List') && Array.isArray(o.items)) {
    for (const item of o.items) {
      // Items of typed lists (ServiceList ...) carry no kind of their own.
      const it = item as { kind?: unknown };
      if (it && typeof it === 'object' && it.kind === undefined && o.kind !== 'List') it.kind = o.kind.slice(0, -4);
      collect(item, file, out, depth + 1, seen);
    }
    return;
  }
  const want = typeof o.kind === 'string' && Object.hasOwn(WATCHED, o.kind) ? WATCHED[o.kind] : undefined;
  if (!want || (o.apiVersion !== undefined && !want.includes(o.apiVersion as string))) {
    log.debug({ event: 'skipped', file, kind: o.kind, apiVersion: o.apiVersion }, 'skipping an object of a kind the proxy does not watch');
    return;
  }
  out.push(value as KubeObject);
}

/** Every piece's digest (file-split.ts) with the identities of the objects it holds, as stubs. */
export type PieceIndex = Map<string, KubeObject[]>;

export interface FileRead {
  /** The objects of the pieces not in `known`, reduced to the fields the model reads. */
  objects: KubeObject[];
  pieces: PieceIndex;
}

/** An object's identity, all a delete needs: what the file source remembers of each object. */
function stub(o: KubeObject): KubeObject {
  return { apiVersion: o.apiVersion, kind: o.kind, metadata: { name: o.metadata?.name, namespace: o.metadata?.namespace } } as KubeObject;
}

/**
 * Reads the file piece by piece (file-split.ts): each List entry or document is parsed and reduced to the
 * model's fields before the next is read, so the whole parsed file never exists at once. Pieces whose digest
 * is in `known` (read before, unchanged) are not parsed again. A file the splitter cannot cut, or with any
 * error, is parsed whole by parseObjects, which says where the error is.
 */
export async function readObjects(file: string, opts: { index: boolean; known?: PieceIndex } = { index: false }): Promise<FileRead> {
  try {
    return await readPieces(file, opts.index ? (opts.known ?? new Map()) : null);
  } catch {
    // Parsed whole below: its error names the position, or the file is of a shape the splitter does not cut.
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new SourceFileError(`${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  const objects = parseObjects(text, file).map(readFields);
  return { objects, pieces: opts.index ? new Map([[createHash('sha1').update(text).digest('base64'), objects.map(stub)]]) : new Map() };
}

/** known: the index of the last read (an empty one at first); null: no index (nothing will be re-read). */
async function readPieces(file: string, known: PieceIndex | null): Promise<FileRead> {
  const json = await sniffJSON(file);
  const objects: KubeObject[] = [];
  const pieces: PieceIndex = new Map();
  /** Entries without a kind, per List document: their kind is the typed List's (ServiceList...), known at its end. */
  const kindless = new Map<number, { digest: string | null; value: object; fresh: boolean }[]>();
  /** fresh: the value's strings are its own (JSON.parse, yaml-block.ts), not views into the piece's text. */
  const take = (digest: string | null, value: unknown, depth: number, fresh: boolean) => {
    const out: KubeObject[] = [];
    collect(value, file, out, depth, new Set());
    // js-yaml's strings are slices of the piece's text, which they would keep alive: copied flat once reduced.
    for (let i = 0; i < out.length; i++) out[i] = fresh ? readFields(out[i]!) : (JSON.parse(JSON.stringify(readFields(out[i]!))) as KubeObject);
    for (const o of out) objects.push(o);
    if (digest === null) return;
    const ids = pieces.get(digest) ?? [];
    for (const o of out) ids.push(stub(o));
    pieces.set(digest, ids);
  };
  const onPiece = (p: Piece) => {
    const digest = known && p.role !== 'header' ? p.digest() : null;
    if (digest !== null && known?.has(digest)) {
      pieces.set(digest, known.get(digest)!);
      return;
    }
    let value: unknown;
    let fresh = true;
    if (json) value = JSON.parse(p.text());
    else {
      // The YAML kubectl writes is read by the fast reader; what it does not read, by js-yaml.
      const text = p.text();
      value = readBlockYAML(text);
      if (value === NOT_HANDLED) {
        value = load(text, { filename: file, json: true, maxAliases: MAX_ALIASES } as LoadOptions);
        fresh = false;
      }
    }
    if (p.role === 'item' && !json) {
      if (!Array.isArray(value) || value.length !== 1) throw new SplitError('a List entry is not one sequence entry');
      value = value[0];
    }
    if (p.role === 'item' && typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === undefined) {
      const list = kindless.get(p.doc) ?? [];
      list.push({ digest, value, fresh });
      kindless.set(p.doc, list);
      return;
    }
    if (p.role === 'header') {
      const h = value as { kind?: unknown; items?: unknown } | null;
      if (typeof h?.kind !== 'string' || !h.kind.endsWith('List') || !Array.isArray(h.items) || h.items.length !== 0) throw new SplitError('not a List');
      for (const k of kindless.get(p.doc) ?? []) {
        if (h.kind !== 'List') (k.value as { kind?: string }).kind = h.kind.slice(0, -4);
        take(k.digest, k.value, 1, k.fresh);
      }
      kindless.delete(p.doc);
      return;
    }
    if (value === null || value === undefined) {
      if (digest !== null) pieces.set(digest, []); // an empty document
    } else take(digest, value, p.role === 'item' ? 1 : 0, fresh);
  };
  if (json) await splitJSONList(file, onPiece);
  else await splitYAML(file, onPiece);
  return { objects, pieces };
}

/** The watched objects of the file, reduced to the fields the model reads. */
export async function readObjectsFile(file: string): Promise<KubeObject[]> {
  return (await readObjects(file)).objects;
}

function identity(o: KubeObject): string {
  return `${o.kind}/${o.metadata?.namespace ?? 'default'}/${o.metadata?.name ?? ''}`;
}

function identities(pieces: PieceIndex): Map<string, KubeObject> {
  const m = new Map<string, KubeObject>();
  for (const stubs of pieces.values()) for (const o of stubs) m.set(identity(o), o);
  return m;
}

/**
 * The file source: the initial list, then, while running, the file is followed whether it is written in
 * place or replaced by a rename (the directory is watched, plus a slow poll as a safety net). Each re-read
 * is compared with the previous one and only added, changed and removed objects are sent as events. A file
 * that no longer parses is reported and ignored: the last good content stays in force.
 */
/** What identifies a version of the file without reading it: inode, size, modification time. */
async function statKey(file: string): Promise<string> {
  try {
    const st = await stat(file);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return 'missing';
  }
}

/** A complete read of the file and the stat it was read at (FileSource.readFirst). */
export interface FirstRead {
  stat: string;
  read: FileRead;
}

export class FileSource implements Source {
  readonly file: string;
  private readonly debounceMs: number;
  private readonly pollMs: number;
  /** What the last read held: each piece's digest with its objects' identities (never the objects). */
  private pieces: PieceIndex = new Map();
  private watcher: FSWatcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private lastStat = '';
  private handler: SourceHandler | null = null;
  private reading: Promise<void> = Promise.resolve();
  private stopped = false;

  /** A read made before start (the start-up's check of the file): used for the first list instead of a second read. */
  private first: FirstRead | null;

  constructor(file: string, opts: { debounceMs?: number; pollMs?: number; first?: FirstRead | null } = {}) {
    this.file = resolve(file);
    this.debounceMs = opts.debounceMs ?? 50;
    this.pollMs = opts.pollMs ?? 2000;
    this.first = opts.first ?? null;
  }

  /**
   * The file read once, with its stat taken before the read: a change while it is read shows as a different
   * stat, so the source started from this read reads the file again.
   */
  static async readFirst(file: string): Promise<FirstRead> {
    const stat = await statKey(resolve(file));
    return { stat, read: await readObjects(file, { index: true }) };
  }

  async start(handler: SourceHandler): Promise<void> {
    this.handler = handler;
    const first = this.first;
    this.first = null;
    const { stat, read } = first ?? (await FileSource.readFirst(this.file));
    this.pieces = read.pieces;
    this.lastStat = stat;
    handler.onList(read.objects);
    // Handed over once: whoever made the first read (the start-up) must not keep the objects alive through it.
    if (first) first.read.objects = [];
    try {
      this.watcher = watch(dirname(this.file), { persistent: false }, (_event, name) => {
        if (name === null || name === basename(this.file)) this.schedule();
      });
      this.watcher.on('error', (err) => handler.onError?.(err));
    } catch (err) {
      handler.onError?.(err as Error);
    }
    this.poll = setInterval(() => {
      void this.statKey().then((k) => {
        if (k !== this.lastStat) this.schedule();
      });
    }, this.pollMs);
    this.poll.unref();
  }

  private statKey(): Promise<string> {
    return statKey(this.file);
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.reading = this.reading.then(() => this.reread());
    }, this.debounceMs);
  }

  private async reread(): Promise<void> {
    if (this.stopped || !this.handler) return;
    this.lastStat = await this.statKey();
    let read: FileRead;
    try {
      read = await readObjects(this.file, { index: true, known: this.pieces });
    } catch (err) {
      this.handler.onError?.(err as Error);
      return;
    }
    const before = identities(this.pieces);
    const after = identities(read.pieces);
    this.pieces = read.pieces;
    // Only the objects of changed pieces were parsed: each is new or updated; those no piece holds any more are gone.
    for (const [id, o] of before) if (!after.has(id)) this.handler.onEvent({ type: 'delete', object: o });
    for (const o of read.objects) this.handler.onEvent({ type: before.has(identity(o)) ? 'update' : 'add', object: o });
    log.debug({ event: 'file-reread', file: this.file, objects: after.size, changed: read.objects.length }, 're-read the source file');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.debounce) clearTimeout(this.debounce);
    await this.reading;
  }
}
