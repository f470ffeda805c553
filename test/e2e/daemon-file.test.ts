// The daemon with the file source, checked by traffic in the scenario network: it follows endpoint and
// service changes within 2 s, a restart causes no failed connection, UDP clients move off a replaced
// endpoint (conntrack cleanup), and health and metrics report real values. Run for every mode.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { ModeName } from '../../src/modes/types.ts';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import { type ProbeTry, runProbe } from '../../src/lab/sandbox/probe.ts';
import { type ProxyProcess, proxyCommand, startProxy } from '../../src/lab/sandbox/proxy.ts';
import { parseProbeTarget, type Scenario } from '../../src/lab/sandbox/scenario.ts';
import { Topology } from '../../src/lab/sandbox/topology.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const MODES: readonly ModeName[] = ['iptables', 'nftables', 'userspace'];
const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'client-loop.ts');

const service = (name: string, ip: string, port: number, targetPort: number, protocol = 'TCP') => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'shop' },
  spec: { clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'p', port, targetPort, protocol }] },
});
const slice = (svc: string, port: number, ips: string[], protocol = 'TCP') => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${svc}-1`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'p', port, protocol }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: ip.startsWith('198.19.1.') ? 'node-a' : 'node-b' })),
});
const A1 = '198.19.1.11';
const B1 = '198.19.2.11';

const scenario: Scenario = {
  name: 'daemon-file',
  description: 'daemon behaviour with the file source',
  pods: [
    {
      name: 'a1',
      node: 'node-a',
      ip: A1,
      ports: [
        { port: 8080, protocol: 'tcp' },
        { port: 5353, protocol: 'udp' },
      ],
    },
    { name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] },
    {
      name: 'b1',
      node: 'node-b',
      ip: B1,
      ports: [
        { port: 8080, protocol: 'tcp' },
        { port: 5353, protocol: 'udp' },
      ],
    },
  ],
  objects: [],
  probes: [],
} as unknown as Scenario;

const answeredBy = (tries: ProbeTry[]) => [...new Set(tries.map((t) => (typeof t === 'object' ? t.answer.pod : t)))].sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const mode of MODES) {
  describe(`${mode}: the daemon with --from FILE`, () => {
    let topo: Topology;
    let dir: string;
    let file: string;
    let proxy: ProxyProcess;
    let objects: Record<string, unknown>;

    /** Replaces the file as a controller would: write a temp file, rename it over. */
    function publish() {
      const tmp = path.join(dir, 'next.yaml');
      writeFileSync(tmp, stringify({ apiVersion: 'v1', kind: 'List', items: Object.values(objects) }));
      renameSync(tmp, file);
    }

    async function probe(to: string, tries = 12, timeoutMs = 800) {
      return answeredBy((await runProbe(topo, { from: 'pod:a2', to: parseProbeTarget(to)!, tries, timeoutMs })).tries);
    }

    /**
     * Waits until a probe gives `want` on every try; returns when that probe started, after `since`. Every try
     * of that probe saw the new rules, so the change was in force by then: an upper bound of its latency.
     */
    async function within(to: string, want: string[], since: number, limitMs = 2000): Promise<number> {
      let last: string[] = [];
      while (performance.now() - since < limitMs + 3000) {
        const started = performance.now();
        last = want.includes('timeout') ? await probe(to, 2, 300) : await probe(to, want.length > 1 ? 12 : 4, 500);
        if (JSON.stringify(last) === JSON.stringify(want)) return started - since;
        await sleep(50);
      }
      throw new Error(`${to} still answered by ${last.join(',')} (want ${want.join(',')})\n${proxy.output().slice(-3000)}`);
    }

    interface ClientLine {
      t: number;
      at: number;
      ok: boolean;
      pod?: string;
      err?: string;
    }

    /** Starts test/e2e/fixtures/client-loop.ts in pod a2; `done()` waits for it to end (or stops it) and returns its lines. */
    function startClient(opts: { proto: 'tcp' | 'udp'; ip: string; port: number; intervalMs: number; durationMs: number; timeoutMs: number }) {
      const client: ChildProcess = topo.spawn('pod:a2', [process.execPath, '--disable-warning=ExperimentalWarning', FIXTURE, JSON.stringify(opts)]);
      let out = '';
      client.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
      const exited = new Promise((r) => client.once('exit', r));
      return {
        async done(stop: boolean): Promise<ClientLine[]> {
          if (stop) client.kill('SIGTERM');
          await exited;
          return out
            .trim()
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as ClientLine);
        },
      };
    }

    async function inNodeA(url: string): Promise<{ code: number; body: string }> {
      const js = `fetch(${JSON.stringify(url)}).then(async r => console.log(JSON.stringify({code: r.status, body: await r.text()})))`;
      const r = await topo.execOk('node-a', [process.execPath, '-e', js]);
      return JSON.parse(r.stdout);
    }

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), `kpt-daemon-${mode}-`));
      file = path.join(dir, 'objects.yaml');
      objects = {
        web: service('web', '198.18.100.10', 80, 8080),
        'web-slice': slice('web', 8080, [A1]),
        dns: service('dns', '198.18.100.70', 53, 5353, 'UDP'),
        'dns-slice': slice('dns', 5353, [A1], 'UDP'),
      };
      publish();
      topo = await Topology.create(scenario);
      await startPodServers(topo);
      proxy = await startProxy(topo, proxyCommand(mode, file));
    });

    afterAll(async () => {
      await proxy?.stop(5000);
      await topo?.destroy();
      rmSync(dir, { recursive: true, force: true });
    });

    it('routes the initial objects', async () => {
      expect(await probe('198.18.100.10:80/tcp')).toEqual(['a1']);
    });

    it('follows an endpoint added, then removed, within 2 s', async () => {
      objects['web-slice'] = slice('web', 8080, [A1, B1]);
      let t0 = performance.now();
      publish();
      expect(await within('198.18.100.10:80/tcp', ['a1', 'b1'], t0)).toBeLessThan(2000);
      objects['web-slice'] = slice('web', 8080, [B1]);
      t0 = performance.now();
      publish();
      expect(await within('198.18.100.10:80/tcp', ['b1'], t0)).toBeLessThan(2000);
    });

    it('follows a service added, then deleted, within 2 s', async () => {
      objects.api = service('api', '198.18.100.11', 81, 8080);
      objects['api-slice'] = slice('api', 8080, [A1]);
      let t0 = performance.now();
      publish();
      expect(await within('198.18.100.11:81/tcp', ['a1'], t0)).toBeLessThan(2000);
      delete objects.api;
      delete objects['api-slice'];
      t0 = performance.now();
      publish();
      // Without a service, nothing on the node answers that address: the tries time out.
      expect(await within('198.18.100.11:81/tcp', ['timeout'], t0)).toBeLessThan(2000);
    });

    it('keeps a UDP client (one source port) answered after its endpoint is replaced', async () => {
      const client = startClient({ proto: 'udp', ip: '198.18.100.70', port: 53, intervalMs: 100, durationMs: 8000, timeoutMs: 300 });
      await sleep(700);
      objects['dns-slice'] = slice('dns', 5353, [B1], 'UDP');
      const changedAt = Date.now();
      publish();
      const lines = await client.done(false);
      const before = lines.filter((l) => l.at < changedAt);
      expect(before.length).toBeGreaterThan(3);
      expect(before.every((l) => l.pod === 'a1')).toBe(true);
      // a1 still runs and would keep answering through a stale conntrack entry: from 2 s after the change on,
      // every answer must come from b1.
      const late = lines.filter((l) => l.at > changedAt + 2000);
      expect(late.length).toBeGreaterThan(10);
      expect(late.map((l) => l.pod ?? 'none').filter((p) => p !== 'b1')).toEqual([]);
    });

    it('reports health and metrics with real values', async () => {
      const h = await inNodeA('http://127.0.0.1:10256/healthz');
      expect(h.code).toBe(200);
      const body = JSON.parse(h.body) as { lastUpdated: string; currentTime: string; nodeEligible: boolean };
      expect(body.nodeEligible).toBe(true);
      expect(Date.parse(body.currentTime) - Date.parse(body.lastUpdated)).toBeLessThan(60_000);
      const m = await inNodeA('http://127.0.0.1:10249/metrics');
      expect(m.code).toBe(200);
      // Summed over the family's series (one per ip_family).
      const value = (name: string) => {
        const series = [...m.body.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))];
        return series.length === 0 ? Number.NaN : series.reduce((sum, x) => sum + Number(x[1]), 0);
      };
      // One observation per sync the proxy logged (changes close together may share a sync).
      expect(value('kubeproxy_sync_proxy_rules_duration_seconds_count')).toBe(proxy.syncs());
      expect(proxy.syncs()).toBeGreaterThanOrEqual(4);
      expect(value('kubeproxy_sync_full_proxy_rules_duration_seconds_count')).toBeGreaterThanOrEqual(1);
      expect(value('kubeproxy_sync_proxy_rules_endpoint_changes_total')).toBeGreaterThanOrEqual(5);
      expect(value('kubeproxy_sync_proxy_rules_service_changes_total')).toBeGreaterThanOrEqual(4);
      expect(Number(/^kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\} (\S+)$/m.exec(m.body)?.[1])).toBeGreaterThan(
        Date.now() / 1000 - 60,
      );
      expect(
        value(mode === 'nftables' ? 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total' : 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total'),
      ).toBe(0);
    });

    // A kernel mode leaves its rules in place and the new process replaces them atomically: no gap. The
    // userspace mode's listeners die with the process (the historic mode had the same gap): connections fail
    // from the stop until the new process has synced, and only then.
    const gapless = mode !== 'userspace';
    it(
      gapless
        ? 'restarts with no failed connection while a client keeps connecting'
        : 'restarts with failed connections only between the stop and the next sync',
      async () => {
        objects['web-slice'] = slice('web', 8080, [A1, B1]);
        const t0 = performance.now();
        publish();
        await within('198.18.100.10:80/tcp', ['a1', 'b1'], t0);
        const client = startClient({ proto: 'tcp', ip: '198.18.100.10', port: 80, intervalMs: 20, durationMs: 60_000, timeoutMs: 2000 });
        await sleep(500);
        const stoppedAt = Date.now();
        const end = await proxy.stop(10_000);
        expect(end.killed).toBe(false);
        await sleep(300); // rules stay in place with no proxy running
        proxy = await startProxy(topo, proxyCommand(mode, file));
        const syncedAt = Date.now();
        await sleep(800);
        const lines = await client.done(true);
        expect(lines.length).toBeGreaterThan(30);
        const failed = lines.filter((l) => !l.ok);
        if (gapless) expect(failed).toEqual([]);
        else {
          // Attempts made entirely before the stop, or begun after the new sync, all succeeded. (An attempt
          // still in flight when the proxy stops fails with it: it is one of the stop's casualties.)
          // (`t` counts from the client's start, which is when its first attempt began.)
          const endedAt = (l: ClientLine) => lines[0]!.at + l.t;
          expect(failed.filter((l) => endedAt(l) < stoppedAt || l.at > syncedAt)).toEqual([]);
          expect(lines.filter((l) => l.ok && l.at > syncedAt).length).toBeGreaterThan(10);
        }
      },
    );
  });
}
