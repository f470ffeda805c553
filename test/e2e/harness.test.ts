// Proves the scenario harness itself: the topology (real traffic of both families between real
// namespaces, with the settings the scenarios README promises), the probe classification, that a
// missing proxy FAILS a scenario, and cleanup. (The loader's pure checks: test/unit/scenario.test.ts.)
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/exec.ts';
import { validateScenario } from '../../src/lab/sandbox/scenario.ts';
import type { Scenario } from '../../src/lab/sandbox/scenario.ts';
import { listNamespaces, sweepStale, Topology } from '../../src/lab/sandbox/topology.ts';
import { formatRun, noProxy, runScenario } from '../harness/run.ts';
import type { ScenarioRun } from '../harness/run.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const here = path.dirname(fileURLToPath(import.meta.url));

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  await sweepStale();
});

/** Direct pod-to-pod, node-to-pod and loopback traffic of both families: no proxy involved. */
const direct: Scenario = validateScenario({
  name: 'harness-direct',
  description: 'the topology routes both families without any proxy',
  pods: [
    { name: 'a1', node: 'node-a', ip: '198.19.1.11', ip6: '2001:2:0:11::11', ports: ['8080/tcp', '5353/udp'] },
    { name: 'a2', node: 'node-a', ip: '198.19.1.12', ip6: '2001:2:0:11::12', ports: [] },
    { name: 'b1', node: 'node-b', ip: '198.19.2.11', ip6: '2001:2:0:12::11', ports: ['8080/tcp', '5353/udp'] },
    { name: 'b2', node: 'node-b', ip: '198.19.2.12', ports: ['8080/tcp'] },
  ],
  objects: [],
  probes: [
    {
      name: 'pod to a pod on the other node, tcp',
      from: 'pod:a2',
      to: '198.19.2.11:8080/tcp',
      tries: 5,
      expect: { backends: ['b1'], sourceIP: '198.19.1.12' },
    },
    {
      name: 'pod to a pod on the other node, udp',
      from: 'pod:a2',
      to: '198.19.2.11:5353/udp',
      tries: 5,
      expect: { backends: ['b1'], sourceIP: '198.19.1.12' },
    },
    { name: 'pod to a pod on the same node', from: 'pod:a2', to: '198.19.1.11:8080/tcp', tries: 3, expect: { backends: ['a1'], sourceIP: '198.19.1.12' } },
    { name: 'back from node-b to node-a', from: 'pod:b1', to: '198.19.1.11:5353/udp', tries: 3, expect: { backends: ['a1'], sourceIP: '198.19.2.11' } },
    { name: 'an IPv4-only pod answers on IPv4', from: 'pod:a2', to: '198.19.2.12:8080/tcp', tries: 2, expect: { backends: ['b2'] } },
    {
      name: 'node-a to a remote pod uses its eth0 address',
      from: 'node-a',
      to: '198.19.2.11:8080/tcp',
      tries: 3,
      expect: { backends: ['b1'], sourceIP: '198.18.0.1' },
    },
    { name: 'node-b to a pod of node-a', from: 'node-b', to: '198.19.1.11:8080/tcp', tries: 3, expect: { oneOf: ['a1'], sourceIP: '198.18.0.2' } },
    { name: 'a closed tcp port is refused', from: 'pod:a2', to: '198.19.2.11:9/tcp', tries: 2, expect: { refused: true } },
    { name: 'a closed udp port is refused (ICMP port unreachable)', from: 'pod:a2', to: '198.19.2.11:9/udp', tries: 2, expect: { refused: true } },
    { name: 'the client reaches node-a over the LAN', from: 'client', to: '198.18.0.1:30080/tcp', tries: 2, expect: { refused: true } },
    { name: 'an unrouted ClusterIP is dropped at the client', from: 'node-a', to: '198.18.100.99:80/tcp', tries: 2, timeoutMs: 300, expect: { dropped: true } },
    { name: 'node-a reaches its own loopback', from: 'node-a', to: '127.0.0.1:9/tcp', tries: 2, expect: { refused: true } },
    // IPv6, the same paths.
    {
      name: 'IPv6: pod to a pod on the other node, tcp (the source in any spelling)',
      from: 'pod:a2',
      to: '[2001:2:0:12::11]:8080/tcp',
      tries: 5,
      expect: { backends: ['b1'], sourceIP: '2001:0002:0000:0011:0000:0000:0000:0012' },
    },
    {
      name: 'IPv6: pod to a pod on the other node, udp',
      from: 'pod:a2',
      to: '[2001:2:0:12::11]:5353/udp',
      tries: 5,
      expect: { backends: ['b1'], sourceIP: '2001:2:0:11::12' },
    },
    {
      name: 'IPv6: pod to a pod on the same node',
      from: 'pod:a2',
      to: '[2001:2:0:11::11]:8080/tcp',
      tries: 3,
      expect: { backends: ['a1'], sourceIP: '2001:2:0:11::12' },
    },
    {
      name: 'IPv6: back from node-b to node-a',
      from: 'pod:b1',
      to: '[2001:2:0:11::11]:5353/udp',
      tries: 3,
      expect: { backends: ['a1'], sourceIP: '2001:2:0:12::11' },
    },
    {
      name: 'IPv6: node-a to a remote pod uses its eth0 address',
      from: 'node-a',
      to: '[2001:2:0:12::11]:8080/tcp',
      tries: 3,
      expect: { backends: ['b1'], sourceIP: '2001:2::1' },
    },
    { name: 'IPv6: node-b to a pod of node-a', from: 'node-b', to: '[2001:2:0:11::11]:8080/tcp', tries: 3, expect: { oneOf: ['a1'], sourceIP: '2001:2::2' } },
    { name: 'IPv6: a closed tcp port is refused', from: 'pod:a2', to: '[2001:2:0:12::11]:9/tcp', tries: 2, expect: { refused: true } },
    {
      name: 'IPv6: a closed udp port is refused (ICMPv6 port unreachable)',
      from: 'pod:a2',
      to: '[2001:2:0:12::11]:9/udp',
      tries: 2,
      expect: { refused: true },
    },
    { name: 'IPv6: the client reaches node-a over the LAN', from: 'client', to: '[2001:2::1]:30080/tcp', tries: 2, expect: { refused: true } },
    {
      name: 'IPv6: an unrouted ClusterIP is dropped at the client',
      from: 'node-a',
      to: '[2001:2:0:100::99]:80/tcp',
      tries: 2,
      timeoutMs: 300,
      expect: { dropped: true },
    },
    { name: 'IPv6: node-a reaches its own loopback', from: 'node-a', to: '[::1]:9/tcp', tries: 2, expect: { refused: true } },
  ],
});

describe('topology', () => {
  let result: ScenarioRun;
  beforeAll(async () => {
    result = await runScenario(direct, noProxy());
    console.log(formatRun(result));
  });

  for (const probe of direct.probes) {
    it(probe.name, () => {
      const outcome = result.probes.find((o) => o.probe.name === probe.name);
      expect(outcome?.verdict.ok, outcome && formatRun({ ...result, probes: [outcome] }, false)).toBe(true);
    });
  }

  it('ran without errors and left no namespace behind', async () => {
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
    const prefix = `kpt${process.pid}x`;
    expect((await listNamespaces()).filter((n) => n.startsWith(prefix))).toEqual([]);
  });
});

/** A ClusterIP service whose endpoints exist, for a run without a proxy. */
const unproxied: Scenario = validateScenario({
  name: 'harness-unproxied',
  pods: [
    { name: 'a1', node: 'node-a', ip: '198.19.1.11', ports: ['8080/tcp'] },
    { name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] },
    { name: 'b1', node: 'node-b', ip: '198.19.2.11', ports: ['8080/tcp'] },
  ],
  objects: [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'harness' },
      spec: { clusterIP: '198.18.100.10', clusterIPs: ['198.18.100.10'], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-1', namespace: 'harness', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [
        { addresses: ['198.19.1.11'], conditions: { ready: true }, nodeName: 'node-a' },
        { addresses: ['198.19.2.11'], conditions: { ready: true }, nodeName: 'node-b' },
      ],
    },
  ],
  probes: [
    {
      name: 'pod to ClusterIP',
      from: 'pod:a2',
      to: '198.18.100.10:80/tcp',
      tries: 3,
      timeoutMs: 400,
      expect: { backends: ['a1', 'b1'], sourceIP: '198.19.1.12' },
    },
  ],
});

describe('the harness can fail', () => {
  it('without a proxy, a ClusterIP probe fails: its tries time out', async () => {
    const result = await runScenario(unproxied, noProxy());
    expect(result.ok).toBe(false);
    expect(result.errors).toEqual([]);
    const [outcome] = result.probes;
    expect(outcome?.result?.tries).toEqual(['timeout', 'timeout', 'timeout']);
    expect(outcome?.verdict.ok).toBe(false);
    expect(outcome?.verdict.reasons).toEqual([
      'backends: expected answers from exactly {a1, b1}, got {}: 3 of 3 tries got no answer (3 timed out); never answered: a1, b1',
      'sourceIP: no try was answered, so no source address to check (3 timed out)',
    ]);
    // The failure report names the rules of node-a (none here) for whoever debugs it.
    expect(result.diagnostics).toContain('--- node-a: nft list ruleset ---');
    expect(result.diagnostics).toContain('--- node-a: ip6tables-save ---');
  });
});

describe('cleanup', () => {
  it('destroy stops spawned processes and deletes every namespace it created; it is idempotent', async () => {
    const topo = await Topology.create(direct);
    const ours = (await listNamespaces()).filter((n) => n.startsWith(`${topo.prefix}-`));
    expect(ours.sort()).toEqual(topo.hosts.map((h) => topo.ns(h)).sort());
    expect(ours).toHaveLength(8);
    const sleeper = topo.spawn('node-b', ['sleep', '300']);
    const exited = new Promise((resolve) => sleeper.once('exit', resolve));
    await Promise.all([topo.destroy(), topo.destroy()]);
    await topo.destroy();
    await exited;
    expect(sleeper.pid !== undefined && pidAlive(sleeper.pid)).toBe(false);
    expect((await listNamespaces()).filter((n) => n.startsWith(`${topo.prefix}-`))).toEqual([]);
    expect(() => topo.exec('node-a', ['true'])).toThrow(/destroyed/);
  });

  it('on SIGTERM the process-level handler removes the namespaces and processes, then the signal ends the process', async () => {
    const r = await run([process.execPath, '--disable-warning=ExperimentalWarning', path.join(here, '..', 'harness', 'fixtures', 'signal-cleanup.ts')], {
      timeoutMs: 60_000,
    });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{"prefix"'));
    expect(line, `fixture output: ${r.stdout}\n${r.stderr}`).toBeDefined();
    const { prefix, pid } = JSON.parse(line as string) as { prefix: string; pid: number };
    expect(r.stderr).toContain('killed by SIGTERM');
    expect((await listNamespaces()).filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
    expect(pidAlive(pid)).toBe(false);
  });

  it('sweepStale removes our namespaces of a dead pid only', async () => {
    const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    const dead = `kpt${pidMax + 1}x0bad-node-a`;
    const alive = `kpt${process.pid}x0bad-node-a`;
    const foreign = `kpx${pidMax + 1}x0bad-node-a`;
    for (const ns of [dead, alive, foreign]) expect((await run(['ip', 'netns', 'add', ns])).code).toBe(0);
    try {
      expect(await sweepStale()).toEqual([dead]);
      const left = await listNamespaces();
      expect(left).not.toContain(dead);
      expect(left).toContain(alive);
      expect(left).toContain(foreign);
    } finally {
      for (const ns of [dead, alive, foreign]) await run(['ip', 'netns', 'del', ns]);
    }
  });
});

describe('the settings the scenarios README promises', () => {
  let topo: Topology;
  beforeAll(async () => {
    topo = await Topology.create(direct);
  });
  afterAll(async () => {
    await topo?.destroy();
  });

  /** The values of sysctls inside a host, in the order asked. */
  const sysctls = async (host: Parameters<Topology['ns']>[0], keys: string[]) =>
    (await topo.execOk(host, ['sysctl', '-n', ...keys])).stdout.split('\n').filter(Boolean);

  it('the nodes route both families, bridge both through netfilter and send no IPv4 redirects', async () => {
    const keys = [
      'net.ipv4.ip_forward',
      'net.ipv6.conf.all.forwarding',
      'net.bridge.bridge-nf-call-iptables',
      'net.bridge.bridge-nf-call-ip6tables',
      'net.ipv4.conf.all.send_redirects',
      'net.ipv4.conf.eth0.send_redirects',
      'net.ipv4.conf.cbr0.send_redirects',
    ];
    for (const node of ['node-a', 'node-b'] as const) expect(await sysctls(node, keys)).toEqual(['1', '1', '1', '1', '0', '0', '0']);
  });

  it('no host takes redirects or holds addresses back for duplicate address detection', async () => {
    const keys = ['net.ipv4.conf.all.accept_redirects', 'net.ipv6.conf.all.accept_redirects', 'net.ipv6.conf.eth0.accept_dad'];
    for (const host of topo.hosts.filter((h) => h !== 'lan')) expect(await sysctls(host, keys), host).toEqual(['0', '0', '0']);
    const tentative = await topo.execOk('node-a', ['ip', '-6', 'addr', 'show', 'tentative']);
    expect(tentative.stdout.trim()).toBe('');
  });

  it('the client and the nodes route as the README says', async () => {
    const routes = async (host: 'node-a' | 'node-b' | 'client') => (await topo.execOk(host, ['ip', '-6', 'route', 'show'])).stdout;
    expect(await routes('client')).toContain('2001:2:0:200::/64 via 2001:2::1 dev eth0');
    expect(await routes('node-a')).toContain('2001:2:0:12::/64 via 2001:2::2 dev eth0');
    expect(await routes('node-a')).toContain('default via 2001:2::100 dev eth0');
    expect(await routes('node-b')).toContain('2001:2:0:11::/64 via 2001:2::1 dev eth0');
    const pod = (await topo.execOk('pod:a1', ['ip', '-6', 'route', 'show'])).stdout;
    expect(pod).toContain('default via 2001:2:0:11::1 dev eth0');
    // A pod without ip6 has no IPv6 address but its link-local one.
    const b2 = (await topo.execOk('pod:b2', ['ip', '-6', '-o', 'addr', 'show', 'scope', 'global'])).stdout;
    expect(b2.trim()).toBe('');
  });
});

afterAll(async () => {
  const prefix = `kpt${process.pid}x`;
  expect((await listNamespaces()).filter((n) => n.startsWith(prefix))).toEqual([]);
});
