// The watch protocol as the reflector reads it: JSON lines split as the bytes come (an event across chunks, a
// multi-byte character cut in two), a bookmark moving the resume point, an ERROR 410 event forcing a relist,
// a 500 answer reported and recovered from after a backoff. Against a scripted server: each request gets the
// next answer, and the test sees exactly what the reflector asked.
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../src/model/k8s.ts';
import { ApiClient } from '../../src/watch/api-client.ts';
import { WatchLineError, WatchLines } from '../../src/watch/api-watch-lines.ts';
import { Reflector, type ReflectorTimings } from '../../src/watch/api-reflector.ts';

describe('WatchLines', () => {
  it('parses each line once it is complete, whatever the chunks', () => {
    const events: unknown[] = [];
    const lines = new WatchLines((e) => events.push(e));
    const text = `{"type":"ADDED","object":{"metadata":{"name":"café"}}}\n\n{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}\n{"type":"DELETED"`;
    const bytes = Buffer.from(text);
    // 'é' is two bytes: cut between them, and in the middle of every other token too.
    const cut = bytes.indexOf(Buffer.from('é')) + 1;
    lines.push(bytes.subarray(0, 10));
    lines.push(bytes.subarray(10, cut));
    expect(events).toEqual([]);
    lines.push(bytes.subarray(cut, cut + 30));
    expect(events).toEqual([{ type: 'ADDED', object: { metadata: { name: 'café' } } }]);
    lines.push(bytes.subarray(cut + 30));
    expect(events).toHaveLength(2);
    lines.push(Buffer.from(',"object":{"metadata":{"name":"x"}}}'));
    expect(events).toHaveLength(2);
    lines.end(); // the last line, without its newline
    expect(events[2]).toEqual({ type: 'DELETED', object: { metadata: { name: 'x' } } });
  });

  it('rejects a line that is not JSON', () => {
    const lines = new WatchLines(() => {});
    expect(() => lines.push(Buffer.from('{"type":"ADDED",\n'))).toThrow(WatchLineError);
  });
});

type Answer = (req: IncomingMessage, res: ServerResponse) => void;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A server answering the n-th request with answers[n]; requests past the script are held open. */
async function scripted(answers: Answer[]): Promise<{ url: string; requests: URL[] }> {
  const requests: URL[] = [];
  const server = createServer((req, res) => {
    requests.push(new URL(req.url ?? '/', 'http://x'));
    answers[requests.length - 1]?.(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const svc = (name: string, rv: string) => ({ metadata: { name, namespace: 'shop', resourceVersion: rv }, spec: { clusterIP: '198.18.100.10' } });
const list =
  (rv: string, ...items: unknown[]): Answer =>
  (_q, res) => {
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ kind: 'ServiceList', apiVersion: 'v1', metadata: { resourceVersion: rv }, items }));
  };
const line = (type: string, object: unknown) => `${JSON.stringify({ type, object })}\n`;

describe('Reflector', () => {
  it('follows bookmarks, relists on an ERROR 410 event, and recovers from a 500 after a backoff', async () => {
    const { url, requests } = await scripted([
      list('10', svc('a', '5')),
      // An event in three chunks, a bookmark, then the server ends the watch (its timeoutSeconds).
      async (_q, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        const added = line('ADDED', svc('b', '11'));
        for (const part of [added.slice(0, 7), added.slice(7, 40), added.slice(40)]) {
          res.write(part);
          await sleep(20);
        }
        res.write(line('BOOKMARK', { kind: 'Service', metadata: { resourceVersion: '15' } }));
        await sleep(20);
        res.end();
      },
      // The resumed watch: its history is gone.
      (_q, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(line('ERROR', { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410, message: 'too old resource version' }));
        // Left open: the reflector must stop reading on its own.
      },
      list('20', svc('a', '5'), svc('c', '18')),
      (_q, res) => res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 500, message: 'etcd is sad' })),
      (_q, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(line('MODIFIED', { ...svc('c', '21'), spec: { clusterIP: '198.18.100.11' } }));
      },
    ]);
    const timings: ReflectorTimings = { backoffInitialMs: 50, backoffMaxMs: 100, silentWatchMs: 5000, watchTimeoutSeconds: 300, listTimeoutMs: 2000 };
    const log: string[] = [];
    const errors: Error[] = [];
    let lastChanged: KubeObject | null = null;
    const client = new ApiClient({
      server: url,
      origin: 'test',
      ca: null,
      insecure: true,
      tlsServerName: null,
      cert: null,
      key: null,
      authenticate: async () => {},
    });
    const r = new Reflector(client, { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', labelSelector: '!x' }, timings, {
      listing: () => {
        const objects: KubeObject[] = [];
        return {
          add: (part) => objects.push(...part),
          end: () => log.push(`listed ${objects.map((o) => `${o.metadata?.namespace}/${o.metadata?.name}`).join(',')}`),
        };
      },
      changed: (_ref, type, o: KubeObject) => {
        log.push(`${type} ${o.metadata?.name}@${o.metadata?.resourceVersion}`);
        lastChanged = o;
      },
      error: (e) => errors.push(e),
    });
    cleanups.push(async () => {
      await r.stop();
      client.close();
    });
    r.start();
    for (let i = 0; i < 300 && !log.includes('update c@21'); i++) await sleep(10);

    expect(log).toEqual(['listed shop/a', 'add b@11', 'listed shop/a,shop/c', 'update c@21']);
    expect(lastChanged).toMatchObject({ kind: 'Service', apiVersion: 'v1', spec: { clusterIP: '198.18.100.11' } });
    // Only the versions are kept, not the objects.
    expect([...r.versions]).toEqual([
      ['shop/a', '5'],
      ['shop/c', '21'],
    ]);
    const asked = requests.map((u) => `${u.searchParams.get('watch') ? 'watch' : 'list'} ${u.searchParams.get('resourceVersion') ?? ''}`.trim());
    // The bookmark's resourceVersion is where the second watch starts; after the relist, the list's.
    expect(asked).toEqual(['list', 'watch 10', 'watch 15', 'list', 'watch 20', 'watch 20']);
    expect(requests.every((u) => u.searchParams.get('labelSelector') === '!x')).toBe(true);
    expect(requests.filter((u) => u.searchParams.get('watch')).every((u) => u.searchParams.get('allowWatchBookmarks') === 'true')).toBe(true);
    expect(errors.map((e) => e.message)).toEqual(['Service watch failed: HTTP 500 watch /api/v1/services: HTTP 500: etcd is sad']);
    expect(r.stats).toMatchObject({ lists: 2, watches: 4, restarts: 1, errors: 1 });
  });
});
