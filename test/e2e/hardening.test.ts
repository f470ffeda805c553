// Hostile objects and floods against a live proxy in the scenario network, in every mode, with real traffic:
//   - a Service whose externalIPs name another Service's ClusterIP or LB IP takes over nothing (CVE-2020-8554 shape);
//   - ~3,000 idle connections to the public health port neither crash the proxy nor stop its syncs;
//   - a UDP service losing 100 endpoints behind 100 externalIPs (10,000 conntrack deletions) does not hold up
//     the next change.
import { type ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import { type ProbeTry, runProbe } from '../../src/lab/sandbox/probe.ts';
import { type ProxyProcess, proxyCommand, startProxy } from '../../src/lab/sandbox/proxy.ts';
import { parseProbeTarget, type Scenario } from '../../src/lab/sandbox/scenario.ts';
import { Topology } from '../../src/lab/sandbox/topology.ts';
import { DEFAULT_LIMITS } from '../../src/daemon/http.ts';
import { MODE_DEFINITIONS } from '../../src/modes/index.ts';
import { makeObjects } from '../../bench/synthetic.ts';
import type { ModeName } from '../../src/modes/types.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const FLOOD = path.join(import.meta.dirname, 'fixtures', 'flood.ts');
const A1 = '198.19.1.11';
const B1 = '198.19.2.11';
const M1 = '198.19.2.66';

const service = (ns: string, name: string, spec: Record<string, unknown>, status?: Record<string, unknown>) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec,
  ...(status ? { status } : {}),
});
const slice = (ns: string, svc: string, port: number, ips: string[], protocol = 'TCP') => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${svc}-1`, namespace: ns, labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'p', port, protocol }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: ip.startsWith('198.19.1.') ? 'node-a' : 'node-b' })),
});

const tcp = (port: number) => ({ port, protocol: 'tcp' as const });
const scenario = {
  name: 'hardening',
  description: 'hostile objects and floods',
  pods: [
    { name: 'a1', node: 'node-a', ip: A1, ports: [tcp(8080)] },
    { name: 'b1', node: 'node-b', ip: B1, ports: [tcp(8080)] },
    { name: 'm1', node: 'node-b', ip: M1, ports: [tcp(8080)] },
    { name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] },
  ],
  objects: [],
  probes: [],
} as unknown as Scenario;

function baseObjects(victimEndpoint: string): Record<string, unknown> {
  return {
    victim: service('bank', 'victim', { clusterIP: '198.18.100.10', clusterIPs: ['198.18.100.10'], ports: [{ name: 'p', port: 80, targetPort: 8080 }] }),
    victimSlice: slice('bank', 'victim', 8080, [victimEndpoint]),
    lb: service(
      'bank',
      'lb',
      {
        type: 'LoadBalancer',
        clusterIP: '198.18.100.20',
        clusterIPs: ['198.18.100.20'],
        loadBalancerSourceRanges: ['198.19.0.0/16'],
        ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort: 30020 }],
      },
      { loadBalancer: { ingress: [{ ip: '198.18.200.20' }] } },
    ),
    lbSlice: slice('bank', 'lb', 8080, [B1]),
    // The attacker: a Service in another namespace whose externalIPs name the victim's ClusterIP and the LB IP.
    evil: service('mallory', 'evil', {
      clusterIP: '198.18.100.66',
      clusterIPs: ['198.18.100.66'],
      externalIPs: ['198.18.100.10', '198.18.200.20'],
      ports: [{ name: 'p', port: 80, targetPort: 8080 }],
    }),
    evilSlice: slice('mallory', 'evil', 8080, [M1]),
  };
}

/** 100 externalIPs x 100 endpoints of one UDP service port. */
function bigUdp(endpoints: number): Record<string, unknown> {
  const externalIPs = Array.from({ length: 100 }, (_, i) => `198.18.201.${i + 1}`);
  const ips = Array.from({ length: endpoints }, (_, i) => `198.19.2.${100 + i}`);
  return {
    big: service('dns', 'big', {
      clusterIP: '198.18.100.53',
      clusterIPs: ['198.18.100.53'],
      externalIPs,
      ports: [{ name: 'p', port: 53, targetPort: 5353, protocol: 'UDP' }],
    }),
    bigSlice: slice('dns', 'big', 5353, ips, 'UDP'),
  };
}

const answeredBy = (tries: ProbeTry[]) => [...new Set(tries.map((t) => (typeof t === 'object' ? t.answer.pod : t)))].sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const mode of Object.keys(MODE_DEFINITIONS) as ModeName[]) {
  const kernel = MODE_DEFINITIONS[mode].keepsClientAddress;
  describe(`${mode}: hostile objects and floods`, () => {
    let topo: Topology;
    let dir: string;
    let file: string;
    let proxy: ProxyProcess;
    let objects: Record<string, unknown>;

    function publish(): void {
      const tmp = path.join(dir, 'next.json');
      writeFileSync(tmp, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: Object.values(objects) }));
      renameSync(tmp, file);
    }
    async function probe(from: 'pod:a2' | 'client', to: string, tries = 8, timeoutMs = 800): Promise<string[]> {
      return answeredBy((await runProbe(topo, { from, to: parseProbeTarget(to)!, tries, timeoutMs })).tries);
    }
    /** How long after `since` a probe first gives `want` (throws past the limit). */
    async function until(to: string, want: string[], since: number, limitMs: number): Promise<number> {
      let last: string[] = [];
      while (performance.now() - since < limitMs) {
        last = await probe('pod:a2', to, 4, 500);
        if (JSON.stringify(last) === JSON.stringify(want)) return performance.now() - since;
        await sleep(50);
      }
      throw new Error(`${to} still answered by ${last.join(',')} after ${limitMs} ms (want ${want.join(',')})\n${proxy.output().slice(-3000)}`);
    }

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), `kpt-hardening-${mode}-`));
      file = path.join(dir, 'objects.json');
      objects = baseObjects(A1);
      publish();
      topo = await Topology.create(scenario);
      await startPodServers(topo);
      proxy = await startProxy(topo, proxyCommand(mode, file), { syncTimeoutMs: 30_000 });
    }, 120_000);

    afterAll(async () => {
      await proxy?.stop(10_000).catch(() => {});
      await topo?.destroy();
      rmSync(dir, { recursive: true, force: true });
    });

    it("an externalIP naming another service's ClusterIP takes over nothing: the ClusterIP reaches its own endpoint", async () => {
      expect(await probe('pod:a2', '198.18.100.10:80/tcp', 12)).toEqual(['a1']);
    });

    // (A userspace proxy has no source ranges to skip: its listener sees the client address itself.)
    if (kernel)
      it("an externalIP naming an LB IP cannot skip the LB's source ranges", async () => {
        expect(await probe('pod:a2', '198.18.200.20:80/tcp')).toEqual(['b1']);
        // The outside client is not in 198.19.0.0/16: dropped, not sent to the attacker's endpoint.
        expect(await probe('client', '198.18.200.20:80/tcp', 2, 700)).toEqual(['timeout']);
      });

    it('~3,000 idle connections to the public health port: the proxy stays up, answers /healthz and keeps syncing', async () => {
      const flood: ChildProcess = topo.spawn('client', [
        process.execPath,
        '--disable-warning=ExperimentalWarning',
        FLOOD,
        JSON.stringify({ host: '198.18.0.1', port: 10256, count: 3000, holdMs: 20_000 }),
      ]);
      let out = '';
      flood.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
      const floodDone = new Promise((r) => flood.once('exit', r));
      const floodStart = performance.now();
      await sleep(1500);
      // A change needs a spawn (iptables-restore / nft) with the flood in place.
      objects.victimSlice = slice('bank', 'victim', 8080, [B1]);
      const since = performance.now();
      publish();
      expect(await until('198.18.100.10:80/tcp', ['b1'], since, 5_000)).toBeLessThan(5_000);
      const health = await topo.exec('node-a', [
        process.execPath,
        '-e',
        'fetch("http://127.0.0.1:10256/healthz").then(r => console.log(r.status), e => console.log("error", e.message))',
      ]);
      expect(health.stdout.trim()).toBe('200');
      // What the server holds, well past its idle timeout (5 s) and with the flood still holding every connection:
      // at most what it admits from one source. (Counted on the node: 3,000 SYNs at once overflow the accept
      // queue, and a connection the kernel dropped there is open for the client but was never the server's, so the
      // client's count of connections closed by the server varies with the machine's load: 2,612-3,000.)
      await sleep(Math.max(0, 12_000 - (performance.now() - floodStart)));
      const held = await topo.exec('node-a', ['ss', '-Htn', 'state', 'established', '( sport = :10256 )']);
      const heldCount = held.stdout.split('\n').filter((l) => l.trim() !== '').length;
      expect(heldCount, held.stdout).toBeLessThanOrEqual(DEFAULT_LIMITS.maxPerSource);
      await floodDone;
      const result = JSON.parse(out.trim().split('\n').pop() || '{}') as { opened: number; closedByServer: number };
      // Over the budget, the server closed them at once: most of them.
      expect(result.closedByServer, JSON.stringify(result)).toBeGreaterThan(2_000);
      expect(proxy.child.exitCode).toBeNull();
    }, 60_000);

    // Before the deletions were batched and moved off the sync path, this change waited 149 s. The bound leaves
    // room for the 1 s minimum sync period between the two changes and for a busy 2-core machine.
    it('10,000 UDP conntrack deletions (100 externalIPs x 100 endpoints) do not hold up the next change', async () => {
      Object.assign(objects, bigUdp(100));
      publish();
      await proxy.nextSync(20_000);
      await sleep(500);
      // The endpoints leave; right after, an unrelated change must still land within 2 s.
      Object.assign(objects, bigUdp(0));
      publish();
      await sleep(300);
      objects.victimSlice = slice('bank', 'victim', 8080, [A1]);
      const since = performance.now();
      publish();
      expect(await until('198.18.100.10:80/tcp', ['a1'], since, 4_000)).toBeLessThan(4_000);
    }, 60_000);
  });
}

// A proxy killed in the middle of a sync (SIGKILL: no handler runs) leaves whatever the kernel tool had
// committed; the next proxy must converge from there. 1,500 services make the first sync long enough to be
// cut in the middle.
for (const mode of Object.keys(MODE_DEFINITIONS) as ModeName[]) {
  describe(`${mode}: SIGKILL in the middle of a sync, then a restart`, () => {
    let topo: Topology;
    let dir: string;

    afterAll(async () => {
      await topo?.destroy();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('the restarted proxy converges: the service answers from its endpoint', async () => {
      dir = mkdtempSync(path.join(tmpdir(), `kpt-sigkill-${mode}-`));
      const file = path.join(dir, 'objects.json');
      const items = [...Object.values(baseObjects(A1)), ...makeObjects(1500, 4)];
      writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
      topo = await Topology.create(scenario);
      await startPodServers(topo);
      const first = topo.spawn('node-a', proxyCommand(mode, file));
      let stderr = '';
      first.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      // Kill it once its first sync has started (it logs that it is starting), before the sync is done.
      const t0 = performance.now();
      while (!stderr.includes('"event":"starting"') && performance.now() - t0 < 20_000) await sleep(20);
      await sleep(150);
      const exited = new Promise((r) => first.once('exit', r));
      first.kill('SIGKILL');
      await exited;
      const proxy = await startProxy(topo, proxyCommand(mode, file), { syncTimeoutMs: 120_000 });
      try {
        expect(answeredBy((await runProbe(topo, { from: 'pod:a2', to: parseProbeTarget('198.18.100.10:80/tcp')!, tries: 6, timeoutMs: 1000 })).tries)).toEqual([
          'a1',
        ]);
      } finally {
        await proxy.stop(10_000);
      }
    }, 240_000);
  });
}
