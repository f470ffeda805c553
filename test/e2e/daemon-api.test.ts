// The daemon against an API server speaking the real list/watch protocol (test/apiserver), both inside
// node-a: every fault is followed by a change that must reach the data path, checked by traffic.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ModeName } from '../../src/modes/types.ts';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import { runProbe } from '../../src/lab/sandbox/probe.ts';
import { binCommand, type ProxyProcess, startProxy } from '../../src/lab/sandbox/proxy.ts';
import { REPO_ROOT, type Scenario, parseProbeTarget } from '../../src/lab/sandbox/scenario.ts';
import { ADDRESSES, Topology } from '../../src/lab/sandbox/topology.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const MODES: readonly ModeName[] = ['iptables', 'nftables', 'userspace'];
const API_MAIN = path.join(REPO_ROOT, 'test', 'apiserver', 'main.ts');
const PODS = { a1: '198.19.1.11', b1: '198.19.2.11', c1: '198.19.1.13' } as const;

const service = (name: string, ip: string) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'shop' },
  spec: { clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
});
// This node's Node: upstream's /healthz needs it (503 without), and a proxy restarts when it is deleted.
const NODE = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' } };
const slice = (svc: string, pods: (keyof typeof PODS)[]) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${svc}-1`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: pods.map((p) => ({ addresses: [PODS[p]], conditions: { ready: true }, nodeName: p === 'b1' ? 'node-b' : 'node-a' })),
});

const scenario = {
  name: 'daemon-api',
  description: 'daemon behaviour with the API source',
  pods: [
    { name: 'a1', node: 'node-a', ip: PODS.a1, ports: [{ port: 8080, protocol: 'tcp' }] },
    { name: 'c1', node: 'node-a', ip: PODS.c1, ports: [{ port: 8080, protocol: 'tcp' }] },
    { name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] },
    { name: 'b1', node: 'node-b', ip: PODS.b1, ports: [{ port: 8080, protocol: 'tcp' }] },
  ],
  objects: [],
  probes: [],
} as unknown as Scenario;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const mode of MODES) {
  describe(`${mode}: the daemon against an API server`, () => {
    let topo: Topology;
    let dir: string;
    let api: ChildProcess;
    let apiUrl = '';
    let proxy: ProxyProcess;
    const kubeconfig = () => path.join(dir, 'kubeconfig');

    /** Starts the test API server in node-a (on the same port as before when restarting), loaded from `objects`. */
    async function startApi(objects: unknown[], port = 0, initialRv?: number): Promise<void> {
      const from = path.join(dir, 'api-objects.yaml');
      writeFileSync(from, stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
      api = topo.spawn('node-a', [
        process.execPath,
        '--disable-warning=ExperimentalWarning',
        API_MAIN,
        '--port',
        String(port),
        '--kubeconfig',
        kubeconfig(),
        '--from',
        from,
        '--bookmark-ms',
        '1000',
        ...(initialRv ? ['--initial-rv', String(initialRv)] : []),
      ]);
      apiUrl = await new Promise<string>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error(`the test API server did not start: ${out}`)), 15_000);
        api.stdout?.setEncoding('utf8').on('data', (d: string) => {
          out += d;
          const m = /"url":"([^"]+)"/.exec(out);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        api.once('exit', (code) => reject(new Error(`the test API server exited (${code}): ${out}`)));
      });
    }

    /** POSTs to a control endpoint of the API server, from inside node-a. */
    async function ctl(pathname: string, body: unknown = {}): Promise<unknown> {
      const js = `fetch(${JSON.stringify(apiUrl + pathname)}, {method: 'POST', body: ${JSON.stringify(JSON.stringify(body))}}).then(async r => { const t = await r.text(); if (!r.ok) { console.error(t); process.exit(1); } console.log(t); })`;
      const r = await topo.execOk('node-a', [process.execPath, '-e', js]);
      return JSON.parse(r.stdout);
    }

    async function answeredBy(to: string): Promise<string[]> {
      const r = await runProbe(topo, { from: 'pod:a2', to: parseProbeTarget(to)!, tries: 8, timeoutMs: 500 });
      return [...new Set(r.tries.map((t) => (typeof t === 'object' ? t.answer.pod : t)))].sort();
    }

    /** Waits (up to limitMs) until the ClusterIP is answered by exactly `want`. */
    async function expectRouted(to: string, want: string[], limitMs = 15_000): Promise<void> {
      const t0 = Date.now();
      let last: string[] = [];
      while (Date.now() - t0 < limitMs) {
        last = await answeredBy(to);
        if (JSON.stringify(last) === JSON.stringify(want)) return;
        await sleep(100);
      }
      throw new Error(`${to} answered by ${last.join(',')}, want ${want.join(',')}\n${proxy.output().slice(-4000)}`);
    }

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), `kpt-api-${mode}-`));
      topo = await Topology.create(scenario);
      await startPodServers(topo);
      await startApi([NODE, service('web', '198.18.100.10'), slice('web', ['a1'])]);
      const argv = binCommand(['--mode', mode, '--kubeconfig', kubeconfig(), '--hostname-override', 'node-a', '--cluster-cidr', ADDRESSES.clusterCIDR]);
      proxy = await startProxy(topo, argv, { syncTimeoutMs: 30_000 });
    });

    afterAll(async () => {
      await proxy?.stop(5000);
      api?.kill('SIGTERM');
      await topo?.destroy();
      rmSync(dir, { recursive: true, force: true });
    });

    it('lists and routes, then follows watch events', async () => {
      await expectRouted('198.18.100.10:80/tcp', ['a1']);
      await ctl('/_test/apply', slice('web', ['a1', 'b1']));
      await expectRouted('198.18.100.10:80/tcp', ['a1', 'b1'], 3000);
    });

    it('recovers from dropped watches', async () => {
      await ctl('/_test/drop-watches');
      await sleep(200);
      await ctl('/_test/apply', slice('web', ['b1']));
      await expectRouted('198.18.100.10:80/tcp', ['b1']);
    });

    it('relists after 410 Gone as an ERROR event', async () => {
      await ctl('/_test/expire-watches');
      await ctl('/_test/apply', slice('web', ['c1']));
      await expectRouted('198.18.100.10:80/tcp', ['c1']);
      // What reading the relist left is given back, as after the first lists.
      expect(proxy.output()).toContain('"event":"relist-gc"');
    });

    it('relists after 410 Gone as an HTTP status (resourceVersion compacted away)', async () => {
      // Changes while no watch runs, then compaction: the resumed watch is answered 410.
      await ctl('/_test/fail-next', { n: 2, status: 503, only: 'watch' });
      await ctl('/_test/drop-watches');
      await ctl('/_test/apply', service('api', '198.18.100.11'));
      await ctl('/_test/apply', slice('api', ['a1']));
      await ctl('/_test/compact');
      await expectRouted('198.18.100.11:80/tcp', ['a1']);
    });

    it('recovers from 5xx answers (the informer is restarted)', async () => {
      await ctl('/_test/fail-next', { n: 3, status: 500 });
      await ctl('/_test/drop-watches');
      await ctl('/_test/apply', slice('api', ['b1']));
      await expectRouted('198.18.100.11:80/tcp', ['b1'], 20_000);
    });

    it('answers /healthz 503 (and /livez 200) while its Node is being deleted', async () => {
      const get = async (p: string) => {
        const js = `fetch('http://127.0.0.1:10256${p}').then(async r => console.log(JSON.stringify({code: r.status, body: await r.json()})))`;
        return JSON.parse((await topo.execOk('node-a', [process.execPath, '-e', js])).stdout) as { code: number; body: { nodeEligible?: boolean } };
      };
      expect(await get('/healthz')).toMatchObject({ code: 200, body: { nodeEligible: true } });
      const node = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a', deletionTimestamp: new Date().toISOString(), finalizers: ['test'] } };
      await ctl('/_test/apply', node);
      const t0 = Date.now();
      let h = await get('/healthz');
      while (h.code === 200 && Date.now() - t0 < 5000) {
        await sleep(100);
        h = await get('/healthz');
      }
      expect(h).toMatchObject({ code: 503, body: { nodeEligible: false } });
      expect((await get('/livez')).code).toBe(200);
      // Back to a healthy Node (deleting it would restart the proxy, as upstream, ending the following tests).
      await ctl('/_test/apply', NODE);
    });

    it('keeps routing while the API server is down, and catches up after it restarts', async () => {
      const port = Number(new URL(apiUrl).port);
      const exited = new Promise((r) => api.once('exit', r));
      api.kill('SIGTERM');
      await exited;
      // Losing the API server never clears rules in place.
      await sleep(1500);
      expect(await answeredBy('198.18.100.11:80/tcp')).toEqual(['b1']);
      expect(await answeredBy('198.18.100.10:80/tcp')).toEqual(['c1']);
      // A new server on the same port, with a change made while the old one was down; its storage moved on
      // (resourceVersions went up and were compacted), as after a real control-plane outage.
      await startApi(
        [NODE, service('web', '198.18.100.10'), slice('web', ['a1', 'c1']), service('api', '198.18.100.11'), slice('api', ['b1'])],
        port,
        1_000_000,
      );
      await expectRouted('198.18.100.10:80/tcp', ['a1', 'c1'], 30_000);
      await expectRouted('198.18.100.11:80/tcp', ['b1'], 10_000);
    });
  });
}
