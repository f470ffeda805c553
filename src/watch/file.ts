// The file source: a YAML or JSON file holding a v1 List (or any *List) or a multi-document stream of
// Services, EndpointSlices and Nodes. Other kinds are skipped with a debug log.
import { readFile } from 'node:fs/promises';
import { LineCounter, parseAllDocuments } from 'yaml';
import { log } from '../log.ts';
import type { KubeObject } from '../model/k8s.ts';
import type { Source, SourceHandler } from './types.ts';

const WATCHED: Record<string, string> = { Service: 'v1', EndpointSlice: 'discovery.k8s.io/v1', Node: 'v1' };

export class SourceFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SourceFileError';
  }
}

/** Parses file text into the watched objects; throws SourceFileError naming the file and position. */
export function parseObjects(text: string, file: string): KubeObject[] {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: false, lineCounter: lines });
  const out: KubeObject[] = [];
  const list = Array.isArray(docs) ? docs : [docs];
  for (const doc of list) {
    const err = doc.errors[0];
    if (err) {
      const pos = err.linePos?.[0] ?? lines.linePos(err.pos[0]);
      const where = pos ? `${file}:${pos.line}:${pos.col}` : file;
      throw new SourceFileError(`${where}: ${err.message.split('\n')[0]}`);
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    collect(value, file, out);
  }
  return out;
}

function collect(value: unknown, file: string, out: KubeObject[]): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SourceFileError(`${file}: a document is not a Kubernetes object (found ${Array.isArray(value) ? 'a list' : typeof value})`);
  }
  const o = value as { kind?: unknown; apiVersion?: unknown; items?: unknown };
  if (typeof o.kind === 'string' && o.kind.endsWith('List') && Array.isArray(o.items)) {
    for (const item of o.items) {
      // Items of typed lists (ServiceList ...) carry no kind of their own.
      const it = item as { kind?: unknown };
      if (it && typeof it === 'object' && it.kind === undefined && o.kind !== 'List') it.kind = o.kind.slice(0, -4);
      collect(item, file, out);
    }
    return;
  }
  const want = typeof o.kind === 'string' ? WATCHED[o.kind] : undefined;
  if (!want || (o.apiVersion !== undefined && o.apiVersion !== want)) {
    log.debug({ file, kind: o.kind, apiVersion: o.apiVersion }, 'skipping an object of a kind the proxy does not watch');
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

/** A source that reads a file once. (Following changes to the file comes with the daemon.) */
export class FileSource implements Source {
  readonly file: string;
  constructor(file: string) {
    this.file = file;
  }

  async start(handler: SourceHandler): Promise<void> {
    handler.onList(await readObjectsFile(this.file));
  }

  async stop(): Promise<void> {}
}
