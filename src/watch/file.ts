// The file source: a YAML or JSON file holding a v1 List (or any *List) or a multi-document stream of
// Services, EndpointSlices and Nodes (or a routing scenario file, whose `objects` are read). Other kinds are
// skipped with a debug log.
import { type FSWatcher, watch } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { type YAMLException, loadAll } from 'js-yaml';
import { log } from '../log.ts';
import type { KubeObject } from '../model/k8s.ts';
import type { Source, SourceHandler } from './types.ts';

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
 * Parses file text into the watched objects; throws SourceFileError naming the file and position.
 * JSON (what `kubectl get -o json` writes) goes through JSON.parse; anything else, or JSON that does not
 * parse, through js-yaml, which reads a 10,000-service dump in under a second where a YAML library that
 * keeps a document model takes seconds and gigabytes.
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

export async function readObjectsFile(file: string): Promise<KubeObject[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new SourceFileError(`${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  return parseObjects(text, file);
}

function identity(o: KubeObject): string {
  return `${o.kind}/${o.metadata?.namespace ?? 'default'}/${o.metadata?.name ?? ''}`;
}

/**
 * The file source: the initial list, then, while running, the file is followed whether it is written in
 * place or replaced by a rename (the directory is watched, plus a slow poll as a safety net). Each re-read
 * is compared with the previous one and only added, changed and removed objects are sent as events. A file
 * that no longer parses is reported and ignored: the last good content stays in force.
 */
export class FileSource implements Source {
  readonly file: string;
  private readonly debounceMs: number;
  private readonly pollMs: number;
  private last = new Map<string, { text: string; object: KubeObject }>();
  private watcher: FSWatcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private lastStat = '';
  private handler: SourceHandler | null = null;
  private reading: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(file: string, opts: { debounceMs?: number; pollMs?: number } = {}) {
    this.file = resolve(file);
    this.debounceMs = opts.debounceMs ?? 50;
    this.pollMs = opts.pollMs ?? 2000;
  }

  async start(handler: SourceHandler): Promise<void> {
    this.handler = handler;
    const objects = await readObjectsFile(this.file);
    this.last = new Map(objects.map((o) => [identity(o), { text: JSON.stringify(o), object: o }]));
    this.lastStat = await this.statKey();
    handler.onList(objects);
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

  private async statKey(): Promise<string> {
    try {
      const st = await stat(this.file);
      return `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch {
      return 'missing';
    }
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
    let objects: KubeObject[];
    try {
      objects = await readObjectsFile(this.file);
    } catch (err) {
      this.handler.onError?.(err as Error);
      return;
    }
    const next = new Map(objects.map((o) => [identity(o), { text: JSON.stringify(o), object: o }]));
    const prev = this.last;
    this.last = next;
    for (const [id, p] of prev) if (!next.has(id)) this.handler.onEvent({ type: 'delete', object: p.object });
    for (const [id, n] of next) {
      const p = prev.get(id);
      if (!p) this.handler.onEvent({ type: 'add', object: n.object });
      else if (p.text !== n.text) this.handler.onEvent({ type: 'update', object: n.object });
    }
    log.debug({ event: 'file-reread', file: this.file, objects: next.size }, 're-read the source file');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.debounce) clearTimeout(this.debounce);
    await this.reading;
  }
}
