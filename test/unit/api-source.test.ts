// The API source against the test API server: the initial list, events, and recovery from every way the
// API server breaks (dropped watches, 410 Gone in both forms, 5xx, a restart, a silent watch), each followed
// by a change that must reach the handler quickly, and never an onList with objects missing because the
// server was unreachable. Each kind is listed on its own (one onList per kind), as client-go's informers are.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { KubeObject, WatchedKind } from '../../src/model/k8s.ts';
import { buildState } from '../../src/model/store.ts';
import { ApiSource, type ApiSourceOptions, KubeConfigError, loadKubeConfig } from '../../src/watch/api.ts';
import type { SourceEvent, SourceHandler } from '../../src/watch/types.ts';
import { type ApiObject, TestApiServer } from '../apiserver/server.ts';

const HOST = 'node-a';
const dir = mkdtempSync(join(tmpdir(), 'kpt-apisource-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Fast timings: recovery within a few hundred ms even on a loaded 2-core machine. */
const FAST: Partial<ApiSourceOptions> = { backoffInitialMs: 20, backoffMaxMs: 250, silentWatchMs: 700, listTimeoutMs: 3000 };

function svc(name: string, labels: Record<string, string> = {}, spec: Record<string, unknown> = {}): ApiObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'shop', labels },
    spec: { clusterIP: '198.18.100.10', ports: [{ name: 'http', port: 80 }], ...spec },
  };
}
function slice(name: string, service: string, labels: Record<string, string> = {}): ApiObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': service, ...labels } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: ['198.19.1.11'], nodeName: HOST, conditions: { ready: true } }],
  };
}
function node(name: string): ApiObject {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name }, spec: { podCIDR: '198.19.1.0/24' } };
}

const keyOf = (o: { kind?: string; metadata?: { namespace?: string; name?: string } }) => `${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`;

interface Listed {
  kind: WatchedKind;
  objects: KubeObject[];
}

/** The three kinds the source lists: its initial lists are one of each. */
const KINDS = 3;

/** Records what the source delivers and keeps the view a consumer would build from it. */
class Recorder implements SourceHandler {
  lists: Listed[] = [];
  events: SourceEvent[] = [];
  errors: Error[] = [];
  view = new Map<string, KubeObject>();
  onList(objects: KubeObject[], kinds?: readonly WatchedKind[]): void {
    // The API source names the one kind each list is of.
    expect(kinds).toHaveLength(1);
    const kind = kinds![0]!;
    expect(objects.every((o) => o.kind === kind)).toBe(true);
    this.lists.push({ kind, objects });
    for (const [k, o] of this.view) if (o.kind === kind) this.view.delete(k);
    for (const o of objects) this.view.set(keyOf(o), o);
  }
  /** Lists after the initial one of each kind. */
  get relists(): number {
    return Math.max(0, this.lists.length - KINDS);
  }
  /** The objects of the last list of `kind`. */
  lastList(kind: WatchedKind): KubeObject[] {
    return this.lists.findLast((l) => l.kind === kind)?.objects ?? [];
  }
  onEvent(e: SourceEvent): void {
    this.events.push(e);
    if (e.type === 'delete') this.view.delete(keyOf(e.object));
    else this.view.set(keyOf(e.object), e.object);
  }
  onError(err: Error): void {
    this.errors.push(err);
  }
  /** name@resourceVersion of everything in the view. */
  state(): string[] {
    return [...this.view.values()].map((o) => `${keyOf(o)}@${o.metadata?.resourceVersion}`).sort();
  }
}

/** What the proxy must see: kube-proxy's selection of the server's objects. */
function expected(server: TestApiServer): string[] {
  return server
    .list()
    .filter((o) => {
      const labels = o.metadata?.labels ?? {};
      if (o.kind === 'Node') return o.metadata?.name === HOST;
      return !('service.kubernetes.io/service-proxy-name' in labels) && !('service.kubernetes.io/headless' in labels);
    })
    .map((o) => `${keyOf(o)}@${o.metadata?.resourceVersion}`)
    .sort();
}

async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - start;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Setup {
  server: TestApiServer;
  source: ApiSource;
  rec: Recorder;
  kubeconfig: string;
}
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let seq = 0;
async function setup(
  opts: { seed?: boolean; server?: ConstructorParameters<typeof TestApiServer>[0]; source?: Partial<ApiSourceOptions>; start?: boolean } = {},
): Promise<Setup> {
  const server = new TestApiServer({ bookmarkIntervalMs: 100, ...opts.server });
  await server.start();
  cleanups.push(() => server.stop());
  if (opts.seed !== false) {
    server.create(svc('web'));
    server.create(slice('web-1', 'web'));
    server.create(svc('other', { 'service.kubernetes.io/service-proxy-name': 'someone-else' }));
    server.create(slice('other-1', 'other', { 'service.kubernetes.io/service-proxy-name': 'someone-else' }));
    server.create(svc('db', { 'service.kubernetes.io/headless': '' }, { clusterIP: 'None' }));
    server.create(slice('db-1', 'db', { 'service.kubernetes.io/headless': '' }));
    server.create(node(HOST));
    server.create(node('node-b'));
  }
  const kubeconfig = await server.writeKubeconfig(join(dir, `kubeconfig-${++seq}`));
  const source = new ApiSource({ kubeconfig, hostname: HOST, ...FAST, ...opts.source });
  cleanups.push(() => source.stop());
  const rec = new Recorder();
  if (opts.start !== false) await source.start(rec);
  return { server, source, rec, kubeconfig };
}

/** The view matches the server (after the source caught up), within ms. */
async function inSync(s: Setup, ms = 5000): Promise<number> {
  return waitFor(
    `the view to match the server\n  server: ${expected(s.server).join(' ')}`,
    () => JSON.stringify(s.rec.state()) === JSON.stringify(expected(s.server)),
    ms,
  );
}

/** How many objects each kind's initial list had. */
function initialSizes(rec: Recorder): Map<WatchedKind, number> {
  return new Map(rec.lists.slice(0, KINDS).map((l) => [l.kind, l.objects.length]));
}

/** Checks that no onList after the first one lost an object the server still has (none is deleted in these tests). */
function noShrinkingLists(rec: Recorder, initial: Map<WatchedKind, number>): void {
  for (const l of rec.lists) expect(l.objects.length).toBeGreaterThanOrEqual(initial.get(l.kind)!);
}

describe('ApiSource', () => {
  it('delivers the initial list of each kind once, before start resolves, with kube-proxy selection and kinds filled in', async () => {
    const s = await setup();
    expect(s.rec.lists.map((l) => l.kind).sort()).toEqual(['EndpointSlice', 'Node', 'Service']);
    expect(s.rec.events).toHaveLength(0);
    expect(s.rec.state()).toEqual(expected(s.server));
    expect(s.rec.state().map((k) => k.split('@')[0])).toEqual(['EndpointSlice/shop/web-1', `Node//${HOST}`, 'Service/shop/web']);
    expect(s.rec.lastList('EndpointSlice')[0]?.apiVersion).toBe('discovery.k8s.io/v1');
    expect(s.rec.lastList('Node')[0]?.apiVersion).toBe('v1');
    // Selectors on the list calls too (not only on the watches), and credentials from the kubeconfig.
    const lists = s.server.requests.filter((r) => !r.watch);
    const sel = '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless';
    expect(lists.find((r) => r.path === '/api/v1/services')?.query.labelSelector).toBe(sel);
    expect(lists.find((r) => r.path === '/apis/discovery.k8s.io/v1/endpointslices')?.query.labelSelector).toBe(sel);
    expect(lists.find((r) => r.path === '/api/v1/nodes')?.query.fieldSelector).toBe(`metadata.name=${HOST}`);
    await waitFor('three watches', () => s.server.watchCount === 3);
    const watches = s.server.requests.filter((r) => r.watch);
    expect(watches.every((r) => r.query.allowWatchBookmarks === 'true' && Number(r.query.timeoutSeconds) >= 300)).toBe(true);
    expect(watches.find((r) => r.path === '/api/v1/services')?.query.labelSelector).toBe(sel);
    expect(s.server.requests.every((r) => r.authorization === 'Bearer test-token')).toBe(true);
    expect(s.rec.errors).toEqual([]);
  });

  it("reads Service and EndpointSlice lists in protobuf when asked (kube-proxy's default), the rest in JSON, into the same state", async () => {
    const json = await setup();
    const pb = await setup({ source: { protobuf: true } });
    const encodings = (server: TestApiServer) =>
      Object.fromEntries(server.requests.filter((r) => !r.watch && r.status === 200).map((r) => [r.path, r.encoding]));
    expect(encodings(pb.server)).toEqual({
      '/api/v1/services': 'protobuf',
      '/apis/discovery.k8s.io/v1/endpointslices': 'protobuf',
      '/api/v1/nodes': 'json',
    });
    expect(Object.values(encodings(json.server))).toEqual(['json', 'json', 'json']);
    // The same objects (names and versions), and the same model built from them.
    expect(pb.rec.state()).toEqual(expected(pb.server));
    expect(pb.rec.state().map((k) => k.split('@')[0])).toEqual(json.rec.state().map((k) => k.split('@')[0]));
    expect(pb.rec.lastList('Service')[0]?.apiVersion).toBe('v1');
    expect(pb.rec.lastList('EndpointSlice')[0]?.kind).toBe('EndpointSlice');
    const config = { hostname: HOST, clusterCIDRs: [], masqueradeAll: false, nodePortAddresses: [] };
    expect(buildState([...pb.rec.view.values()], config).state).toEqual(buildState([...json.rec.view.values()], config).state);
    // Watches stay JSON; a change arrives as usual.
    pb.server.create(svc('api'));
    await inSync(pb);
    // A list with an object protobuf.ts cannot encode is answered in JSON, and read as such.
    await waitFor('watches', () => pb.server.watchCount === 3);
    pb.server.dropWatches();
    pb.server.create(svc('odd', {}, { unknownField: true }));
    pb.server.compact();
    await waitFor('relist', () => pb.rec.relists >= 1, 3000);
    await inSync(pb);
    expect(pb.server.requests.filter((r) => !r.watch && r.path === '/api/v1/services').map((r) => r.encoding)).toContain('json');
    expect(pb.rec.errors).toEqual([]);
  });

  it('delivers add, update and delete events; objects leaving or entering the selection arrive as delete/add', async () => {
    const s = await setup();
    s.server.create(svc('api'));
    await waitFor('add', () => s.rec.events.length === 1);
    expect(s.rec.events[0]).toMatchObject({ type: 'add', object: { kind: 'Service', metadata: { name: 'api' } } });
    s.server.update(svc('api', {}, { type: 'NodePort' }));
    await waitFor('update', () => s.rec.events.length === 2);
    expect(s.rec.events[1]).toMatchObject({ type: 'update', object: { spec: { type: 'NodePort' } } });
    s.server.remove('Service', 'shop', 'api');
    await waitFor('delete', () => s.rec.events.length === 3);
    expect(s.rec.events[2]).toMatchObject({ type: 'delete', object: { kind: 'Service', metadata: { name: 'api' } } });

    s.server.update(slice('web-1', 'web', { 'service.kubernetes.io/headless': '' }));
    await waitFor('slice leaving the selection', () => s.rec.events.length === 4);
    expect(s.rec.events[3]).toMatchObject({ type: 'delete', object: { kind: 'EndpointSlice', metadata: { name: 'web-1' } } });
    s.server.update(svc('other'));
    await waitFor('service entering the selection', () => s.rec.events.length === 5);
    expect(s.rec.events[4]).toMatchObject({ type: 'add', object: { kind: 'Service', metadata: { name: 'other' } } });

    s.server.update({ ...node(HOST), spec: { podCIDR: '198.19.9.0/24' } });
    s.server.update({ ...node('node-b'), spec: { podCIDR: '198.19.8.0/24' } });
    await waitFor('node update', () => s.rec.events.length === 6);
    expect(s.rec.events[5]).toMatchObject({ type: 'update', object: { kind: 'Node', metadata: { name: HOST } } });
    await sleep(150);
    expect(s.rec.events).toHaveLength(6); // node-b never
    expect(s.rec.relists).toBe(0);
    await inSync(s);
    expect(s.rec.errors).toEqual([]);
  });

  it('recovers from dropped watches', async () => {
    const s = await setup();
    for (let i = 0; i < 3; i++) {
      await waitFor('watches', () => s.server.watchCount === 3);
      expect(s.server.dropWatches()).toBe(3);
      s.server.create(svc(`during-${i}`));
      await inSync(s, 3000);
      s.server.create(svc(`after-${i}`));
      await inSync(s, 3000);
    }
    expect(s.rec.relists).toBe(0); // resumed from the resourceVersion: no relist needed
  });

  it('hands a list in parts to a handler that takes them (listing): each part as it is read, ended once it is complete', async () => {
    const server = new TestApiServer({ bookmarkIntervalMs: 100 });
    await server.start();
    cleanups.push(() => server.stop());
    // Large enough to arrive in several chunks.
    const names = Array.from({ length: 3000 }, (_, i) => `s-${i}`);
    for (const n of names) server.create(svc(n));
    server.create(node(HOST));
    const calls: string[] = [];
    const parts = new Map<WatchedKind, number>();
    const got = new Map<WatchedKind, KubeObject[]>();
    const handler: SourceHandler = {
      onList: () => calls.push('onList'),
      listing: (kind) => {
        const objects: KubeObject[] = [];
        return {
          add: (part) => {
            parts.set(kind, (parts.get(kind) ?? 0) + 1);
            objects.push(...part);
          },
          end: () => {
            calls.push(`end ${kind}`);
            got.set(kind, objects);
          },
        };
      },
      onEvent: () => {},
    };
    const source = new ApiSource({ kubeconfig: await server.writeKubeconfig(join(dir, `kubeconfig-${++seq}`)), hostname: HOST, ...FAST });
    cleanups.push(() => source.stop());
    await source.start(handler);
    expect(calls.sort()).toEqual(['end EndpointSlice', 'end Node', 'end Service']);
    expect(
      got
        .get('Service')!
        .map((o) => o.metadata?.name)
        .sort(),
    ).toEqual(names.sort());
    expect(parts.get('Service')).toBeGreaterThan(1);
    expect(got.get('EndpointSlice')).toEqual([]);
    expect(got.get('Node')!.map((o) => o.metadata?.name)).toEqual([HOST]);
  });

  it('relists after 410 Gone as an HTTP status, delivering the full new set of the kind as one onList', async () => {
    const s = await setup();
    await waitFor('watches', () => s.server.watchCount === 3);
    s.server.dropWatches();
    s.server.create(svc('missed'));
    s.server.remove('EndpointSlice', 'shop', 'web-1');
    s.server.compact();
    await waitFor('relist', () => s.rec.relists >= 1, 3000);
    await inSync(s, 3000);
    const gone = s.server.requests.filter((r) => r.watch && r.status === 410);
    expect(gone.length).toBeGreaterThanOrEqual(1);
    // A relist is the complete set of its kind: what it leaves out is gone.
    expect(s.rec.lastList('Service').map(keyOf).sort()).toEqual(['Service/shop/missed', 'Service/shop/web']);
    expect(s.rec.lastList('EndpointSlice')).toEqual([]);
    s.server.create(svc('after'));
    await waitFor('event after relist', () => s.rec.events.some((e) => e.object.metadata?.name === 'after'), 3000);
    await inSync(s);
  });

  it('relists after 410 Gone as an ERROR event (on an open watch, and when resuming a watch)', async () => {
    const s = await setup({ server: { tooOldAs: 'event' } });
    await waitFor('watches', () => s.server.watchCount === 3);
    s.server.create(svc('seen'));
    s.server.compact();
    expect(s.server.expireWatches()).toBe(3);
    await waitFor('relist', () => s.rec.relists >= 1, 3000);
    await inSync(s);
    s.server.create(svc('after-expiry'));
    await inSync(s, 3000);

    const lists = s.rec.lists.length;
    await waitFor('watches', () => s.server.watchCount === 3);
    s.server.dropWatches();
    s.server.update(svc('seen', {}, { type: 'NodePort' }));
    s.server.compact();
    await waitFor('second relist', () => s.rec.lists.length > lists, 3000);
    await inSync(s);
    expect(s.server.requests.some((r) => r.watch && r.status === 200)).toBe(true);
    s.server.create(svc('after-resume'));
    await inSync(s, 3000);
    expect(s.rec.errors).toEqual([]); // 410 is routine, not an error
  });

  it('recovers from 5xx answers to watches and to lists, reporting them, without shrinking lists', async () => {
    const s = await setup();
    const initial = initialSizes(s.rec);
    await waitFor('watches', () => s.server.watchCount === 3);
    s.server.failNext(6, { status: 500, only: 'watch' });
    s.server.dropWatches();
    s.server.create(svc('during-watch-errors'));
    await inSync(s, 3000);
    expect(s.rec.errors.some((e) => /HTTP 500/.test(e.message))).toBe(true);
    expect(s.rec.relists).toBe(0);

    // Now the lists fail too: watches cut and the history compacted force a relist (410), and the next
    // lists are answered 503.
    s.server.failNext(5, { status: 503, only: 'list' });
    s.server.dropWatches();
    s.server.create(svc('during-list-errors'));
    s.server.compact();
    await waitFor('list errors', () => s.rec.errors.some((e) => /list failed: .*503/.test(e.message)), 3000);
    await inSync(s, 4000);
    noShrinkingLists(s.rec, initial);
    s.server.create(svc('after'));
    await inSync(s, 3000);
    const total = Object.values(s.source.stats).reduce((n, st) => n + st.restarts, 0);
    expect(total).toBeGreaterThanOrEqual(5);
  });

  it('recovers from a restart of the API server, keeping everything during the outage', async () => {
    const s = await setup();
    const initial = initialSizes(s.rec);
    const before = { lists: s.rec.lists.length, view: s.rec.state() };
    await s.server.stop();
    await sleep(700); // several failed reconnects
    expect(s.rec.errors.some((e) => /ECONNREFUSED|fetch failed|terminated|other side closed/i.test(e.message))).toBe(true);
    expect(s.rec.lists.length).toBe(before.lists);
    expect(s.rec.state()).toEqual(before.view);
    await s.server.start();
    s.server.create(svc('after-restart'));
    const ms = await inSync(s, 3000);
    expect(ms).toBeLessThan(3000);
    noShrinkingLists(s.rec, initial);

    // A restart that lost the history (as after an etcd compaction): resume fails with 410, relist.
    await s.server.stop();
    s.server.create(svc('while-down'));
    s.server.compact();
    await sleep(300);
    await s.server.start();
    await inSync(s, 3000);
    s.server.create(svc('after-second-restart'));
    await inSync(s, 3000);
    noShrinkingLists(s.rec, initial);
  });

  it('re-establishes a silent watch and gets the change it missed', async () => {
    const s = await setup();
    await waitFor('watches', () => s.server.watchCount === 3);
    expect(s.server.silenceWatches()).toBe(3);
    s.server.create(svc('while-silent'));
    await sleep(100);
    expect(s.rec.events).toHaveLength(0); // the watch really is silent
    const ms = await inSync(s, 3000);
    expect(ms).toBeLessThan(2500);
    expect(s.source.stats.Service.silentWatches).toBeGreaterThanOrEqual(1);
    s.server.create(svc('after'));
    await inSync(s, 2000);
    expect(s.rec.relists).toBe(0);
  });

  it('keeps a quiet watch that gets bookmarks, and resumes watches the server ends normally', async () => {
    const s = await setup();
    await waitFor('watches', () => s.server.watchCount === 3);
    const n = s.server.requests.filter((r) => r.watch).length;
    await sleep(1200); // well past silentWatchMs, bookmarks every 100 ms
    expect(s.server.requests.filter((r) => r.watch).length).toBe(n);

    const t = await setup({ source: { watchTimeoutSeconds: 1 } });
    await sleep(1300);
    expect(t.server.requests.filter((r) => r.watch).length).toBeGreaterThanOrEqual(6);
    t.server.create(svc('after-timeouts'));
    await inSync(t, 2000);
    expect(t.rec.errors).toEqual([]);
    expect(t.rec.relists).toBe(0);
  });

  it('keeps retrying the initial list until the API server answers', async () => {
    const s = await setup({ start: false });
    s.server.failNext(4, { status: 503, only: 'list' });
    await s.source.start(s.rec);
    expect(s.rec.lists).toHaveLength(KINDS);
    expect(s.rec.state()).toEqual(expected(s.server));
    expect(s.rec.errors.filter((e) => /503/.test(e.message)).length).toBe(4);
    expect(s.source.hasSynced).toBe(true);

    // The server is not even up yet.
    const down = new TestApiServer({ bookmarkIntervalMs: 100 });
    await down.start();
    const kubeconfig = await down.writeKubeconfig(join(dir, 'kubeconfig-down'));
    await down.stop();
    cleanups.push(() => down.stop());
    down.create(svc('web'));
    down.create(node(HOST));
    const source = new ApiSource({ kubeconfig, hostname: HOST, ...FAST });
    cleanups.push(() => source.stop());
    const rec = new Recorder();
    let resolved = false;
    const started = source.start(rec).then(() => (resolved = true));
    await sleep(400);
    expect(resolved).toBe(false);
    expect(rec.lists).toHaveLength(0);
    expect(rec.errors.length).toBeGreaterThan(0);
    await down.start();
    await started;
    expect(rec.state().map((k) => k.split('@')[0])).toEqual([`Node//${HOST}`, 'Service/shop/web']);
  });

  it('rejects start() when stopped before the initial list, and reports bad credentials', async () => {
    const s = await setup({ start: false });
    const wrong = join(dir, 'kubeconfig-wrong-token');
    writeFileSync(wrong, readFileSync(s.kubeconfig, 'utf8').replace('test-token', 'wrong-token'));
    const source = new ApiSource({ kubeconfig: wrong, hostname: HOST, ...FAST });
    cleanups.push(() => source.stop());
    const started = source.start(s.rec);
    await waitFor('an error', () => s.rec.errors.length > 0);
    expect(s.rec.errors[0].message).toMatch(/401/);
    await source.stop();
    await expect(started).rejects.toThrow(/stopped before the initial list/);
    expect(s.rec.lists).toHaveLength(0);
    const errors = s.rec.errors.length;
    await sleep(200);
    expect(s.rec.errors.length).toBe(errors); // nothing after stop()
  });

  it('stops cleanly: no watch left open, nothing delivered after stop()', async () => {
    const s = await setup();
    await waitFor('watches', () => s.server.watchCount === 3);
    await s.source.stop();
    await waitFor('watches closed', () => s.server.watchCount === 0, 2000);
    s.server.create(svc('after-stop'));
    await sleep(200);
    expect(s.rec.events).toHaveLength(0);

    // Stopped while its watches are still connecting (the server holds them): none stays open.
    const t = await setup();
    await waitFor('watches', () => t.server.watchCount === 3);
    const n = t.server.requests.length;
    t.server.delayNext(3, 300, { only: 'watch' });
    t.server.dropWatches();
    await waitFor('reconnecting watches', () => t.server.requests.length === n + 3);
    await t.source.stop();
    await sleep(500);
    expect(t.server.watchCount).toBe(0);
    expect(t.rec.events).toHaveLength(0);
  });

  it('gives up on a list that takes too long and lists again', async () => {
    const s = await setup({ start: false, source: { listTimeoutMs: 300 } });
    s.server.delayNext(1, 2000, { only: 'list' });
    const ms = await (async () => {
      const t0 = Date.now();
      await s.source.start(s.rec);
      return Date.now() - t0;
    })();
    expect(ms).toBeLessThan(1500);
    expect(s.rec.errors.some((e) => /list failed/.test(e.message))).toBe(true);
    expect(s.rec.state()).toEqual(expected(s.server));
  });

  it('keeps working when the handler throws', async () => {
    const s = await setup({ start: false });
    let throwNext = true;
    const rec = s.rec;
    const handler: SourceHandler = {
      onList: (o, kinds) => rec.onList(o, kinds),
      onEvent: (e) => {
        rec.onEvent(e);
        if (throwNext) {
          throwNext = false;
          throw new Error('boom');
        }
      },
      onError: (e) => rec.onError(e),
    };
    await s.source.start(handler);
    s.server.create(svc('one'));
    await waitFor('first event', () => rec.events.length === 1);
    expect(rec.errors.some((e) => /boom/.test(e.message))).toBe(true);
    s.server.create(svc('two'));
    await inSync(s, 3000);
  });
});

describe('the test API server as its own process', () => {
  it('serves a scenario, takes controls over HTTP, and the source follows it', async () => {
    const kubeconfig = join(dir, 'kubeconfig-process');
    // A routing scenario (test/scenarios/README.md): the server serves its objects. Written here, so the test
    // needs no checkout beside the repository.
    const scenario = join(dir, 'scenario.yaml');
    writeFileSync(
      scenario,
      [
        'name: served',
        'pods: []',
        'objects:',
        '  - {apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop, uid: 0b6d2d4c-0001-4000-8000-000000000001},',
        '     spec: {clusterIP: 198.18.100.10, clusterIPs: [198.18.100.10], ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]}}',
        '  - {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, addressType: IPv4, ports: [{name: http, port: 8080, protocol: TCP}],',
        '     metadata: {name: web-x7k2p, namespace: shop, labels: {kubernetes.io/service-name: web}},',
        '     endpoints: [{addresses: [198.19.1.11], conditions: {ready: true}, nodeName: node-a}]}',
        'probes: []',
        '',
      ].join('\n'),
    );
    const child = spawn(
      process.execPath,
      [
        '--disable-warning=ExperimentalWarning',
        join(import.meta.dirname, '..', 'apiserver', 'main.ts'),
        '--kubeconfig',
        kubeconfig,
        '--from',
        scenario,
        '--bookmark-ms',
        '100',
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    cleanups.push(async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    });
    const line = await new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (c: Buffer) => {
        buf += c.toString();
        if (buf.includes('\n')) resolve(buf.split('\n')[0]);
      });
      child.on('exit', () => reject(new Error('the server exited')));
    });
    const info = JSON.parse(line);
    expect(info).toMatchObject({ event: 'listening', kubeconfig, objects: 2 });
    const control = (path: string, body: unknown = {}): Promise<any> =>
      fetch(`${info.url}/_test/${path}`, { method: 'POST', body: JSON.stringify(body) }).then((r) => r.json());

    const source = new ApiSource({ kubeconfig, hostname: HOST, ...FAST });
    cleanups.push(() => source.stop());
    const rec = new Recorder();
    await source.start(rec);
    expect(rec.state().map((k) => k.split('@')[0])).toEqual(['EndpointSlice/shop/web-x7k2p', 'Service/shop/web']);
    // The server keeps the file's uid (the proxy itself keeps only the fields it reads: model/k8s.ts readFields).
    const served = ((await fetch(`${info.url}/_test/objects`).then((r) => r.json())) as { result: unknown }).result as {
      kind: string;
      metadata?: { uid?: string };
    }[];
    expect(served.find((o) => o.kind === 'Service')?.metadata?.uid).toBe('0b6d2d4c-0001-4000-8000-000000000001');

    await control('apply', { apiVersion: 'v1', kind: 'List', items: [node(HOST), svc('api')] });
    await waitFor('events', () => rec.events.length === 2);
    expect((await control('drop-watches')).result).toBe(3);
    await control('delete', { kind: 'Service', namespace: 'shop', name: 'api' });
    await waitFor('delete after drop', () => rec.events.some((e) => e.type === 'delete' && e.object.metadata?.name === 'api'));
    await control('compact');
    await control('expire-watches');
    await waitFor('relist', () => rec.relists >= 1);
    expect(rec.state().map((k) => k.split('@')[0])).toEqual(['EndpointSlice/shop/web-x7k2p', `Node//${HOST}`, 'Service/shop/web']);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('loadKubeConfig', () => {
  it('explains a missing file, a missing cluster, plain http without skip-TLS, and a missing in-cluster environment', async () => {
    await expect(loadKubeConfig(join(dir, 'nope'))).rejects.toThrow(/no such file/);
    const noCluster = join(dir, 'no-cluster');
    writeFileSync(noCluster, 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\ncurrent-context: x\n');
    await expect(loadKubeConfig(noCluster)).rejects.toThrow(KubeConfigError);
    const plain = join(dir, 'plain-http');
    writeFileSync(
      plain,
      'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n',
    );
    await expect(loadKubeConfig(plain)).rejects.toThrow(/insecure-skip-tls-verify/);
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    delete process.env.KUBERNETES_SERVICE_HOST;
    delete process.env.KUBERNETES_SERVICE_PORT;
    try {
      await expect(loadKubeConfig(null)).rejects.toThrow(/--kubeconfig/);
    } finally {
      if (saved.host !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved.host;
      if (saved.port !== undefined) process.env.KUBERNETES_SERVICE_PORT = saved.port;
    }
  });
});

describe('an API server before Kubernetes 1.21 (EndpointSlices only as discovery.k8s.io/v1beta1)', () => {
  it('the source reads v1beta1 slices, and the model takes their node from the topology map', async () => {
    const s = await setup({ seed: false, start: false, server: { endpointSliceVersion: 'v1beta1' } });
    s.server.create(svc('web'));
    s.server.create({
      apiVersion: 'discovery.k8s.io/v1beta1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [
        { addresses: ['198.19.1.11'], conditions: { ready: true }, topology: { 'kubernetes.io/hostname': HOST, 'topology.kubernetes.io/zone': 'zone-a' } },
      ],
    });
    await s.source.start(s.rec);
    await inSync(s);
    const sliceObj = [...s.rec.view.values()].find((o) => o.kind === 'EndpointSlice')!;
    expect(sliceObj.apiVersion).toBe('discovery.k8s.io/v1beta1');
    const { state } = buildState([...s.rec.view.values()], { hostname: HOST, clusterCIDRs: [], masqueradeAll: false, nodePortAddresses: [] });
    expect(state.servicePorts.get('shop/web:http')!.localEndpoints.map((e) => e.id)).toEqual(['198.19.1.11:8080']);
    // A change still arrives by watch.
    s.server.remove('EndpointSlice', 'shop', 'web-1');
    await inSync(s);
  });
});
