// Reaching the API server as kube-proxy does: kubeadm's kube-proxy kubeconfig (user.tokenFile) authenticates,
// the token file is re-read as client-go's CachedFileTokenSource (rotated service-account tokens), --master
// replaces the server, requests keep to qps/burst, serviceProxyName selects, and every request is reported
// for the rest_client_* metrics. Against the test API server.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import type { KubeObject } from '../../src/model/k8s.ts';
import { type RequestRecord, TokenBucket } from '../../src/watch/api-client.ts';
import { TOKEN_REREAD_MS, TokenFile, readKubeConfig } from '../../src/watch/kubeconfig.ts';
import { ApiSource, createEventRecorder, loadKubeConfig, proxyLabelSelector } from '../../src/watch/api.ts';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TestApiServer } from '../apiserver/server.ts';

const dir = mkdtempSync(join(tmpdir(), 'kpt-apiclient-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** kubeadm's kube-proxy kubeconfig (kubeconfig.conf in its ConfigMap), pointed at `server`. */
function kubeadmKubeconfig(server: string, tokenFile: string, extraUser: Record<string, unknown> = {}): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ cluster: { 'certificate-authority': '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt', server }, name: 'default' }],
    contexts: [{ context: { cluster: 'default', namespace: 'default', user: 'default' }, name: 'default' }],
    'current-context': 'default',
    users: [{ name: 'default', user: { tokenFile, ...extraUser } }],
  });
}

/** The same, for a plain-http test server (no CA; a plain http:// server needs insecure-skip-tls-verify). */
function testKubeconfig(server: TestApiServer, tokenFile: string, extraUser: Record<string, unknown> = {}): string {
  const f = join(dir, `kubeconfig-${Math.random().toString(36).slice(2)}`);
  writeFileSync(
    f,
    kubeadmKubeconfig(server.url, tokenFile, extraUser).replace(
      'certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt',
      'insecure-skip-tls-verify: true',
    ),
  );
  return f;
}

async function startServer(token: string): Promise<TestApiServer> {
  const server = new TestApiServer({ token, bookmarkIntervalMs: 100 });
  await server.start();
  cleanups.push(() => server.stop());
  server.create({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { clusterIP: '198.18.100.10', ports: [{ port: 80 }] },
  });
  server.create({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'mine', namespace: 'shop', labels: { 'service.kubernetes.io/service-proxy-name': 'edge' } },
    spec: { clusterIP: '198.18.100.11', ports: [{ port: 80 }] },
  });
  server.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' } });
  return server;
}

async function listed(source: ApiSource): Promise<KubeObject[]> {
  const objects: KubeObject[] = [];
  cleanups.push(() => source.stop());
  // One list per kind: everything listed.
  await source.start({ onList: (o) => objects.push(...o), onEvent: () => {}, onError: () => {} });
  return objects;
}

const names = (objects: KubeObject[]) => objects.map((o) => `${o.kind}/${o.metadata?.name}`).sort();

describe("kubeadm's kube-proxy kubeconfig", () => {
  it('authenticates with user.tokenFile and lists', async () => {
    const server = await startServer('sa-token-1');
    const tokenFile = join(dir, 'token-a');
    writeFileSync(tokenFile, 'sa-token-1\n');
    const objects = await listed(new ApiSource({ kubeconfig: testKubeconfig(server, tokenFile), hostname: 'node-a' }));
    expect(names(objects)).toEqual(['Node/node-a', 'Service/web']);
  });

  it('prefers the token file over a static token, as client-go', async () => {
    const server = await startServer('from-file');
    const tokenFile = join(dir, 'token-b');
    writeFileSync(tokenFile, 'from-file');
    const objects = await listed(new ApiSource({ kubeconfig: testKubeconfig(server, tokenFile, { token: 'stale-static' }), hostname: 'node-a' }));
    expect(names(objects)).toContain('Service/web');
  });

  it('resolves a relative tokenFile against the kubeconfig, and reads the file as written', async () => {
    writeFileSync(join(dir, 'rel-token'), 't');
    const k = join(dir, 'kubeconfig-rel');
    writeFileSync(k, kubeadmKubeconfig('https://198.18.0.1:6443', 'rel-token'));
    expect((await readKubeConfig(k)).user.fields.tokenFile).toBe(join(dir, 'rel-token'));
  });

  it('--master replaces the kubeconfig server', async () => {
    const server = await startServer('sa');
    const tokenFile = join(dir, 'token-m');
    writeFileSync(tokenFile, 'sa');
    const k = join(dir, 'kubeconfig-master');
    writeFileSync(k, kubeadmKubeconfig('http://198.18.255.254:1', tokenFile).replace(/certificate-authority: .*/, 'insecure-skip-tls-verify: true'));
    expect((await loadKubeConfig(k, server.url)).server).toBe(server.url);
    const objects = await listed(new ApiSource({ kubeconfig: k, master: server.url, hostname: 'node-a' }));
    expect(names(objects)).toContain('Service/web');
  });
});

describe('rotated service-account tokens', () => {
  it('re-reads the token file once the token is a minute old; keeps the last token while the file is unreadable', async () => {
    let now = 0;
    const file = join(dir, 'token-rot');
    writeFileSync(file, '  first\n');
    const auth = new TokenFile(file, 'static', () => now);
    expect(await auth.token()).toBe('first');
    writeFileSync(file, 'second');
    now += TOKEN_REREAD_MS - 1;
    expect(await auth.token()).toBe('first');
    now += 2;
    expect(await auth.token()).toBe('second');
    rmSync(file);
    now += TOKEN_REREAD_MS;
    expect(await auth.token()).toBe('second');
    const fresh = new TokenFile(file, 'static', () => now);
    expect(await fresh.token()).toBe('static');
    const headers: Record<string, string> = {};
    await auth.authenticate({ headers });
    expect(headers.Authorization).toBe('Bearer second');
  });

  it('the loaded kubeconfig follows a rotated token file: requests after the re-read carry the new token', async () => {
    const tokenFile = join(dir, 'token-live');
    writeFileSync(tokenFile, 'old');
    const k = join(dir, 'kubeconfig-live');
    writeFileSync(
      k,
      kubeadmKubeconfig('https://198.18.0.1:6443', tokenFile, { token: 'static' }).replace(/certificate-authority: .*/, 'insecure-skip-tls-verify: true'),
    );
    const access = await loadKubeConfig(k);
    const authorization = async () => {
      const r = { headers: {} as Record<string, string> };
      await access.authenticate(r);
      return r.headers.Authorization;
    };
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      expect(await authorization()).toBe('Bearer old');
      writeFileSync(tokenFile, 'rotated\n');
      expect(await authorization()).toBe('Bearer old');
      vi.setSystemTime(Date.now() + TOKEN_REREAD_MS + 1);
      expect(await authorization()).toBe('Bearer rotated');
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('rate limit and selection', () => {
  it("keeps to qps after a burst, client-go's token bucket", async () => {
    let now = 0;
    const bucket = new TokenBucket(5, 2, () => now);
    expect(await bucket.take()).toBe(0);
    expect(await bucket.take()).toBe(0);
    const started = performance.now();
    expect(await bucket.take()).toBeCloseTo(200, 0);
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
    now += 1000;
    expect(await bucket.take()).toBe(0);
    expect(await new TokenBucket(-1, 1).take()).toBe(0);
  });

  it('paces the initial lists and watches of a source at qps, and reports every request', async () => {
    const server = await startServer('t');
    const tokenFile = join(dir, 'token-q');
    writeFileSync(tokenFile, 't');
    const requests: RequestRecord[] = [];
    const waits: number[] = [];
    const started = performance.now();
    await listed(
      new ApiSource({
        kubeconfig: testKubeconfig(server, tokenFile),
        hostname: 'node-a',
        qps: 10,
        burst: 1,
        observer: { rateLimited: (_v, _h, s) => waits.push(s), request: (r) => requests.push(r) },
      }),
    );
    // Three lists, one request at once and then one per 100 ms.
    expect(performance.now() - started).toBeGreaterThanOrEqual(180);
    const lists = requests.filter((r) => r.responseBytes !== null);
    expect(lists).toHaveLength(3);
    expect(lists.every((r) => r.verb === 'GET' && r.code === '200' && r.host === new URL(server.url).host)).toBe(true);
    expect(Math.max(...waits)).toBeGreaterThan(0.05);
  });

  it('reports a refused request with its status', async () => {
    const server = await startServer('right');
    const tokenFile = join(dir, 'token-w');
    writeFileSync(tokenFile, 'wrong');
    const requests: RequestRecord[] = [];
    const source = new ApiSource({
      kubeconfig: testKubeconfig(server, tokenFile),
      hostname: 'node-a',
      backoffInitialMs: 50,
      observer: { rateLimited: () => {}, request: (r) => requests.push(r) },
    });
    cleanups.push(() => source.stop());
    void source.start({ onList: () => {}, onEvent: () => {}, onError: () => {} }).catch(() => {});
    for (let i = 0; i < 100 && requests.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(requests[0]).toMatchObject({ code: '401' });
  });

  it('selects by serviceProxyName as upstream', async () => {
    expect(proxyLabelSelector('')).toBe('!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless');
    expect(proxyLabelSelector('edge')).toBe('service.kubernetes.io/service-proxy-name=edge,!service.kubernetes.io/headless');
    const server = await startServer('t');
    const tokenFile = join(dir, 'token-s');
    writeFileSync(tokenFile, 't');
    const objects = await listed(new ApiSource({ kubeconfig: testKubeconfig(server, tokenFile), hostname: 'node-a', serviceProxyName: 'edge' }));
    expect(names(objects)).toEqual(['Node/node-a', 'Service/mine']);
  });
});

describe('Kubernetes Events', () => {
  it("posts upstream's Starting event about the Node (events.k8s.io/v1, reporting controller kube-proxy) with the token", async () => {
    const seen: { url: string; method: string; auth: string; body: any }[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ url: req.url ?? '', method: req.method ?? '', auth: String(req.headers.authorization), body: JSON.parse(body) });
        res.writeHead(201, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const tokenFile = join(dir, 'token-ev');
    writeFileSync(tokenFile, 'ev-token');
    const k = join(dir, 'kubeconfig-ev');
    writeFileSync(
      k,
      kubeadmKubeconfig(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, tokenFile).replace(
        /certificate-authority: .*/,
        'insecure-skip-tls-verify: true',
      ),
    );
    const requests: RequestRecord[] = [];
    const recorder = await createEventRecorder({ kubeconfig: k, hostname: 'node-a' }, { rateLimited: () => {}, request: (r) => requests.push(r) });
    expect(await recorder.record('Normal', 'Starting', 'StartKubeProxy')).toBe(true);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ url: '/apis/events.k8s.io/v1/namespaces/default/events', method: 'POST', auth: 'Bearer ev-token' });
    expect(seen[0]!.body).toMatchObject({
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { namespace: 'default' },
      reportingController: 'kube-proxy',
      reportingInstance: 'kube-proxy-node-a',
      action: 'StartKubeProxy',
      reason: 'Starting',
      regarding: { kind: 'Node', name: 'node-a', uid: 'node-a', apiVersion: 'v1' },
      type: 'Normal',
    });
    expect(seen[0]!.body.metadata.name).toMatch(/^node-a\.[0-9a-f]+$/);
    expect(seen[0]!.body.eventTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(requests).toMatchObject([{ verb: 'POST', code: '201' }]);
  });
});
