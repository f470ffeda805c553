// The userspace mode with both families at once, end to end: the real CLI in node-a of the dual-stack
// scenario topology runs one IPv4 and one IPv6 proxier in one process. Real IPv6 traffic from pods, the
// node itself and the outside client goes through ip6tables REDIRECT to IPv6 listeners and on to pods on
// both nodes; --nodeport-addresses names a CIDR of each family.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import { type ProbeTry, runProbe } from '../../src/lab/sandbox/probe.ts';
import { type ProxyProcess, proxyCommand, startProxy } from '../../src/lab/sandbox/proxy.ts';
import type { PodSpec, ProbeSource, ProbeTarget } from '../../src/lab/sandbox/scenario.ts';
import { type Host, Topology, sweepStale } from '../../src/lab/sandbox/topology.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables): run them as root');

const PODS: PodSpec[] = [
  {
    name: 'a1',
    node: 'node-a',
    ip: '198.19.1.61',
    ip6: '2001:2:0:11::61',
    ports: [
      { port: 8080, protocol: 'tcp' },
      { port: 5353, protocol: 'udp' },
    ],
  },
  {
    name: 'b1',
    node: 'node-b',
    ip: '198.19.2.61',
    ip6: '2001:2:0:12::61',
    ports: [
      { port: 8080, protocol: 'tcp' },
      { port: 5353, protocol: 'udp' },
    ],
  },
  { name: 'c1', node: 'node-a', ip: '198.19.1.62', ip6: '2001:2:0:11::62', ports: [] },
];
const NODE_PORT_ADDRESSES = '198.18.0.0/24,2001:2::/64';

type Family = 'IPv4' | 'IPv6';
interface Svc {
  name: string;
  families: Family[];
  clusterIPs: string[];
  protocol?: 'TCP' | 'UDP';
  port: number;
  targetPort: number;
  nodePort?: number;
  externalIPs?: string[];
  externalTrafficPolicy?: 'Local';
  /** Endpoint pods, the same in each family. */
  endpoints: ('a1' | 'b1')[];
}

const WEB: Svc = {
  name: 'web',
  families: ['IPv4', 'IPv6'],
  clusterIPs: ['198.18.100.60', '2001:2:0:100::60'],
  port: 80,
  targetPort: 8080,
  nodePort: 30060,
  endpoints: ['a1', 'b1'],
};
const DNS6: Svc = { name: 'dns6', families: ['IPv6'], clusterIPs: ['2001:2:0:100::53'], protocol: 'UDP', port: 53, targetPort: 5353, endpoints: ['a1', 'b1'] };
const EMPTY6: Svc = { name: 'empty6', families: ['IPv6'], clusterIPs: ['2001:2:0:100::70'], port: 80, targetPort: 8080, endpoints: [] };
// Local policy, only a remote endpoint: outside clients are dropped, pods and the node use the cluster endpoints.
const LOCAL6: Svc = {
  name: 'local6',
  families: ['IPv6'],
  clusterIPs: ['2001:2:0:100::80'],
  port: 80,
  targetPort: 8080,
  externalIPs: ['2001:2:0:200::80'],
  externalTrafficPolicy: 'Local',
  endpoints: ['b1'],
};

function objects(svcs: Svc[]): unknown[] {
  return svcs.flatMap((s) => [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: s.name, namespace: 'ds' },
      spec: {
        type: s.nodePort ? 'NodePort' : 'ClusterIP',
        ipFamilyPolicy: s.families.length > 1 ? 'RequireDualStack' : 'SingleStack',
        ipFamilies: s.families,
        clusterIP: s.clusterIPs[0],
        clusterIPs: s.clusterIPs,
        ...(s.externalIPs ? { externalIPs: s.externalIPs } : {}),
        ...(s.externalTrafficPolicy ? { externalTrafficPolicy: s.externalTrafficPolicy } : {}),
        ports: [{ name: 'p', port: s.port, targetPort: s.targetPort, protocol: s.protocol ?? 'TCP', ...(s.nodePort ? { nodePort: s.nodePort } : {}) }],
      },
    },
    ...s.families.map((family) => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${s.name}-${family.toLowerCase()}`, namespace: 'ds', labels: { 'kubernetes.io/service-name': s.name } },
      addressType: family,
      ports: [{ name: 'p', port: s.targetPort, protocol: s.protocol ?? 'TCP' }],
      endpoints: s.endpoints.map((name) => {
        const pod = PODS.find((p) => p.name === name)!;
        return { addresses: [family === 'IPv4' ? pod.ip : pod.ip6], conditions: { ready: true }, nodeName: pod.node };
      }),
    })),
  ]);
}

let topo: Topology;
let dir: string;
let objectsFile: string;
let proxy: ProxyProcess | null = null;

function writeObjects(svcs: Svc[]): void {
  // Write-then-rename so the file watcher never sees half a file.
  const tmp = `${objectsFile}.tmp`;
  writeFileSync(tmp, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects(svcs) }));
  renameSync(tmp, objectsFile);
}

function target(text: string): ProbeTarget {
  const m = /^\[?([0-9a-f.:]+?)\]?:(\d+)\/(tcp|udp)$/.exec(text);
  if (!m) throw new Error(`bad probe target ${text}`);
  return { ip: m[1]!, port: Number(m[2]), protocol: m[3] as 'tcp' | 'udp' };
}

/** The tries of a probe, each as the answering pod's name, 'refused' or 'timeout'. */
async function tries(from: ProbeSource, to: string, n: number, timeoutMs = 1500): Promise<string[]> {
  const r = await runProbe(topo, { from, to: target(to), tries: n, timeoutMs });
  return r.tries.map((t: ProbeTry) => (typeof t === 'object' ? t.answer.pod : t));
}

const answeredBy = (ts: string[]) => [...new Set(ts)].sort();

/** A table of node-a (or another host) as ip6tables-save / iptables-save prints it. */
async function saved(family: Family, table: 'nat' | 'filter', host: Host = 'node-a'): Promise<string> {
  return (await topo.execOk(host, [family === 'IPv6' ? 'ip6tables-save' : 'iptables-save', '-t', table])).stdout;
}

/** The listener port an IPv6 ClusterIP is redirected to from pods. */
async function redirectPort6(clusterIP: string): Promise<number | null> {
  const line = (await saved('IPv6', 'nat')).split('\n').find((l) => l.startsWith('-A KUBE-PORTALS-CONTAINER') && l.includes(`-d ${clusterIP}/128`));
  const m = line ? /--to-ports (\d+)/.exec(line) : null;
  return m ? Number(m[1]) : null;
}

beforeAll(async () => {
  await sweepStale();
  topo = await Topology.create({ pods: PODS });
  dir = mkdtempSync(path.join(tmpdir(), 'kpt-userspace-ds-'));
  objectsFile = path.join(dir, 'objects.json');
  await startPodServers(topo);
  writeObjects([WEB, DNS6, EMPTY6, LOCAL6]);
  proxy = await startProxy(topo, [...proxyCommand('userspace', objectsFile, PODS), '--nodeport-addresses', NODE_PORT_ADDRESSES, '--min-sync-period', '100ms']);
}, 60_000);

afterAll(async () => {
  try {
    await proxy?.stop(10_000);
  } finally {
    await topo?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

describe('userspace mode, both families in one process', () => {
  it('syncs both families with --nodeport-addresses of both families, and listens on IPv4 and IPv6 sockets', async () => {
    expect(proxy!.output()).not.toMatch(/"level":50/);
    for (const family of ['IPv4', 'IPv6'] as const) {
      const nat = await saved(family, 'nat');
      expect(nat).toContain('-A PREROUTING -m comment --comment "kube-proxy-ts userspace portals" -j KUBE-PORTALS-CONTAINER');
      expect(nat).toContain('-A OUTPUT -m comment --comment "kube-proxy-ts userspace portals" -j KUBE-PORTALS-HOST');
    }
    const nat4 = await saved('IPv4', 'nat');
    const nat6 = await saved('IPv6', 'nat');
    expect(nat4).toContain('-d 198.18.0.0/24 -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30060');
    expect(nat6).toContain('-d 2001:2::/64 -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30060');
    // Each family's rules hold only its own addresses.
    expect(nat4).not.toContain('2001:2');
    expect(nat6).not.toContain('198.1');
    const listening = (await topo.execOk('node-a', ['ss', '-Hltn'])).stdout;
    expect(listening).toMatch(/\s0\.0\.0\.0:\d+\s/);
    expect(listening).toMatch(/\s\[::\]:\d+\s/);
  });

  it('carries IPv4 and IPv6 ClusterIP traffic from a pod to endpoints on both nodes', async () => {
    expect(answeredBy(await tries('pod:c1', '198.18.100.60:80/tcp', 20))).toEqual(['a1', 'b1']);
    expect(answeredBy(await tries('pod:c1', '[2001:2:0:100::60]:80/tcp', 20))).toEqual(['a1', 'b1']);
  });

  it('answers IPv6 UDP from the service address (the probe’s socket is connected to it), from a pod and from the node', async () => {
    expect(answeredBy(await tries('pod:c1', '[2001:2:0:100::53]:53/udp', 12))).toEqual(['a1', 'b1']);
    expect(answeredBy(await tries('node-a', '[2001:2:0:100::53]:53/udp', 12))).toEqual(['a1', 'b1']);
  });

  it('carries the node’s own IPv6 traffic (OUTPUT redirect to ::1)', async () => {
    expect(answeredBy(await tries('node-a', '[2001:2:0:100::60]:80/tcp', 10))).toEqual(['a1', 'b1']);
    expect(answeredBy(await tries('node-a', '[2001:2::1]:30060/tcp', 10))).toEqual(['a1', 'b1']);
  });

  it('serves NodePorts on the node’s addresses within --nodeport-addresses, per family', async () => {
    expect(answeredBy(await tries('client', '[2001:2::1]:30060/tcp', 20))).toEqual(['a1', 'b1']);
    expect(answeredBy(await tries('client', '198.18.0.1:30060/tcp', 20))).toEqual(['a1', 'b1']);
    // node-a's pod-bridge addresses are local but outside both CIDRs: nothing listens there on the NodePort.
    expect(await tries('pod:c1', '[2001:2:0:11::1]:30060/tcp', 2)).toEqual(['refused', 'refused']);
    expect(await tries('pod:c1', '198.19.1.1:30060/tcp', 2)).toEqual(['refused', 'refused']);
  });

  it('rejects an IPv6 service without endpoints (ICMPv6 port unreachable)', async () => {
    expect(await tries('pod:c1', '[2001:2:0:100::70]:80/tcp', 2)).toEqual(['refused', 'refused']);
    expect(await saved('IPv6', 'filter')).toMatch(/-d 2001:2:0:100::70\/128 .*has no endpoints" -j REJECT --reject-with icmp6-port-unreachable/);
  });

  it('under externalTrafficPolicy Local without local endpoints drops the outside client, and lets pods and the node through', async () => {
    expect(await tries('client', '[2001:2:0:200::80]:80/tcp', 2, 1000)).toEqual(['timeout', 'timeout']);
    expect(answeredBy(await tries('pod:c1', '[2001:2:0:200::80]:80/tcp', 6))).toEqual(['b1']);
    expect(answeredBy(await tries('node-a', '[2001:2:0:200::80]:80/tcp', 6))).toEqual(['b1']);
  });

  it('refuses connections made to an IPv6 listener port directly', async () => {
    const port = await redirectPort6('2001:2:0:100::60');
    expect(port).not.toBeNull();
    expect(await tries('pod:c1', `[2001:2:0:11::1]:${port}/tcp`, 2)).toEqual(['refused', 'refused']);
  });

  it('applies an IPv6 endpoint change; the IPv4 side is left as it was', async () => {
    const port4 = (await saved('IPv4', 'nat')).match(/-d 198\.18\.100\.60\/32 .*--to-ports (\d+)/)?.[1];
    const synced = proxy!.nextSync(15_000);
    writeObjects([WEB, { ...DNS6, endpoints: ['a1'] }, EMPTY6, LOCAL6]);
    await synced;
    const deadline = Date.now() + 10_000;
    let answers: string[] = [];
    while (Date.now() < deadline) {
      answers = await tries('pod:c1', '[2001:2:0:100::53]:53/udp', 6);
      if (answeredBy(answers).join() === 'a1') break;
    }
    expect(answeredBy(answers)).toEqual(['a1']);
    expect((await saved('IPv4', 'nat')).match(/-d 198\.18\.100\.60\/32 .*--to-ports (\d+)/)?.[1]).toBe(port4);
    expect(answeredBy(await tries('pod:c1', '198.18.100.60:80/tcp', 10))).toEqual(['a1', 'b1']);
  });

  it('leaves both families’ rules in place on exit, and --cleanup removes both', async () => {
    expect(await proxy!.stop(10_000)).toEqual({ killed: false, code: 0, signal: null });
    for (const family of ['IPv4', 'IPv6'] as const) expect(await saved(family, 'nat')).toContain('KUBE-PORTALS-CONTAINER');
    const r = await topo.exec('node-a', [...proxyCommand('userspace', objectsFile, PODS), '--cleanup']);
    expect(r.stderr, r.stdout).toContain('"event":"cleanup","mode":"userspace","family":"IPv6"');
    for (const family of ['IPv4', 'IPv6'] as const) {
      expect(await saved(family, 'nat')).not.toContain('KUBE-PORTALS');
      expect(await saved(family, 'filter')).not.toContain('KUBE-PORTALS');
    }
  });
});

describe('userspace --dry-run --ip-family IPv6', () => {
  it('prints rules that ip6tables-restore loads into a fresh node', async () => {
    const r = await topo.exec('node-b', [...proxyCommand('userspace', objectsFile, PODS), '--dry-run', '--ip-family', 'IPv6']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^# {3}udp \[::\]:\d+ \+ \[::1\]:\d+ ds\/dns6:p \(all frontends\) -> \[2001:2:0:11::61\]:5353$/m);
    const file = path.join(dir, 'dry-run6.rules');
    writeFileSync(file, r.stdout);
    const load = await topo.exec('node-b', ['ip6tables-restore', '--noflush', file]);
    expect(load.code, load.stderr).toBe(0);
    const nat = await saved('IPv6', 'nat', 'node-b');
    expect(nat).toMatch(/-A KUBE-PORTALS-HOST -d 2001:2:0:100::53\/128 -p udp -m udp --dport 53 .* -j REDIRECT --to-ports \d+/);
    expect(await saved('IPv4', 'nat', 'node-b')).not.toContain('KUBE-PORTALS');
    const clean = await topo.exec('node-b', [...proxyCommand('userspace', objectsFile, PODS), '--cleanup']);
    expect(clean.code, clean.stderr).toBe(0);
    expect(await saved('IPv6', 'nat', 'node-b')).not.toContain('KUBE-PORTALS');
  });
});
