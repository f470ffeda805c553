// Real traffic for what the iptables mode must get right beyond the shared scenarios: NodePorts on
// 127.0.0.1 from the node itself (upstream's localhostNodePorts, with route_localnet and the localnet
// guard), refused without them; and IPv6 through ip6tables (ClusterIP, NodePort, affinity, REJECT, never
// on ::1). On both backends, synced and from the dry run. The scenarios are built here (the shared ones
// run in iptables-scenarios.test.ts); the proxiers of both families program node-a in this process.
import { beforeAll, describe, it } from 'vitest';
import type { ProxyConfig } from '../../src/model/types.ts';
import type { Backend } from '../../src/modes/iptables/restore.ts';
import { DEFAULT_PROBE_TIMEOUT_MS, type ProbeSpec, type Scenario } from '../../src/lab/sandbox/scenario.ts';
import { sweepStale } from '../../src/lab/sandbox/topology.ts';
import { formatRun, runScenario, scenarioBudgetMs } from '../harness/run.ts';
import { type How, inProcessProxy } from './iptables-helpers.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables): run them as root');

type Probe = Omit<ProbeSpec, 'timeoutMs'> & Partial<Pick<ProbeSpec, 'timeoutMs'>>;
const probe = (p: Probe): ProbeSpec => ({ timeoutMs: DEFAULT_PROBE_TIMEOUT_MS, ...p });
const tcp = (ip: string, port: number) => ({ ip, port, protocol: 'tcp' as const });

interface ServiceSpec {
  name: string;
  clusterIP: string;
  nodePort?: number;
  /** [ip, node] of each endpoint (port 8080). */
  endpoints: [string, string][];
  externalTrafficPolicy?: 'Cluster' | 'Local';
  sessionAffinity?: 'ClientIP';
}

/** A Service of one TCP port 80 (target 8080, NodePort type when it has one) and its EndpointSlice. */
function service(s: ServiceSpec): Record<string, unknown>[] {
  const family = s.clusterIP.includes(':') ? 'IPv6' : 'IPv4';
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: s.name, namespace: 'ipt' },
      spec: {
        type: s.nodePort ? 'NodePort' : 'ClusterIP',
        ipFamilies: [family],
        clusterIP: s.clusterIP,
        clusterIPs: [s.clusterIP],
        ...(s.nodePort ? { externalTrafficPolicy: s.externalTrafficPolicy ?? 'Cluster' } : {}),
        ...(s.sessionAffinity ? { sessionAffinity: s.sessionAffinity } : {}),
        ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', ...(s.nodePort ? { nodePort: s.nodePort } : {}) }],
      },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${s.name}-1`, namespace: 'ipt', labels: { 'kubernetes.io/service-name': s.name } },
      addressType: family,
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: s.endpoints.map(([ip, nodeName]) => ({ addresses: [ip], conditions: { ready: true }, nodeName })),
    },
  ];
}

const pods: Scenario['pods'] = [
  { name: 'l1', node: 'node-a', ip: '198.19.1.81', ports: [{ port: 8080, protocol: 'tcp' }] },
  { name: 'r1', node: 'node-b', ip: '198.19.2.81', ports: [{ port: 8080, protocol: 'tcp' }] },
];
const objects = [
  ...service({
    name: 'both',
    clusterIP: '198.18.100.81',
    nodePort: 30081,
    endpoints: [
      ['198.19.1.81', 'node-a'],
      ['198.19.2.81', 'node-b'],
    ],
  }),
  // externalTrafficPolicy Local without a local endpoint: the node itself still reaches it (upstream's short circuit).
  ...service({ name: 'remote-local', clusterIP: '198.18.100.82', nodePort: 30082, externalTrafficPolicy: 'Local', endpoints: [['198.19.2.81', 'node-b']] }),
];

const localhostOn: Scenario = {
  name: 'localhost-nodeports',
  description: 'NodePorts answer on 127.0.0.1 from the node, masqueraded; outside traffic is unchanged',
  pods,
  objects,
  probes: [
    probe({
      name: 'node to 127.0.0.1:NodePort reaches both endpoints',
      from: 'node-a',
      to: tcp('127.0.0.1', 30081),
      tries: 30,
      expect: { backends: ['l1', 'r1'], sourceNot: '127.0.0.1' },
    }),
    probe({
      name: 'node to 127.0.0.1:NodePort of a Local policy uses the cluster endpoints',
      from: 'node-a',
      to: tcp('127.0.0.1', 30082),
      tries: 10,
      expect: { backends: ['r1'] },
    }),
    probe({ name: 'client to the node address still works', from: 'client', to: tcp('198.18.0.1', 30081), tries: 20, expect: { backends: ['l1', 'r1'] } }),
    probe({
      name: 'client to a Local NodePort without local endpoints is dropped',
      from: 'client',
      to: tcp('198.18.0.1', 30082),
      tries: 2,
      timeoutMs: 700,
      expect: { dropped: true },
    }),
  ],
};

const localhostOff: Scenario = {
  name: 'localhost-nodeports-off',
  description: 'with localhostNodePorts false, 127.0.0.1:NodePort is not DNATed (nothing listens there: refused)',
  pods,
  objects,
  probes: [
    probe({ name: 'node to 127.0.0.1:NodePort is refused', from: 'node-a', to: tcp('127.0.0.1', 30081), tries: 3, expect: { refused: true } }),
    probe({
      name: 'node to its own address:NodePort still works',
      from: 'node-a',
      to: tcp('198.18.0.1', 30081),
      tries: 20,
      expect: { backends: ['l1', 'r1'] },
    }),
  ],
};

// ---- IPv6 -------------------------------------------------------------------------------------------

const POD6 = { s1: '2001:2:0:11::91', s2: '2001:2:0:12::91', c6: '2001:2:0:11::92' } as const;
const NODE_A6 = '2001:2::1';

const ipv6: Scenario = {
  name: 'ipv6',
  description: 'IPv6 through ip6tables: ClusterIP, NodePort (never on ::1), ClientIP affinity, REJECT without endpoints',
  pods: [
    { name: 's1', node: 'node-a', ip: '198.19.1.91', ip6: POD6.s1, ports: [{ port: 8080, protocol: 'tcp' }] },
    { name: 's2', node: 'node-b', ip: '198.19.2.91', ip6: POD6.s2, ports: [{ port: 8080, protocol: 'tcp' }] },
    { name: 'c6', node: 'node-a', ip: '198.19.1.92', ip6: POD6.c6, ports: [] },
  ],
  objects: [
    ...service({
      name: 'web6',
      clusterIP: '2001:2:0:100::91',
      nodePort: 30091,
      endpoints: [
        [POD6.s1, 'node-a'],
        [POD6.s2, 'node-b'],
      ],
    }),
    ...service({
      name: 'sticky6',
      clusterIP: '2001:2:0:100::92',
      sessionAffinity: 'ClientIP',
      endpoints: [
        [POD6.s1, 'node-a'],
        [POD6.s2, 'node-b'],
      ],
    }),
    ...service({ name: 'empty6', clusterIP: '2001:2:0:100::93', endpoints: [] }),
  ],
  probes: [
    probe({
      name: 'pod to the IPv6 ClusterIP reaches both, its address kept',
      from: 'pod:c6',
      to: tcp('2001:2:0:100::91', 80),
      tries: 30,
      expect: { backends: ['s1', 's2'], sourceIP: POD6.c6 },
    }),
    probe({
      name: 'client to the IPv6 NodePort reaches both, masqueraded',
      from: 'client',
      to: tcp(NODE_A6, 30091),
      tries: 30,
      expect: { backends: ['s1', 's2'], sourceNot: '2001:2::100' },
    }),
    probe({ name: 'node to its own IPv6 address:NodePort', from: 'node-a', to: tcp(NODE_A6, 30091), tries: 20, expect: { backends: ['s1', 's2'] } }),
    probe({ name: 'node to [::1]:NodePort is not a NodePort (refused)', from: 'node-a', to: tcp('::1', 30091), tries: 3, expect: { refused: true } }),
    probe({
      name: 'ClientIP affinity keeps a client on one endpoint',
      from: 'pod:c6',
      to: tcp('2001:2:0:100::92', 80),
      tries: 20,
      expect: { sticky: true, oneOf: ['s1', 's2'] },
    }),
    probe({ name: 'an IPv6 service without endpoints rejects at once', from: 'pod:c6', to: tcp('2001:2:0:100::93', 80), tries: 3, expect: { refused: true } }),
  ],
};

const VARIANTS: { backend: Backend; how: How }[] = [
  { backend: 'nft', how: 'full sync' },
  { backend: 'legacy', how: 'partial sync' },
  { backend: 'nft', how: 'dry run' },
];
const CASES: { scenario: Scenario; configured?: Partial<ProxyConfig> }[] = [
  { scenario: localhostOn },
  { scenario: localhostOff, configured: { localhostNodePorts: false } },
  { scenario: ipv6 },
];

beforeAll(async () => {
  await sweepStale();
});

for (const { backend, how } of VARIANTS) {
  describe(`iptables ${backend}, ${how}`, () => {
    for (const { scenario, configured } of CASES) {
      it(
        scenario.name,
        async () => {
          const run = await runScenario(scenario, inProcessProxy(scenario, backend, how, configured));
          if (!run.ok) throw new Error(formatRun(run));
        },
        scenarioBudgetMs(scenario),
      );
    }
  });
}
