// Real traffic for what only the iptables mode does: NodePorts on 127.0.0.1 from the node itself (upstream's
// localhostNodePorts, with route_localnet and the localnet guard), and refused without them; on both
// backends, synced and from the dry run. The scenarios are built here (the shared ones run in
// iptables-scenarios.test.ts); the proxiers of both families program node-a in this process.
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

/** A NodePort Service `name` on `nodePort` (target 8080) and its EndpointSlice of `pods` ([ip, node]). */
function nodePortService(name: string, nodePort: number, pods: [string, string][], externalTrafficPolicy = 'Cluster'): Record<string, unknown>[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'lo' },
      spec: {
        type: 'NodePort',
        clusterIP: `198.18.100.${nodePort - 30000}`,
        clusterIPs: [`198.18.100.${nodePort - 30000}`],
        externalTrafficPolicy,
        ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort, protocol: 'TCP' }],
      },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'lo', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: pods.map(([ip, nodeName]) => ({ addresses: [ip], conditions: { ready: true }, nodeName })),
    },
  ];
}

const pods: Scenario['pods'] = [
  { name: 'l1', node: 'node-a', ip: '198.19.1.81', ports: [{ port: 8080, protocol: 'tcp' }] },
  { name: 'r1', node: 'node-b', ip: '198.19.2.81', ports: [{ port: 8080, protocol: 'tcp' }] },
];
const objects = [
  ...nodePortService('both', 30081, [
    ['198.19.1.81', 'node-a'],
    ['198.19.2.81', 'node-b'],
  ]),
  // externalTrafficPolicy Local without a local endpoint: the node itself still reaches it (upstream's short circuit).
  ...nodePortService('remote-local', 30082, [['198.19.2.81', 'node-b']], 'Local'),
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

const VARIANTS: { backend: Backend; how: How }[] = [
  { backend: 'nft', how: 'full sync' },
  { backend: 'legacy', how: 'partial sync' },
  { backend: 'nft', how: 'dry run' },
];
const CASES: { scenario: Scenario; configured: Partial<ProxyConfig> }[] = [
  { scenario: localhostOn, configured: {} },
  { scenario: localhostOff, configured: { localhostNodePorts: false } },
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
