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
// /_test/fail-next {n,status,only}, /_test/delay-next {n,ms,only}, /_test/silence-watches, /_test/bookmark; GET /_test/objects); they
// need no token.
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
  const doc = parse(text) as unknown;
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
if (values.from) server.load(await loadObjects(values.from));
await server.start();
if (values.kubeconfig) await server.writeKubeconfig(values.kubeconfig);
process.stdout.write(`${JSON.stringify({ event: 'listening', url: server.url, kubeconfig: values.kubeconfig ?? null, objects: server.list().length })}\n`);

// --control-stdin: one JSON command per line on stdin, for load generators that change objects faster than an
// HTTP round trip per change allows: {"op":"apply","object":{...}} or {"op":"delete","kind":..,"namespace":..,"name":..}.
if (values['control-stdin']) {
  const { createInterface } = await import('node:readline');
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (!line.trim()) return;
    try {
      const cmd = JSON.parse(line) as { op: string; object?: ApiObject; kind?: string; namespace?: string; name?: string };
      if (cmd.op === 'apply' && cmd.object) server.apply(cmd.object);
      else if (cmd.op === 'delete' && cmd.kind && cmd.name) server.remove(cmd.kind as Parameters<typeof server.remove>[0], cmd.namespace ?? '', cmd.name);
      else process.stderr.write(`unknown command: ${line}\n`);
    } catch (e) {
      process.stderr.write(`bad command (${(e as Error).message}): ${line.slice(0, 200)}\n`);
    }
  });
}

const stop = () => {
  server.stop().then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
