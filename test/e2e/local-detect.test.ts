// --detect-local-mode and the masquerade bit, shown with packets in every mode that masquerades, from a
// KubeProxyConfiguration as a node runs it (the nftables mode reads nftables.masqueradeBit, the iptables mode
// iptables.masqueradeBit, as upstream). In the sandbox, node-a's pods sit on the bridge cbr0 (198.19.1.0/24),
// an off-cluster client reaches ClusterIPs through node-a (a route this test adds in the client's namespace),
// and the one endpoint, b1, is on node-b, so the source it sees is the proof:
//   - ClusterIP from a local pod: the pod's own address (IfNotLocal did not mark it);
//   - ClusterIP from the client: node-a's address (IfNotLocal marked it, the configured bit masqueraded it);
//   - NodePort of an externalTrafficPolicy Local service (no endpoint on node-a) from a local pod: answered by b1
//     (IfLocal short-circuits pods to the cluster endpoints), and dropped from the client.
// Only the modes whose backends see the client's address (ModeDefinition.keepsClientAddress) run it: the
// userspace proxy opens its own connections, so its backends always see the node's address, and it marks
// nothing; it is left out rather than skipped (a skipped test fails CI).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import { type ProbeTry, runProbe } from '../../src/lab/sandbox/probe.ts';
import { binCommand, type ProxyProcess, startProxy } from '../../src/lab/sandbox/proxy.ts';
import { parseProbeTarget, type Scenario } from '../../src/lab/sandbox/scenario.ts';
import { NETWORK, Topology } from '../../src/lab/sandbox/topology.ts';
import { MODE_DEFINITIONS } from '../../src/modes/index.ts';
import type { ModeName } from '../../src/modes/types.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const NODE_A = NETWORK.IPv4['node-a'];
const CLIENT = NETWORK.IPv4.client;
const A2 = '198.19.1.12';
const B1 = '198.19.2.11';
const CLUSTER_IP = '198.18.100.10';
const LOCAL_CLUSTER_IP = '198.18.100.20';
const NODE_PORT = 30020;
const MASQUERADE_BIT = 9; // 0x200, not the default 0x4000

const tcp = (port: number) => ({ port, protocol: 'tcp' as const });
const scenario = {
  name: 'local-detect',
  description: 'detect-local modes and the masquerade bit',
  pods: [
    { name: 'b1', node: 'node-b', ip: B1, ports: [tcp(8080)] },
    { name: 'a2', node: 'node-a', ip: A2, ports: [] },
  ],
  objects: [],
  probes: [],
} as unknown as Scenario;

const OBJECTS = [
  {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node-a' },
    spec: { podCIDR: '198.19.1.0/24', podCIDRs: ['198.19.1.0/24'] },
    status: { addresses: [{ type: 'InternalIP', address: NODE_A }] },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { clusterIP: CLUSTER_IP, clusterIPs: [CLUSTER_IP], ports: [{ name: 'p', port: 80, targetPort: 8080 }] },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'local', namespace: 'shop' },
    spec: {
      type: 'NodePort',
      externalTrafficPolicy: 'Local',
      clusterIP: LOCAL_CLUSTER_IP,
      clusterIPs: [LOCAL_CLUSTER_IP],
      ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort: NODE_PORT }],
    },
  },
  ...['web', 'local'].map((svc) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-1`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports: [{ name: 'p', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: [B1], conditions: { ready: true }, nodeName: 'node-b' }],
  })),
];

/** The configurations under test: each detect-local mode; only ClusterCIDR has a cluster CIDR, so the others must detect by their own means. */
const VARIANTS: { name: string; config: Record<string, unknown> }[] = [
  { name: 'ClusterCIDR', config: { clusterCIDR: '198.19.0.0/16', detectLocalMode: 'ClusterCIDR' } },
  { name: 'NodeCIDR', config: { detectLocalMode: 'NodeCIDR' } },
  { name: 'BridgeInterface', config: { detectLocalMode: 'BridgeInterface', detectLocal: { bridgeInterface: 'cbr0' } } },
  { name: 'InterfaceNamePrefix', config: { detectLocalMode: 'InterfaceNamePrefix', detectLocal: { interfaceNamePrefix: 'cbr' } } },
];

/** GET inside node-a (the metrics address is node-a's loopback): the body. */
async function getIn(topo: Topology, url: string): Promise<string> {
  const js = `fetch(${JSON.stringify(url)}).then(async r => process.stdout.write(await r.text()))`;
  return (await topo.execOk('node-a', [process.execPath, '-e', js])).stdout;
}

/** What each try saw: "pod<-source" for an answer, else the failure. */
const seen = (tries: ProbeTry[]) => [...new Set(tries.map((t) => (typeof t === 'object' ? `${t.answer.pod}<-${t.answer.sourceIP}` : t)))].sort();

for (const mode of (Object.keys(MODE_DEFINITIONS) as ModeName[]).filter((m) => MODE_DEFINITIONS[m].keepsClientAddress)) {
  describe(`${mode}: detect-local modes and masqueradeBit ${MASQUERADE_BIT}`, () => {
    let topo: Topology;
    let dir: string;

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), `kpt-local-detect-${mode}-`));
      writeFileSync(path.join(dir, 'objects.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: OBJECTS }));
      topo = await Topology.create(scenario);
      await startPodServers(topo);
      // The off-cluster client reaches ClusterIPs through node-a (inside the client's namespace, made here).
      const route = await topo.exec('client', ['ip', 'route', 'add', '198.18.100.0/24', 'via', NODE_A]);
      if (route.code !== 0) throw new Error(`ip route add in the client: ${route.stderr}`);
    }, 60_000);

    afterAll(async () => {
      await topo?.destroy();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    for (const variant of VARIANTS) {
      it(`${variant.name}: local pods keep their address, the client is masqueraded with bit ${MASQUERADE_BIT}, pods short-circuit Local NodePorts`, async () => {
        const configFile = path.join(dir, `${variant.name}.json`);
        writeFileSync(
          configFile,
          JSON.stringify({
            apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
            kind: 'KubeProxyConfiguration',
            mode,
            iptables: { masqueradeBit: MASQUERADE_BIT },
            nftables: { masqueradeBit: MASQUERADE_BIT },
            metricsBindAddress: '127.0.0.1:10249',
            healthzBindAddress: '127.0.0.1:0',
            ...variant.config,
          }),
        );
        const argv = binCommand([`--config=${configFile}`, '--hostname-override=node-a', '--from', path.join(dir, 'objects.json')]);
        let proxy: ProxyProcess | null = null;
        try {
          proxy = await startProxy(topo, argv, { syncTimeoutMs: 30_000 });
          const probe = async (from: 'pod:a2' | 'client', to: string, tries = 4) =>
            seen((await runProbe(topo, { from, to: parseProbeTarget(to)!, tries, timeoutMs: 800 })).tries);
          const get = (url: string) => getIn(topo, url);
          const why = () => `\n${proxy!.output().slice(-3000)}`;

          expect(await probe('pod:a2', `${CLUSTER_IP}:80/tcp`), `pod -> ClusterIP${why()}`).toEqual([`b1<-${A2}`]);
          expect(await probe('client', `${CLUSTER_IP}:80/tcp`), `client -> ClusterIP${why()}`).toEqual([`b1<-${NODE_A}`]);
          expect(await probe('pod:a2', `${NODE_A}:${NODE_PORT}/tcp`), `pod -> Local NodePort${why()}`).toEqual([`b1<-${A2}`]);
          expect(await probe('client', `${NODE_A}:${NODE_PORT}/tcp`, 2), `client -> Local NodePort${why()}`).toEqual(['timeout']);

          // The bit in the rules is the configured one, whichever tool holds them.
          const dump = (await topo.exec('node-a', ['iptables-save'])).stdout + (await topo.exec('node-a', ['nft', 'list', 'ruleset'])).stdout;
          expect(dump).toMatch(/0x0*200\b/);
          expect(dump).not.toMatch(/0x0*4000\b/);
          expect(dump).not.toContain(CLIENT);

          // The iptables rule-count gauges, where the mode reports them, count exactly the rules of ours in each table.
          const metrics = await get('http://127.0.0.1:10249/metrics');
          for (const table of ['nat', 'filter']) {
            const total = new RegExp(`^kubeproxy_sync_proxy_rules_iptables_total\\{ip_family="IPv4",table="${table}"\\} (\\d+)$`, 'm').exec(metrics);
            const last = new RegExp(`^kubeproxy_sync_proxy_rules_iptables_last\\{ip_family="IPv4",table="${table}"\\} (\\d+)$`, 'm').exec(metrics);
            const saved = (await topo.exec('node-a', ['iptables-save', '-t', table])).stdout;
            const ours = saved.split('\n').filter((l) => l.startsWith('-A KUBE-')).length;
            const programsIptables = saved.includes(':KUBE-SERVICES ');
            expect(total !== null, `${table} total series${why()}`).toBe(programsIptables);
            if (total === null) continue;
            expect(Number(total[1]), `${table} rules of ours`).toBe(ours);
            expect(Number(last![1])).toBeLessThanOrEqual(ours);
          }
        } finally {
          await proxy?.stop(5_000);
        }
      }, 90_000);
    }
  });
}
