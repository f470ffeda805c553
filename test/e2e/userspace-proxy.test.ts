// The userspace mode end to end: the real CLI in node-a of the scenario topology, traffic from pods
// and from the node through the kernel's REDIRECT to our listeners and on to pods on both nodes.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTraffic, startTrafficServer } from '../../src/lab/compare/traffic.ts';
import type { EchoResult, LatencyResult, UdpResult } from '../../src/lab/compare/traffic.ts';
import { runProbe } from '../../src/lab/sandbox/probe.ts';
import { type ProxyProcess, proxyCommand, startProxy } from '../../src/lab/sandbox/proxy.ts';
import type { PodSpec } from '../../src/lab/sandbox/scenario.ts';
import { Topology, sweepStale } from '../../src/lab/sandbox/topology.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables): run them as root');

const PODS: PodSpec[] = [
  { name: 'a1', node: 'node-a', ip: '198.19.1.11', ports: [] },
  { name: 'b1', node: 'node-b', ip: '198.19.2.11', ports: [] },
  { name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] },
  // Exists, but nothing listens in it: connections are refused.
  { name: 'd1', node: 'node-a', ip: '198.19.1.13', ports: [] },
];
const NODE = { a1: 'node-a', b1: 'node-b', d1: 'node-a', ghost: 'node-a' } as const;
const IP = { a1: '198.19.1.11', b1: '198.19.2.11', d1: '198.19.1.13', ghost: '198.19.1.99' } as const;
type PodName = keyof typeof IP;

interface SvcSpec {
  name: string;
  clusterIP: string;
  port: number;
  targetPort: number;
  protocol?: 'TCP' | 'UDP';
  endpoints: PodName[];
  externalIPs?: string[];
}

/** A Service and its EndpointSlice, as the API server would serve them. */
function objects(svcs: SvcSpec[]): unknown[] {
  return svcs.flatMap((s) => [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: s.name, namespace: 'e2e' },
      spec: {
        clusterIP: s.clusterIP,
        clusterIPs: [s.clusterIP],
        ...(s.externalIPs ? { externalIPs: s.externalIPs } : {}),
        ports: [{ name: 'p', port: s.port, targetPort: s.targetPort, protocol: s.protocol ?? 'TCP' }],
      },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${s.name}-1`, namespace: 'e2e', labels: { 'kubernetes.io/service-name': s.name } },
      addressType: 'IPv4',
      ports: [{ name: 'p', port: s.targetPort, protocol: s.protocol ?? 'TCP' }],
      endpoints: s.endpoints.map((p) => ({ addresses: [IP[p]], conditions: { ready: true }, nodeName: NODE[p] })),
    },
  ]);
}

const ECHO = { name: 'echo', clusterIP: '198.18.100.10', port: 7000, targetPort: 7000, endpoints: ['a1'] } satisfies SvcSpec;
const FAILOVER = { name: 'failover', clusterIP: '198.18.100.11', port: 80, targetPort: 7002, endpoints: ['a1', 'd1', 'ghost'] } satisfies SvcSpec;
const DNS = { name: 'dns', clusterIP: '198.18.100.12', port: 53, targetPort: 7053, protocol: 'UDP', endpoints: ['a1', 'b1'] } satisfies SvcSpec;
const GONE = { name: 'gone', clusterIP: '198.18.100.13', port: 80, targetPort: 7002, endpoints: ['a1'] } satisfies SvcSpec;
const HELLO = { name: 'hello', clusterIP: '198.18.100.14', port: 80, targetPort: 7002, endpoints: ['a1'] } satisfies SvcSpec;

let topo: Topology;
let dir: string;
let objectsFile: string;
let proxy: ProxyProcess | null = null;

function writeObjects(svcs: SvcSpec[]): void {
  // JSON is YAML: the file source reads either. Write-then-rename so the watcher never sees half a file.
  const tmp = `${objectsFile}.tmp`;
  writeFileSync(tmp, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects(svcs) }));
  renameSync(tmp, objectsFile);
}

/** node-a's nat rules as iptables-save prints them. */
async function natRules(host: 'node-a' | 'node-b' = 'node-a'): Promise<string> {
  return (await topo.execOk(host, ['iptables-save', '-t', 'nat'])).stdout;
}

/** Polls `check` until it holds or `ms` pass; resolves with whether it held. */
async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The listener port a frontend is redirected to from pods. */
async function redirectPort(clusterIP: string): Promise<number | null> {
  const line = (await natRules()).split('\n').find((l) => l.startsWith('-A KUBE-PORTALS-CONTAINER') && l.includes(`-d ${clusterIP}/32`));
  const m = line ? /--to-ports (\d+)/.exec(line) : null;
  return m ? Number(m[1]) : null;
}

beforeAll(async () => {
  await sweepStale();
  topo = await Topology.create({ pods: PODS });
  dir = mkdtempSync(path.join(tmpdir(), 'kpt-userspace-'));
  objectsFile = path.join(dir, 'objects.json');
  for (const pod of ['a1', 'b1'] as const) {
    await startTrafficServer(topo, `pod:${pod}`, { cmd: 'serve', name: pod, echo: 7000, hello: 7002, udpEcho: 7053 });
  }
  writeObjects([ECHO, FAILOVER, DNS, GONE, HELLO]);
  proxy = await startProxy(topo, [...proxyCommand('userspace', objectsFile), '--min-sync-period', '100ms']);
});

afterAll(async () => {
  try {
    await proxy?.stop(10_000);
  } finally {
    await topo?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

describe('userspace mode, live in node-a', () => {
  it('fails over when an endpoint refuses connections or does not answer', async () => {
    const r = await runTraffic<LatencyResult>(topo, 'pod:a2', { cmd: 'latency', ip: FAILOVER.clusterIP, port: 80, count: 30 });
    // d1 refuses at once; 198.19.1.99 does not exist (the connect times out after 250 ms): every
    // connection still ends up at a1.
    expect(r).toMatchObject({ count: 30, errors: 0, answers: { a1: 30 } });
  });

  it('carries 100 MB through the ClusterIP intact, half-close kept', async () => {
    const r = await runTraffic<EchoResult>(topo, 'pod:a2', { cmd: 'echo', ip: ECHO.clusterIP, port: 7000, bytes: 100 << 20 });
    expect(r.error).toBeUndefined();
    expect(r).toMatchObject({ ok: true, sentBytes: 100 << 20, receivedBytes: 100 << 20, endedAfterOurEnd: true });
    expect(r.receivedSha256).toBe(r.sentSha256);
  });

  it('carries the node’s own traffic (OUTPUT redirect) intact too', async () => {
    const r = await runTraffic<EchoResult>(topo, 'node-a', { cmd: 'echo', ip: ECHO.clusterIP, port: 7000, bytes: 8 << 20 });
    expect(r).toMatchObject({ ok: true, receivedBytes: 8 << 20, endedAfterOurEnd: true });
  });

  it('answers UDP requests from many clients at once, from the service address', async () => {
    const fromPod = await runTraffic<UdpResult>(topo, 'pod:a2', { cmd: 'udp', ip: DNS.clusterIP, port: 53, clients: 200, requests: 3 });
    expect(fromPod).toMatchObject({ sent: 600, answered: 600, mismatched: 0, sources: ['198.18.100.12:53'] });
    expect(Object.keys(fromPod.backends).sort()).toEqual(['a1', 'b1']);
    const fromNode = await runTraffic<UdpResult>(topo, 'node-a', { cmd: 'udp', ip: DNS.clusterIP, port: 53, clients: 50, requests: 2 });
    expect(fromNode).toMatchObject({ sent: 100, answered: 100, mismatched: 0, sources: ['198.18.100.12:53'] });
  });

  it('refuses connections made to a listener port directly', async () => {
    const port = await redirectPort(HELLO.clusterIP);
    expect(port).not.toBeNull();
    const r = await runProbe(topo, { from: 'pod:a2', to: { ip: '198.19.1.1', port: port as number, protocol: 'tcp' }, tries: 2, timeoutMs: 1000 });
    expect(r.tries).toEqual(['refused', 'refused']);
    // ... while the same listener serves its ClusterIP.
    const ok = await runTraffic<LatencyResult>(topo, 'pod:a2', { cmd: 'latency', ip: HELLO.clusterIP, port: 80, count: 2 });
    expect(ok.count).toBe(2);
  });

  it('applies a service change without dropping open connections to endpoints that remain', async () => {
    const echoPort = await redirectPort(ECHO.clusterIP);
    const gonePort = await redirectPort(GONE.clusterIP);
    expect(echoPort).not.toBeNull();
    expect(gonePort).not.toBeNull();
    // A slow stream through the echo service (to a1) that lasts ~3 s: the change lands in the middle.
    const stream = runTraffic<EchoResult>(topo, 'pod:a2', { cmd: 'echo', ip: ECHO.clusterIP, port: 7000, bytes: 6 << 20, chunkBytes: 64 << 10, paceMs: 30 });
    await new Promise((r) => setTimeout(r, 800));
    const synced = (proxy as ProxyProcess).nextSync(15_000);
    writeObjects([
      { ...ECHO, endpoints: ['a1', 'b1'], externalIPs: ['198.18.200.10'] },
      FAILOVER,
      { ...DNS, endpoints: ['a1'] },
      { ...HELLO, endpoints: ['a1', 'b1'] },
    ]);
    await synced;
    expect(await eventually(async () => (await redirectPort(GONE.clusterIP)) === null, 5000)).toBe(true);
    const r = await stream;
    expect(r.error).toBeUndefined();
    expect(r).toMatchObject({ ok: true, receivedBytes: 6 << 20 });
    expect(r.ms).toBeGreaterThan(2000);

    // The echo service kept its listener; the removed service's listener is closed and unreachable.
    expect(await redirectPort(ECHO.clusterIP)).toBe(echoPort);
    const listening = (await topo.execOk('node-a', ['ss', '-Hltn'])).stdout;
    expect(listening).toContain(`:${echoPort} `);
    expect(listening).not.toContain(`:${gonePort} `);
    expect(await natRules()).toContain('-d 198.18.200.10/32 -p tcp -m tcp --dport 7000');

    // New connections use the new endpoints; UDP no longer goes to the removed endpoint.
    const hello = await runTraffic<LatencyResult>(topo, 'pod:a2', { cmd: 'latency', ip: HELLO.clusterIP, port: 80, count: 20 });
    expect(hello.answers).toEqual({ a1: 10, b1: 10 });
    const dns = await runTraffic<UdpResult>(topo, 'pod:a2', { cmd: 'udp', ip: DNS.clusterIP, port: 53, clients: 20, requests: 2 });
    expect(dns).toMatchObject({ answered: 40, backends: { a1: 40 } });
  });

  it('leaves its rules in place on exit, and --cleanup removes them', async () => {
    expect(await (proxy as ProxyProcess).stop(10_000)).toEqual({ killed: false, code: 0, signal: null });
    expect(await natRules()).toContain('-A PREROUTING -m comment --comment "kube-proxy-ts userspace portals" -j KUBE-PORTALS-CONTAINER');
    // --cleanup runs every mode's cleanup; this test is about the userspace mode's.
    const r = await topo.exec('node-a', [...proxyCommand('userspace', objectsFile), '--cleanup']);
    expect(r.stderr, r.stdout).toContain('"event":"cleanup","mode":"userspace"');
    const nat = await natRules();
    const filter = (await topo.execOk('node-a', ['iptables-save', '-t', 'filter'])).stdout;
    expect(nat).not.toContain('KUBE-PORTALS');
    expect(filter).not.toContain('KUBE-PORTALS');
  });
});

describe('userspace --dry-run', () => {
  it('prints rules that iptables-restore loads into a fresh node', async () => {
    // node-b has no proxy and no rules: a fresh node.
    const r = await topo.exec('node-b', [...proxyCommand('userspace', objectsFile), '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^# {3}tcp 0\.0\.0\.0:\d+ e2e\/echo:p \(all frontends\) -> 198\.19\.1\.11:7000 198\.19\.2\.11:7000$/m);
    const file = path.join(dir, 'dry-run.rules');
    writeFileSync(file, r.stdout);
    const load = await topo.exec('node-b', ['iptables-restore', '--noflush', file]);
    expect(load.code, load.stderr).toBe(0);
    const nat = await natRules('node-b');
    expect(nat).toContain('-A PREROUTING -m comment --comment "kube-proxy-ts userspace portals" -j KUBE-PORTALS-CONTAINER');
    expect(nat).toMatch(/-A KUBE-PORTALS-HOST -d 198\.18\.100\.12\/32 -p udp -m udp --dport 53 .* -j REDIRECT --to-ports \d+/);
    const clean = await topo.exec('node-b', [...proxyCommand('userspace', objectsFile), '--cleanup']);
    expect(clean.stderr, clean.stdout).toContain('"event":"cleanup","mode":"userspace"');
    expect(await natRules('node-b')).not.toContain('KUBE-PORTALS');
  });
});
