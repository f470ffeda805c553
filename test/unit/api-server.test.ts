// The test API server speaks the list/watch protocol the way kube-apiserver does (checked here with plain
// HTTP requests), and its fault controls do what the source tests rely on.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseFieldSelector, parseLabelSelector, SelectorError } from '../apiserver/selectors.ts';
import { type ApiObject, TestApiServer } from '../apiserver/server.ts';

const TOKEN = 'test-token';
const dir = mkdtempSync(join(tmpdir(), 'kpt-apiserver-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function svc(name: string, ns = 'shop', labels: Record<string, string> = {}): ApiObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns, labels }, spec: { clusterIP: '198.18.100.10', ports: [{ port: 80 }] } };
}

async function get(server: TestApiServer, path: string, token: string | null = TOKEN): Promise<{ status: number; body: any }> {
  const r = await fetch(server.url + path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  return { status: r.status, body: await r.json() };
}

/** A watch read line by line; headersAt is when the response headers arrived. */
class WatchReader {
  events: { type: string; object: any }[] = [];
  ended = false;
  status = 0;
  private buf = '';
  private req: ReturnType<typeof request> | null = null;

  open(server: TestApiServer, path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = request(server.url + path, { headers: { Authorization: `Bearer ${TOKEN}` } }, (res) => {
        this.status = res.statusCode ?? 0;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          this.buf += chunk;
          let i = this.buf.indexOf('\n');
          while (i >= 0) {
            const line = this.buf.slice(0, i);
            this.buf = this.buf.slice(i + 1);
            if (line.trim()) this.events.push(JSON.parse(line));
            i = this.buf.indexOf('\n');
          }
        });
        res.on('end', () => (this.ended = true));
        res.on('close', () => (this.ended = true));
        res.on('error', () => (this.ended = true));
        resolve();
      });
      req.on('error', (e) => {
        this.ended = true;
        reject(e);
      });
      req.end();
      this.req = req;
    });
  }

  close(): void {
    this.req?.destroy();
  }
}

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('selectors', () => {
  it('parse and match the label selector grammar', () => {
    const s = parseLabelSelector('!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless');
    expect(s.matches({})).toBe(true);
    expect(s.matches({ app: 'x' })).toBe(true);
    expect(s.matches({ 'service.kubernetes.io/headless': '' })).toBe(false);
    expect(s.matches({ 'service.kubernetes.io/service-proxy-name': 'other' })).toBe(false);
    const t = parseLabelSelector('app=web, tier in (a, b), env notin (prod), zone!=z1, team');
    expect(t.matches({ app: 'web', tier: 'a', team: 't' })).toBe(true);
    expect(t.matches({ app: 'web', tier: 'b', env: 'dev', zone: 'z2', team: 't' })).toBe(true);
    expect(t.matches({ app: 'web', tier: 'c', team: 't' })).toBe(false);
    expect(t.matches({ app: 'web', tier: 'a', env: 'prod', team: 't' })).toBe(false);
    expect(t.matches({ app: 'web', tier: 'a', zone: 'z1', team: 't' })).toBe(false);
    expect(t.matches({ app: 'web', tier: 'a' })).toBe(false);
    expect(parseLabelSelector('a==b').matches({ a: 'b' })).toBe(true);
    expect(parseLabelSelector('').matches({ anything: 'x' })).toBe(true);
    expect(() => parseLabelSelector('a=(b')).toThrow(SelectorError);
  });

  it('field selectors take equality on supported fields only', () => {
    const f = parseFieldSelector('metadata.name=node-a', ['metadata.name']);
    expect(f.matches({ 'metadata.name': 'node-a' })).toBe(true);
    expect(f.matches({ 'metadata.name': 'node-b' })).toBe(false);
    expect(parseFieldSelector('metadata.name!=x', ['metadata.name']).matches({ 'metadata.name': 'y' })).toBe(true);
    expect(() => parseFieldSelector('spec.nodeName=x', ['metadata.name'])).toThrow(/not supported/);
    expect(() => parseFieldSelector('metadata.name in (a)', ['metadata.name'])).toThrow(SelectorError);
  });
});

describe('TestApiServer', () => {
  let server: TestApiServer;
  const readers: WatchReader[] = [];
  async function watch(path: string): Promise<WatchReader> {
    const w = new WatchReader();
    readers.push(w);
    await w.open(server, path);
    return w;
  }

  beforeEach(async () => {
    server = new TestApiServer();
    await server.start();
  });
  afterEach(async () => {
    for (const r of readers.splice(0)) r.close();
    await server.stop();
  });

  it('lists typed lists with a resourceVersion, items without kind, filtered by selectors and namespace', async () => {
    server.create(svc('web'));
    server.create(svc('other', 'shop', { 'service.kubernetes.io/service-proxy-name': 'x' }));
    server.create(svc('api', 'edge'));
    server.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' } });
    server.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-b' } });
    const all = await get(server, '/api/v1/services');
    expect(all.status).toBe(200);
    expect(all.body.kind).toBe('ServiceList');
    expect(all.body.apiVersion).toBe('v1');
    expect(all.body.metadata.resourceVersion).toBe(server.resourceVersion);
    expect(all.body.items).toHaveLength(3);
    expect(all.body.items[0].kind).toBeUndefined();
    expect(all.body.items[0].metadata.uid).toMatch(/-/);
    const sel = await get(server, `/api/v1/services?labelSelector=${encodeURIComponent('!service.kubernetes.io/service-proxy-name')}`);
    expect(sel.body.items.map((o: any) => o.metadata.name).sort()).toEqual(['api', 'web']);
    const ns = await get(server, '/api/v1/namespaces/edge/services');
    expect(ns.body.items.map((o: any) => o.metadata.name)).toEqual(['api']);
    const nodes = await get(server, `/api/v1/nodes?fieldSelector=${encodeURIComponent('metadata.name=node-a')}`);
    expect(nodes.body.kind).toBe('NodeList');
    expect(nodes.body.items.map((o: any) => o.metadata.name)).toEqual(['node-a']);
    const one = await get(server, '/api/v1/namespaces/shop/services/web');
    expect(one.body.kind).toBe('Service');
    expect((await get(server, '/apis/discovery.k8s.io/v1/endpointslices')).body.kind).toBe('EndpointSliceList');
  });

  it('answers errors with Status objects: 401 without the token, 404, 400 for bad selectors', async () => {
    const unauth = await get(server, '/api/v1/services', null);
    expect(unauth.status).toBe(401);
    expect(unauth.body).toMatchObject({ kind: 'Status', code: 401 });
    expect((await get(server, '/api/v1/pods')).status).toBe(404);
    const bad = await get(server, `/api/v1/nodes?fieldSelector=${encodeURIComponent('spec.x=y')}`);
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/not supported/);
  });

  it('streams watch events at once, replays from a resourceVersion, and turns selector transitions into ADDED/DELETED', async () => {
    server.create(svc('web'));
    const rv = server.resourceVersion;
    server.update({ ...svc('web'), spec: { type: 'NodePort' } });
    const sel = encodeURIComponent('!service.kubernetes.io/headless');
    const w = await watch(`/api/v1/services?watch=true&resourceVersion=${rv}&labelSelector=${sel}`);
    expect(w.status).toBe(200); // headers came before any event was due
    await waitFor(() => w.events.length === 1);
    expect(w.events[0]).toMatchObject({ type: 'MODIFIED', object: { kind: 'Service', spec: { type: 'NodePort' } } });
    server.update(svc('web', 'shop', { 'service.kubernetes.io/headless': '' }));
    await waitFor(() => w.events.length === 2);
    expect(w.events[1].type).toBe('DELETED');
    expect(w.events[1].object.metadata.resourceVersion).toBe(server.resourceVersion);
    server.update(svc('web'));
    server.remove('Service', 'shop', 'web');
    await waitFor(() => w.events.length === 4);
    expect(w.events.slice(2).map((e) => e.type)).toEqual(['ADDED', 'DELETED']);
    // Without a resourceVersion: the current objects first, as ADDED.
    server.create(svc('a'));
    server.create(svc('b'));
    const w2 = await watch('/api/v1/services?watch=true');
    await waitFor(() => w2.events.length === 2);
    expect(w2.events.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['ADDED a', 'ADDED b']);
  });

  it('sends bookmarks only to watches that asked, and ends a watch after timeoutSeconds', async () => {
    const w = await watch('/api/v1/services?watch=true&allowWatchBookmarks=true&timeoutSeconds=1');
    const plain = await watch('/api/v1/services?watch=true');
    server.bookmark();
    await waitFor(() => w.events.length === 1);
    expect(w.events[0]).toEqual({ type: 'BOOKMARK', object: { kind: 'Service', apiVersion: 'v1', metadata: { resourceVersion: server.resourceVersion } } });
    await waitFor(() => w.ended, 3000);
    expect(plain.ended).toBe(false);
    expect(plain.events).toEqual([]);
  });

  it('refuses a watch from a compacted resourceVersion with 410, as a status or as an ERROR event', async () => {
    server.create(svc('web'));
    const old = server.resourceVersion;
    server.create(svc('api'));
    server.compact();
    const r = await get(server, `/api/v1/services?watch=true&resourceVersion=${old}`);
    expect(r.status).toBe(410);
    expect(r.body).toMatchObject({ kind: 'Status', code: 410, reason: 'Expired' });
    // The current resourceVersion is still fine.
    const ok = await watch(`/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    expect(ok.status).toBe(200);
    server.tooOldAs = 'event';
    const w = await watch(`/api/v1/services?watch=true&resourceVersion=${old}`);
    expect(w.status).toBe(200);
    await waitFor(() => w.ended);
    expect(w.events).toEqual([{ type: 'ERROR', object: expect.objectContaining({ kind: 'Status', code: 410 }) }]);
    // expireWatches: an ERROR 410 event on every open watch, which then ends.
    expect(server.expireWatches()).toBe(1);
    await waitFor(() => ok.ended);
    expect(ok.events.at(-1)).toMatchObject({ type: 'ERROR', object: { code: 410 } });
  });

  it('drops watches, fails requests on demand, silences watches, and restarts on the same port with its data', async () => {
    server.create(svc('web'));
    const a = await watch('/api/v1/services?watch=true&resourceVersion=1');
    await waitFor(() => server.watchCount === 1);
    expect(server.dropWatches()).toBe(1);
    await waitFor(() => a.ended);

    server.failNext(2, { status: 503, only: 'list' });
    const w = await watch(`/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    expect(w.status).toBe(200); // watches are not affected by a list-only failure
    expect((await get(server, '/api/v1/services')).status).toBe(503);
    expect((await get(server, '/api/v1/services')).status).toBe(503);
    expect((await get(server, '/api/v1/services')).status).toBe(200);

    expect(server.silenceWatches()).toBe(1);
    server.update({ ...svc('web'), spec: {} });
    server.bookmark();
    await new Promise((r) => setTimeout(r, 100));
    expect(w.events).toEqual([]);
    expect(w.ended).toBe(false);

    const url = server.url;
    await server.stop();
    await waitFor(() => w.ended);
    await expect(fetch(`${url}/api/v1/services`)).rejects.toThrow();
    await server.start();
    expect(server.url).toBe(url);
    const after = await get(server, '/api/v1/services');
    expect(after.body.items.map((o: any) => o.metadata.name)).toEqual(['web']);
    expect(server.requests.filter((q) => q.status === 503)).toHaveLength(2);
  });

  it('accounts per client address: lists, watches (resumed ones and their replayed events), posted events, errors, bytes', async () => {
    server.create(svc('web'));
    const listed = await get(server, '/api/v1/services');
    const rv = listed.body.metadata.resourceVersion;
    const w = await watch(`/api/v1/services?watch=true&resourceVersion=${rv}`);
    server.update({ ...svc('web'), spec: {} });
    await waitFor(() => w.events.length === 1);
    await get(server, '/api/v1/services', null); // 401
    w.close();
    await waitFor(() => server.watchCount === 0);
    const again = await watch(`/api/v1/services?watch=true&resourceVersion=${rv}`); // resumes: replays the update
    await waitFor(() => again.events.length === 1);
    const event = { apiVersion: 'events.k8s.io/v1', kind: 'Event', metadata: { name: 'node-a.1', namespace: 'default' }, reason: 'Starting' };
    const posted = await fetch(`${server.url}/apis/events.k8s.io/v1/namespaces/default/events`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(event),
    });
    expect(posted.status).toBe(201);
    expect(server.postedEvents).toEqual([event]);
    const all = server.clientStats();
    expect(Object.keys(all)).toEqual(['127.0.0.1']);
    expect(all['127.0.0.1']).toMatchObject({
      lists: 1,
      watches: 2,
      resumedWatches: 2,
      gets: 0,
      eventPosts: 1,
      errors: 1,
      watchEvents: 2,
      replayedEvents: 1,
      openWatches: 1,
    });
    expect(all['127.0.0.1']!.listBytes).toBeGreaterThan(100);
    expect(all['127.0.0.1']!.watchBytes).toBeGreaterThan(100);
    expect(server.requests.every((q) => q.client === '127.0.0.1')).toBe(true);
  });

  it('writes a kubeconfig pointing at itself', async () => {
    const file = await server.writeKubeconfig(join(dir, 'kubeconfig'));
    const kc = parse(readFileSync(file, 'utf8'));
    expect(kc.clusters[0].cluster).toEqual({ server: server.url, 'insecure-skip-tls-verify': true });
    expect(kc.users[0].user).toEqual({ token: TOKEN });
    expect(kc['current-context']).toBe('test');
  });

  it('keeps a bounded history: a watch from before the oldest kept event gets 410', async () => {
    const small = new TestApiServer({ maxHistory: 2 });
    await small.start();
    try {
      small.create(svc('a'));
      const old = small.resourceVersion;
      small.create(svc('b'));
      small.create(svc('c'));
      small.create(svc('d'));
      expect((await get(small, `/api/v1/services?watch=true&resourceVersion=${old}`)).status).toBe(410);
    } finally {
      await small.stop();
    }
  });
});
