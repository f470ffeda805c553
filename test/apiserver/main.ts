// The test API server as its own process (e.g. inside a network namespace, for a proxy run there):
//
//   node test/apiserver/main.ts [--host 127.0.0.1] [--port 0] [--kubeconfig FILE] [--from FILE]
//                               [--token TOKEN | --no-token] [--bookmark-ms N] [--too-old-as status|event]
//                               [--initial-rv N] [--control-stdin]
//
// --from loads objects from a YAML/JSON file: a List or stream of objects, or a shared scenario (its
// `objects`). Prints one JSON line {"event":"listening","url":...,"kubeconfig":...} once it serves, and
// runs until SIGTERM/SIGINT. The /_test/ control endpoints are on (POST /_test/apply with an object or a
// List, /_test/delete {kind,namespace,name}, /_test/drop-watches, /_test/expire-watches, /_test/compact,
// /_test/fail-next {n,status,only}, /_test/delay-next {n,ms,only}, /_test/silence-watches, /_test/bookmark; GET /_test/objects,
// GET /_test/clients: what each client asked and was sent); they need no token.
//
// --control-stdin takes one JSON command per line on stdin, for load generators that change objects faster than
// an HTTP round trip per change allows (see the end of this file).
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parse } from 'yaml';
import { parseObjects } from '../../src/watch/file.ts';
import { type ApiObject, TestApiServer } from './server.ts';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    kubeconfig: { type: 'string' },
    from: { type: 'string' },
    token: { type: 'string', default: 'test-token' },
    'no-token': { type: 'boolean', default: false },
    'bookmark-ms': { type: 'string', default: '0' },
    'too-old-as': { type: 'string', default: 'status' },
    'initial-rv': { type: 'string' },
    'control-stdin': { type: 'boolean', default: false },
  },
  strict: true,
});

async function loadObjects(file: string): Promise<ApiObject[]> {
  const text = await readFile(file, 'utf8');
  // JSON needs no YAML parser (the yaml package takes seconds on a benchmark's 10,000 x 10 cluster).
  const doc = (/^\s*[[{]/.test(text) ? JSON.parse(text) : parse(text)) as unknown;
  if (doc && typeof doc === 'object' && Array.isArray((doc as { objects?: unknown }).objects)) {
    return (doc as { objects: ApiObject[] }).objects;
  }
  return parseObjects(text, file) as ApiObject[];
}

const tooOldAs = values['too-old-as'];
if (tooOldAs !== 'status' && tooOldAs !== 'event') throw new Error('--too-old-as is status or event');
const server = new TestApiServer({
  host: values.host,
  port: Number(values.port),
  token: values['no-token'] ? null : values.token,
  bookmarkIntervalMs: Number(values['bookmark-ms']),
  tooOldAs,
  control: true,
  ...(values['initial-rv'] ? { initialResourceVersion: Number(values['initial-rv']) } : {}),
});
if (values.from) {
  server.load(await loadObjects(values.from));
  server.warm();
}
await server.start();
if (values.kubeconfig) await server.writeKubeconfig(values.kubeconfig);
process.stdout.write(`${JSON.stringify({ event: 'listening', url: server.url, kubeconfig: values.kubeconfig ?? null, objects: server.list().length })}\n`);

// --control-stdin commands: {"op":"apply","object":{...}}, {"op":"delete","kind":..,"namespace":..,"name":..},
// {"op":"drop-watches"}, {"op":"expire-watches"}, {"op":"compact"}, {"op":"stats"} (the resourceVersion, open
// watches and every client's accounting). A command with an "id" is answered by one stdout line
// {"event":"reply","id":..,"result":..} (or "error") once done; commands without one are not answered.
interface StdinCommand {
  op: string;
  id?: string | number;
  object?: ApiObject;
  kind?: string;
  namespace?: string;
  name?: string;
}

function runCommand(cmd: StdinCommand): unknown {
  switch (cmd.op) {
    case 'apply':
      if (!cmd.object) throw new Error('apply needs an object');
      return server.apply(cmd.object).metadata?.resourceVersion;
    case 'delete':
      if (!cmd.kind || !cmd.name) throw new Error('delete needs kind and name');
      return server.remove(cmd.kind as Parameters<typeof server.remove>[0], cmd.namespace ?? '', cmd.name);
    case 'drop-watches':
      return server.dropWatches();
    case 'expire-watches':
      return server.expireWatches();
    case 'compact':
      server.compact();
      return server.resourceVersion;
    case 'stats':
      return { resourceVersion: server.resourceVersion, openWatches: server.watchCount, clients: server.clientStats() };
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}

if (values['control-stdin']) {
  const { createInterface } = await import('node:readline');
  const reply = (id: string | number | undefined, body: Record<string, unknown>) => {
    if (id !== undefined) process.stdout.write(`${JSON.stringify({ event: 'reply', id, ...body })}\n`);
  };
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (!line.trim()) return;
    let cmd: StdinCommand;
    try {
      cmd = JSON.parse(line) as StdinCommand;
    } catch (e) {
      process.stderr.write(`bad command (${(e as Error).message}): ${JSON.stringify(line.slice(0, 200))}\n`);
      return;
    }
    try {
      reply(cmd.id, { result: runCommand(cmd) ?? null });
    } catch (e) {
      process.stderr.write(`command ${JSON.stringify(cmd.op)} failed: ${(e as Error).message}\n`);
      reply(cmd.id, { error: (e as Error).message });
    }
  });
}

const stop = () => {
  server.stop().then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
