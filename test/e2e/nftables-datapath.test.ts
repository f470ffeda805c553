// Traffic through the nftables data path beyond the shared scenarios: changes applied incrementally
// while clients connect (affinity to a removed endpoint, source ranges, new endpoints), Local policy
// without local endpoints, --masquerade-all, cluster-ips-check (a ClusterIP port nothing serves is refused
// at once), and the scratch register never leaving the node. The proxier runs in-process, programming
// node-a of the scenario topology (src/lab/sandbox). IPv6: nftables-ipv6.test.ts.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EndpointSlice, Service } from '../../src/model/k8s.ts';
import { ClusterState } from '../../src/model/store.ts';
import type { ProxyConfig } from '../../src/model/types.ts';
import { NftablesProxier } from '../../src/modes/nftables/index.ts';
import { judge } from '../../src/lab/sandbox/judge.ts';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import { runProbe } from '../../src/lab/sandbox/probe.ts';
import type { Expectation, ProbeSource } from '../../src/lab/sandbox/scenario.ts';
import { sweepStale, Topology } from '../../src/lab/sandbox/topology.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, nft): run them as root');

const CONFIG: ProxyConfig = { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [] };
const NS = 'e2e';

const PODS = [
  { name: 'a1', node: 'node-a' as const, ip: '198.19.1.11', ports: [{ port: 8080, protocol: 'tcp' as const }] },
  { name: 'a2', node: 'node-a' as const, ip: '198.19.1.12', ports: [] },
  { name: 'a3', node: 'node-a' as const, ip: '198.19.1.13', ports: [{ port: 8080, protocol: 'tcp' as const }] },
  { name: 'b1', node: 'node-b' as const, ip: '198.19.2.11', ports: [{ port: 8080, protocol: 'tcp' as const }] },
];
const IP: Record<string, string> = { a1: '198.19.1.11', a3: '198.19.1.13', b1: '198.19.2.11' };

function service(name: string, spec: NonNullable<Service['spec']>, lbIP?: string): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: NS },
    spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], ...spec },
    ...(lbIP ? { status: { loadBalancer: { ingress: [{ ip: lbIP }] } } } : {}),
  } as Service;
}

function slice(svc: string, pods: string[]): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-1`, namespace: NS, labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: pods.map((p) => ({ addresses: [IP[p]!], conditions: { ready: true }, nodeName: p.startsWith('a') ? 'node-a' : 'node-b' })),
  };
}

let topo: Topology;

/** A cluster and a proxier programming node-a; sync() applies what changed since the last call. */
class Node {
  readonly cluster: ClusterState;
  readonly proxier: NftablesProxier;
  private first = true;
  constructor(config: ProxyConfig = CONFIG) {
    this.cluster = new ClusterState(config);
    this.proxier = new NftablesProxier({ config, family: 'IPv4', iptablesBackend: 'auto', netns: topo.ns('node-a') });
  }
  async apply(...objects: (Service | EndpointSlice)[]) {
    for (const o of objects) this.cluster.upsert(o);
    const { state, changes } = this.cluster.commit();
    const r = await this.proxier.sync(state, this.first ? null : changes);
    if (!this.first) expect(r.full).toBe(false);
    this.first = false;
    return r;
  }
}

async function probe(from: ProbeSource, to: string, tries: number, expect_: Expectation, timeoutMs = 1500) {
  const [ip, port] = to.split(':') as [string, string];
  const r = await runProbe(topo, { from, to: { ip, port: Number(port), protocol: 'tcp' }, tries, timeoutMs });
  const v = judge(r.tries, expect_);
  if (!v.ok) throw new Error(`probe ${from} -> ${to}: ${v.reasons.join('; ')} (${v.summary})`);
  return r.tries.map((t) => (typeof t === 'object' ? t.answer.pod : t));
}

beforeAll(async () => {
  await sweepStale();
  topo = await Topology.create({ pods: PODS });
  await startPodServers(topo);
}, 60_000);

afterAll(async () => {
  await topo?.destroy();
});

describe('nftables data path', () => {
  it('services with different endpoint counts side by side each reach exactly their endpoints', async () => {
    const node = new Node();
    await node.apply(
      service('one', { clusterIP: '198.18.100.41', clusterIPs: ['198.18.100.41'] }),
      slice('one', ['a3']),
      service('two', { clusterIP: '198.18.100.42', clusterIPs: ['198.18.100.42'] }),
      slice('two', ['a1', 'b1']),
      service('three', { clusterIP: '198.18.100.43', clusterIPs: ['198.18.100.43'] }),
      slice('three', ['a1', 'a3', 'b1']),
    );
    await probe('pod:a2', '198.18.100.41:80', 10, { backends: ['a3'] });
    await probe('pod:a2', '198.18.100.42:80', 30, { backends: ['a1', 'b1'] });
    await probe('pod:a2', '198.18.100.43:80', 40, { backends: ['a1', 'a3', 'b1'] });
  });

  it('ClientIP affinity: a client stays on its endpoint, moves when that endpoint is removed, and stays on the new one', async () => {
    const node = new Node();
    const svc = service('sticky', {
      clusterIP: '198.18.100.50',
      clusterIPs: ['198.18.100.50'],
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
    });
    await node.apply(svc, slice('sticky', ['a1', 'b1']));
    const first = await probe('pod:a2', '198.18.100.50:80', 10, { sticky: true, oneOf: ['a1', 'b1'] });
    const chosen = first[0]!;
    const other = chosen === 'a1' ? 'b1' : 'a1';
    // The node itself (nat output path) is a client of its own.
    await probe('node-a', '198.18.100.50:80', 10, { sticky: true, oneOf: ['a1', 'b1'] });
    // The choice is remembered with the service's timeout.
    const remembered = (await topo.execOk('node-a', ['nft', 'list', 'set', 'ip', 'kube-proxy-ts', 'svc-aff-present'])).stdout;
    expect(remembered).toMatch(/198\.19\.1\.12 \. 198\.18\.100\.50 \. tcp \. 80 timeout 10m expires/);
    await node.apply(slice('sticky', [other]));
    await probe('pod:a2', '198.18.100.50:80', 10, { backends: [other] });
    // The removed endpoint comes back: the client keeps its new endpoint.
    await node.apply(slice('sticky', ['a1', 'b1']));
    await probe('pod:a2', '198.18.100.50:80', 10, { backends: [other] });
  });

  it('new endpoints take traffic as soon as the incremental sync returns', async () => {
    const node = new Node();
    const svc = service('grow', { clusterIP: '198.18.100.60', clusterIPs: ['198.18.100.60'] });
    await node.apply(svc, slice('grow', ['a1']));
    await probe('pod:a2', '198.18.100.60:80', 10, { backends: ['a1'] });
    await node.apply(slice('grow', ['a1', 'b1']));
    await probe('pod:a2', '198.18.100.60:80', 30, { backends: ['a1', 'b1'], sourceIP: '198.19.1.12' });
    await node.apply(slice('grow', []));
    await probe('pod:a2', '198.18.100.60:80', 2, { refused: true });
  });

  it('load-balancer source ranges: allowed clients pass, others are dropped, changes apply incrementally', async () => {
    const node = new Node();
    const spec = { type: 'LoadBalancer', clusterIP: '198.18.100.70', clusterIPs: ['198.18.100.70'], loadBalancerSourceRanges: ['198.18.0.100/32'] };
    await node.apply(service('fw', spec, '198.18.200.70'), slice('fw', ['a1', 'b1']));
    await probe('client', '198.18.200.70:80', 10, { oneOf: ['a1', 'b1'], sourceNot: '198.18.0.100' });
    await node.apply(service('fw', { ...spec, loadBalancerSourceRanges: ['10.0.0.0/8'] }, '198.18.200.70'));
    await probe('client', '198.18.200.70:80', 2, { dropped: true }, 800);
  });

  it('Local policy without a local endpoint: outside clients are dropped, pods and the node use the remote endpoint', async () => {
    const node = new Node();
    const spec = {
      type: 'NodePort',
      clusterIP: '198.18.100.80',
      clusterIPs: ['198.18.100.80'],
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080, protocol: 'TCP' }],
    };
    await node.apply(service('remote', spec), slice('remote', ['b1']));
    await probe('client', '198.18.0.1:30080', 2, { dropped: true }, 800);
    await probe('pod:a2', '198.18.0.1:30080', 10, { backends: ['b1'], sourceIP: '198.19.1.12' });
    await probe('node-a', '198.18.0.1:30080', 10, { backends: ['b1'] });
  });

  it('cluster-ips-check: a port or protocol of a ClusterIP that no service port serves is refused at once, from pods and from the node', async () => {
    const node = new Node();
    await node.apply(
      service('checked', { clusterIP: '198.18.100.85', clusterIPs: ['198.18.100.85'] }),
      slice('checked', ['a1', 'b1']),
      service('empty', { clusterIP: '198.18.100.86', clusterIPs: ['198.18.100.86'] }),
    );
    await probe('pod:a2', '198.18.100.85:80', 10, { oneOf: ['a1', 'b1'] });
    // Each source meets at most three rejects: the kernel sends a burst of six ICMP errors to one destination,
    // then one a second, and a rate-limited reject looks like a slow one.
    const refused = async (from: ProbeSource, to: string, protocol: 'tcp' | 'udp' = 'tcp') => {
      const [ip, port] = to.split(':') as [string, string];
      const r = await runProbe(topo, { from, to: { ip, port: Number(port), protocol }, tries: 3, timeoutMs: 3000 });
      const v = judge(r.tries, { refused: true });
      if (!v.ok) throw new Error(`probe ${from} -> ${to}/${protocol}: ${v.reasons.join('; ')} (${v.summary})`);
      // At once: an ICMP port unreachable for each try, not a timeout nor a SYN retransmission (1 s).
      expect(r.durationMs).toBeLessThan(900);
    };
    await refused('pod:a2', '198.18.100.85:81');
    await refused('pod:a3', '198.18.100.85:80', 'udp');
    await refused('node-a', '198.18.100.85:81');
    // A service port without endpoints is refused by its no-endpoint rule, as before.
    await refused('pod:a1', '198.18.100.86:80');
    // The served port still works after all that.
    await probe('node-a', '198.18.100.85:80', 5, { oneOf: ['a1', 'b1'] });
  });

  it('--masquerade-all masquerades pod traffic to ClusterIPs too', async () => {
    const node = new Node({ ...CONFIG, masqueradeAll: true });
    await node.apply(service('all', { clusterIP: '198.18.100.90', clusterIPs: ['198.18.100.90'] }), slice('all', ['b1']));
    await probe('pod:a2', '198.18.100.90:80', 5, { backends: ['b1'], sourceNot: '198.19.1.12' });
  });

  it('the scratch register (skb->priority) never leaves node-a with our values', async () => {
    const node = new Node();
    await node.apply(service('scratch', { clusterIP: '198.18.100.95', clusterIPs: ['198.18.100.95'] }), slice('scratch', ['a1', 'b1']));
    // Observers before and after our nat postrouting chain (priority 100) count packets carrying a
    // scratch value: some before (the node's own connections keep skb->priority), none after.
    const observer = `table ip kpt-observe {
      counter seen {}
      counter leaked {}
      counter translated {}
      chain before { type filter hook postrouting priority 50; policy accept;
        meta priority & 0xfffe0000 == 0x7e560000 counter name seen
      }
      chain after { type filter hook postrouting priority 300; policy accept;
        meta priority & 0xfffe0000 == 0x7e560000 counter name leaked
        ct status dnat counter name translated
      }
    }`;
    // nft 1.0.6 cannot read a Node pipe: through a file.
    const dir = await mkdtemp(path.join(tmpdir(), 'kpt-observe-'));
    try {
      await writeFile(path.join(dir, 'observe.nft'), observer);
      await topo.execOk('node-a', ['nft', '-f', path.join(dir, 'observe.nft')]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    await probe('node-a', '198.18.100.95:80', 10, { oneOf: ['a1', 'b1'] });
    await probe('pod:a2', '198.18.100.95:80', 10, { oneOf: ['a1', 'b1'] });
    const counters = (await topo.execOk('node-a', ['nft', '-j', 'list', 'counters', 'table', 'ip', 'kpt-observe'])).stdout;
    const byName = Object.fromEntries(
      (JSON.parse(counters).nftables as { counter?: { name: string; packets: number } }[])
        .filter((o) => o.counter)
        .map((o) => [o.counter!.name, o.counter!.packets]),
    );
    expect(byName.translated).toBeGreaterThan(0);
    expect(byName.seen).toBeGreaterThan(0);
    expect(byName.leaked).toBe(0);
    await topo.execOk('node-a', ['nft', 'delete', 'table', 'ip', 'kpt-observe']);
  });
});
