// One behaviour table for both kernel modes: the packet flows of upstream kube-proxy's own proxier tests
// (kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go and pkg/proxy/nftables/proxier_test.go, their
// runPacketFlowTests tables), written in this project's terms. flows.test.ts renders each case with the
// iptables and the nftables mode and follows every flow through the generated rules with a packet
// simulator (iptables-sim.ts, nftables-sim.ts); every flow must hold in both.
//
// A flow is the first packet of a connection: its source, its destination and what must happen to it
// (DNAT to one of a set of endpoints, each as likely, with or without masquerade; REJECT; DROP; or
// nothing). Where a mode legitimately answers otherwise, the flow says so with the reason (`modes`), as
// upstream's two test files also differ; where this table departs from upstream's expectation for both
// modes, `departs` quotes upstream and says why. Nothing is skipped silently.
//
// Addresses: upstream's test network mapped onto this project's (the shared scenarios' topology, 198.18.0.0/15
// and 2001:2::/48):
//   upstream                          here
//   pod CIDR 10.0.0.0/8               198.19.0.0/16 (pods on this node 198.19.1.x, on others 198.19.2.x);
//                                     IPv6 2001:2:0:10::/60 (2001:2:0:11::x, 2001:2:0:12::x)
//   ClusterIPs 172.30.0.0/16          198.18.100.0/24; IPv6 2001:2:0:100::/64
//   node IP 192.168.0.2, alt .1.2     198.18.0.1 and 198.18.1.1; IPv6 2001:2::1 and 2001:2:0:1::1
//   external IP 192.168.99.11         198.18.200.11 (one of the node's own addresses, as upstream's is)
//   LB IPs 1.2.3.4, 5.6.7.8, 9.10.11.12   198.18.200.4, 198.18.200.8, 198.18.200.12
//   outside clients 203.0.113.0/24    198.18.64.0/24 (source range 198.18.64.0/25: .2 allowed, .130 not);
//                                     IPv6 2001:2:0:64::2
// Upstream's endpoints are named by role here: endpoints on this node 198.19.1.1N, elsewhere 198.19.2.1N.
import type { Endpoint, IPFamily, Protocol, ProxyConfig, ServicePort } from '../../src/model/types.ts';
import { endpoint, type EndpointSpec, NODE, type PortSpec, servicePort } from './model-fixtures.ts';

/** The kernel modes the table runs against. */
export type KernelMode = 'iptables' | 'nftables';
export const KERNEL_MODES: readonly KernelMode[] = ['iptables', 'nftables'];

/** What happens to the first packet of a connection. */
export type Expect =
  /** DNAT to one of `endpoints` ("ip:port", "[ip]:port"), each as likely; masqueraded or not. */
  | { verdict: 'dnat'; endpoints: string[]; masquerade: boolean }
  /** No rule translates or stops it: it goes on as it came (upstream's "" and "ACCEPT"). */
  | { verdict: 'pass' }
  | { verdict: 'reject' }
  | { verdict: 'drop' };

export interface Flow {
  /** Upstream's name of the flow. */
  name: string;
  from: string;
  to: string;
  port: number;
  /** Default TCP. */
  protocol?: Protocol;
  expect: Expect;
  /** A mode that legitimately answers otherwise, with the reason. */
  modes?: Partial<Record<KernelMode, { expect: Expect; why: string }>>;
  /** Where `expect` departs from upstream's own test: what upstream expects there, and why this project differs. */
  departs?: { upstream: string; why: string };
}

export interface FlowCase {
  /** The upstream test (and sub-case) it mirrors. */
  name: string;
  family: IPFamily;
  /** Beyond BASE_CONFIG. */
  config: Partial<ProxyConfig>;
  ports: ServicePort[];
  flows: Flow[];
}

// ---- the test network ----

export const NODE_IP = '198.18.0.1';
export const NODE_IP_ALT = '198.18.1.1';
export const NODE_IP6 = '2001:2::1';
export const NODE_IP6_ALT = '2001:2:0:1::1';
export const EXTERNAL_IP = '198.18.200.11';
/** The node's own addresses (upstream's testNodeIPs); loopback is always local too. */
export const NODE_ADDRESSES: readonly string[] = [NODE_IP, NODE_IP_ALT, EXTERNAL_IP, NODE_IP6, NODE_IP6_ALT];

export const CLUSTER_CIDR = '198.19.0.0/16';
export const CLUSTER_CIDR6 = '2001:2:0:10::/60';
/** upstream's NewFakeProxier: a pod CIDR per family (its LocalTrafficDetector), no --masquerade-all. */
export const BASE_CONFIG: Partial<ProxyConfig> = { clusterCIDRs: [CLUSTER_CIDR, CLUSTER_CIDR6], masqueradeAll: false, nodePortAddresses: [] };

const POD = '198.19.1.2';
const POD6 = '2001:2:0:11::2';
const EXTERNAL_CLIENT = '198.18.64.2';
const EXTERNAL_CLIENT_BLOCKED = '198.18.64.130';
const EXTERNAL_CLIENT6 = '2001:2:0:64::2';
const LB_IP1 = '198.18.200.4';
const LB_IP2 = '198.18.200.8';
const LB_IP3 = '198.18.200.12';
const CLUSTER_IP = (last: number) => `198.18.100.${last}`;
const CLUSTER_IP6 = (last: number) => `2001:2:0:100::${last}`;

/** Endpoint N of this node (upstream: NodeName testNodeName). */
const local = (n: number, port = 80, spec: EndpointSpec = {}) => endpoint(`198.19.1.${10 + n}`, port, { ...spec, node: NODE });
/** Endpoint N of another node (upstream: another NodeName, or none). */
const remote = (n: number, port = 80, spec: EndpointSpec = {}) => endpoint(`198.19.2.${10 + n}`, port, { ...spec, node: 'node-b' });
const local6 = (n: number) => endpoint(`2001:2:0:11::${10 + n}`, 80, { node: NODE });
const remote6 = (n: number) => endpoint(`2001:2:0:12::${10 + n}`, 80, { node: 'node-b' });
/** Endpoint conditions of upstream's terminating tests. */
const TERMINATING = { ready: false, serving: true, terminating: true } as const;
const GONE = { ready: false, serving: false, terminating: true } as const;

const dnat = (endpoints: readonly Endpoint[], masquerade = false): Expect => ({ verdict: 'dnat', endpoints: endpoints.map((e) => e.id), masquerade });
const MASQ = true;
const PASS: Expect = { verdict: 'pass' };
const REJECT: Expect = { verdict: 'reject' };
const DROP: Expect = { verdict: 'drop' };

/** upstream's makeTestService("ns1", "svc1", ...) with one port "p80". */
const svc1 = (spec: Partial<PortSpec> = {}) => servicePort({ namespace: 'ns1', name: 'svc1', portName: 'p80', port: 80, ...spec });

const flowCase = (name: string, ports: ServicePort[], flows: Flow[], config: Partial<ProxyConfig> = {}, family: IPFamily = 'IPv4'): FlowCase => ({
  name,
  family,
  config,
  ports,
  flows,
});

// ---- TestNoEndpointsReject ----

const noEndpointsReject = flowCase(
  'TestNoEndpointsReject',
  [svc1({ clusterIPs: [CLUSTER_IP(41)], nodePort: 3001, externalIPs: [EXTERNAL_IP], loadBalancerIPs: [LB_IP1] })],
  [
    { name: 'pod to cluster IP with no endpoints', from: POD, to: CLUSTER_IP(41), port: 80, expect: REJECT },
    { name: 'external to external IP with no endpoints', from: EXTERNAL_CLIENT, to: EXTERNAL_IP, port: 80, expect: REJECT },
    { name: 'pod to NodePort with no endpoints', from: POD, to: NODE_IP, port: 3001, expect: REJECT },
    { name: 'external to NodePort with no endpoints', from: EXTERNAL_CLIENT, to: NODE_IP, port: 3001, expect: REJECT },
    { name: 'pod to LoadBalancer IP with no endpoints', from: POD, to: LB_IP1, port: 80, expect: REJECT },
    { name: 'external to LoadBalancer IP with no endpoints', from: EXTERNAL_CLIENT, to: LB_IP1, port: 80, expect: REJECT },
  ],
);

// ---- TestClusterIPGeneral ----

const NO_CLUSTER_IPS_CHECK =
  'upstream\'s iptables mode has no cluster-ips-check: a ClusterIP on a port or protocol it does not serve is left alone there (upstream iptables test: ""), while the nftables mode rejects it at once (upstream nftables test: REJECT)';

const clusterIPGeneral = (() => {
  const ep1 = local(1);
  const ep2 = remote(1);
  const svc2 = (portName: string, protocol: Protocol, port: number, targetPort: number) =>
    servicePort({
      namespace: 'ns2',
      name: 'svc2',
      portName,
      protocol,
      port,
      clusterIPs: [CLUSTER_IP(42)],
      endpoints: [local(1, targetPort), remote(1, targetPort)],
    });
  const pod = '198.19.1.12';
  return flowCase(
    'TestClusterIPGeneral',
    [
      servicePort({ namespace: 'ns1', name: 'svc1', portName: 'http', port: 80, clusterIPs: [CLUSTER_IP(41)], endpoints: [ep1] }),
      svc2('http', 'TCP', 80, 80),
      svc2('https', 'TCP', 443, 8443),
      svc2('dns-udp', 'UDP', 53, 53),
      svc2('dns-tcp', 'TCP', 53, 5353),
      svc2('dns-sctp', 'SCTP', 53, 53),
    ],
    [
      { name: 'simple clusterIP', from: pod, to: CLUSTER_IP(41), port: 80, expect: dnat([ep1]) },
      { name: 'hairpin to cluster IP', from: ep1.ip, to: CLUSTER_IP(41), port: 80, expect: dnat([ep1], MASQ) },
      { name: 'clusterIP with multiple endpoints', from: pod, to: CLUSTER_IP(42), port: 80, expect: dnat([ep1, ep2]) },
      { name: 'clusterIP with TargetPort', from: pod, to: CLUSTER_IP(42), port: 443, expect: dnat([local(1, 8443), remote(1, 8443)]) },
      {
        name: 'clusterIP with TCP, UDP, and SCTP on same port (TCP)',
        from: pod,
        to: CLUSTER_IP(42),
        port: 53,
        protocol: 'TCP',
        expect: dnat([local(1, 5353), remote(1, 5353)]),
      },
      {
        name: 'clusterIP with TCP, UDP, and SCTP on same port (UDP)',
        from: pod,
        to: CLUSTER_IP(42),
        port: 53,
        protocol: 'UDP',
        expect: dnat([local(1, 53), remote(1, 53)]),
      },
      {
        name: 'clusterIP with TCP, UDP, and SCTP on same port (SCTP)',
        from: pod,
        to: CLUSTER_IP(42),
        port: 53,
        protocol: 'SCTP',
        expect: dnat([local(1, 53), remote(1, 53)]),
      },
      {
        name: 'TCP-only port does not match UDP traffic',
        from: pod,
        to: CLUSTER_IP(42),
        port: 80,
        protocol: 'UDP',
        expect: REJECT,
        modes: { iptables: { expect: PASS, why: NO_CLUSTER_IPS_CHECK } },
      },
      {
        name: "svc1 does not accept svc2's ports",
        from: pod,
        to: CLUSTER_IP(41),
        port: 443,
        expect: REJECT,
        modes: { iptables: { expect: PASS, why: NO_CLUSTER_IPS_CHECK } },
      },
      {
        name: 'packet to unallocated cluster ip',
        from: pod,
        to: CLUSTER_IP(50),
        port: 80,
        expect: PASS,
        departs: {
          upstream: 'nftables: DROP',
          why: "upstream's nftables mode drops traffic to unallocated addresses of its --service-cluster-ip-range; this proxy is not told the service range, so an address no Service holds is not its traffic",
        },
      },
    ],
  );
})();

// ---- TestLoadBalancer ----

const loadBalancer = (() => {
  const ep = remote(1);
  return flowCase(
    'TestLoadBalancer',
    [
      svc1({
        clusterIPs: [CLUSTER_IP(41)],
        nodePort: 3001,
        loadBalancerIPs: [LB_IP1, LB_IP2],
        loadBalancerSourceRanges: ['198.18.0.0/24', '198.18.64.0/25'],
        endpoints: [ep],
      }),
    ],
    [
      { name: 'pod to cluster IP', from: POD, to: CLUSTER_IP(41), port: 80, expect: dnat([ep]) },
      { name: 'external to nodePort', from: EXTERNAL_CLIENT, to: NODE_IP, port: 3001, expect: dnat([ep], MASQ) },
      { name: 'nodePort bypasses LoadBalancerSourceRanges', from: EXTERNAL_CLIENT_BLOCKED, to: NODE_IP, port: 3001, expect: dnat([ep], MASQ) },
      { name: 'accepted external to LB1', from: EXTERNAL_CLIENT, to: LB_IP1, port: 80, expect: dnat([ep], MASQ) },
      { name: 'accepted external to LB2', from: EXTERNAL_CLIENT, to: LB_IP2, port: 80, expect: dnat([ep], MASQ) },
      { name: 'blocked external to LB1', from: EXTERNAL_CLIENT_BLOCKED, to: LB_IP1, port: 80, expect: DROP },
      { name: 'blocked external to LB2', from: EXTERNAL_CLIENT_BLOCKED, to: LB_IP2, port: 80, expect: DROP },
      { name: 'pod to LB1 (blocked by LoadBalancerSourceRanges)', from: POD, to: LB_IP1, port: 80, expect: DROP },
      { name: 'pod to LB2 (blocked by LoadBalancerSourceRanges)', from: POD, to: LB_IP2, port: 80, expect: DROP },
      { name: 'node to LB1 (allowed by LoadBalancerSourceRanges)', from: NODE_IP, to: LB_IP1, port: 80, expect: dnat([ep], MASQ) },
      { name: 'node to LB2 (allowed by LoadBalancerSourceRanges)', from: NODE_IP, to: LB_IP2, port: 80, expect: dnat([ep], MASQ) },
      // upstream: "The LB rules assume that when you connect from a node to a LB IP, that something external to
      // kube-proxy will cause the connection to be SNATted to the LB IP, so if the LoadBalancerSourceRanges
      // include the node IP, then we add a rule allowing traffic from the LB IP as well..."
      { name: 'same node to LB1, SNATted to LB1 (implicitly allowed)', from: LB_IP1, to: LB_IP1, port: 80, expect: dnat([ep], MASQ) },
      { name: 'same node to LB2, SNATted to LB2 (implicitly allowed)', from: LB_IP2, to: LB_IP2, port: 80, expect: dnat([ep], MASQ) },
    ],
  );
})();

// ---- TestNodePorts: --nodeport-addresses and localhost NodePorts, both families ----

/**
 * One sub-case of TestNodePorts. The two upstream files differ here: upstream's nftables mode takes only the
 * primary node IP when --nodeport-addresses is empty and never serves NodePorts on localhost; its iptables mode
 * takes every local address, and 127.0.0.1 unless --iptables-localhost-nodeports=false. This project takes every
 * local address in every mode (one default, the iptables one), and localhost NodePorts are an iptables-mode
 * feature (route_localnet).
 */
interface NodePortsVariant {
  name: string;
  family: IPFamily;
  localhostNodePorts: boolean;
  nodePortAddresses: string[];
  /** NodePorts answer on the node's secondary address too. */
  allowAltNodeIP: boolean;
}

function nodePortsCase(opts: NodePortsVariant): FlowCase {
  const v4 = opts.family === 'IPv4';
  const eps = v4 ? [remote(1), local(1)] : [remote6(1), local6(1)];
  const svcIP = v4 ? CLUSTER_IP(41) : CLUSTER_IP6(41);
  const pod = v4 ? POD : POD6;
  const client = v4 ? EXTERNAL_CLIENT : EXTERNAL_CLIENT6;
  const nodeIP = v4 ? NODE_IP : NODE_IP6;
  const altNodeIP = v4 ? NODE_IP_ALT : NODE_IP6_ALT;
  const localhost = v4 ? '127.0.0.1' : '::1';
  const flows: Flow[] = [
    { name: 'pod to cluster IP', from: pod, to: svcIP, port: 80, expect: dnat(eps) },
    { name: 'external to nodePort', from: client, to: nodeIP, port: 3001, expect: dnat(eps, MASQ) },
    { name: 'node to nodePort', from: nodeIP, to: nodeIP, port: 3001, expect: dnat(eps, MASQ) },
  ];
  if (v4 && opts.localhostNodePorts) {
    flows.push({
      name: 'localhost to nodePort gets masqueraded',
      from: localhost,
      to: localhost,
      port: 3001,
      expect: dnat(eps, MASQ),
      modes: {
        nftables: {
          expect: PASS,
          why: "localhost NodePorts need route_localnet and its martian-packet guard, which upstream only does in its iptables mode (--iptables-localhost-nodeports); upstream's nftables mode never serves NodePorts on 127.0.0.1, nor does this one",
        },
      },
    });
  } else {
    flows.push({ name: 'localhost to nodePort is ignored', from: localhost, to: localhost, port: 3001, expect: PASS });
  }
  if (opts.allowAltNodeIP) {
    const flow: Flow = { name: 'external to nodePort on secondary IP', from: client, to: altNodeIP, port: 3001, expect: dnat(eps, MASQ) };
    if (opts.nodePortAddresses.length === 0) {
      flow.departs = {
        upstream: 'nftables: "" (secondary nodeIP ignores NodePorts)',
        why: "upstream's nftables mode defaults --nodeport-addresses to the primary node IP; this proxy keeps one default in every mode, upstream iptables' (every local address)",
      };
    }
    flows.push(flow);
  } else {
    flows.push({ name: 'secondary nodeIP ignores NodePorts', from: client, to: altNodeIP, port: 3001, expect: PASS });
  }
  return flowCase(
    `TestNodePorts: ${opts.name}`,
    [svc1({ family: opts.family, clusterIPs: [svcIP], nodePort: 3001, endpoints: eps })],
    flows,
    { localhostNodePorts: opts.localhostNodePorts, nodePortAddresses: opts.nodePortAddresses },
    opts.family,
  );
}

const nodePortsVariants: NodePortsVariant[] = [
  { name: 'ipv4, localhost-nodeports enabled', family: 'IPv4', localhostNodePorts: true, nodePortAddresses: [], allowAltNodeIP: true },
  { name: 'ipv4, localhost-nodeports disabled', family: 'IPv4', localhostNodePorts: false, nodePortAddresses: [], allowAltNodeIP: true },
  {
    name: 'ipv4, localhost-nodeports disabled, localhost in nodeport-addresses',
    family: 'IPv4',
    localhostNodePorts: false,
    nodePortAddresses: ['198.18.0.0/24', '127.0.0.1/32'],
    allowAltNodeIP: false,
  },
  // (upstream's iptables name says "enabled" but sets it false)
  {
    name: 'ipv4, multiple nodeport-addresses',
    family: 'IPv4',
    localhostNodePorts: false,
    nodePortAddresses: ['198.18.0.0/24', '198.18.1.0/24', '2001:2::/64'],
    allowAltNodeIP: true,
  },
  { name: 'ipv6, localhost-nodeports enabled', family: 'IPv6', localhostNodePorts: true, nodePortAddresses: [], allowAltNodeIP: true },
  { name: 'ipv6, localhost-nodeports disabled', family: 'IPv6', localhostNodePorts: false, nodePortAddresses: [], allowAltNodeIP: true },
  {
    name: 'ipv6, multiple nodeport-addresses (iptables test)',
    family: 'IPv6',
    localhostNodePorts: false,
    nodePortAddresses: ['198.18.0.0/24', '198.18.1.0/24', '2001:2::/64'],
    allowAltNodeIP: false,
  },
  {
    name: 'ipv6, multiple nodeport-addresses (nftables test)',
    family: 'IPv6',
    localhostNodePorts: false,
    nodePortAddresses: ['198.18.0.0/24', '198.18.1.0/24', '2001:2::/64', `${NODE_IP6_ALT}/128`],
    allowAltNodeIP: true,
  },
];
const nodePorts = nodePortsVariants.map(nodePortsCase);

// ---- TestHealthCheckNodePort ----

const healthCheckNodePort: FlowCase[] = [
  flowCase(
    'TestHealthCheckNodePort',
    [svc1({ clusterIPs: [CLUSTER_IP(42)], nodePort: 3001, healthCheckNodePort: 30000, externalTrafficPolicy: 'Local' })],
    [{ name: 'firewall accepts HealthCheckNodePort', from: EXTERNAL_CLIENT, to: NODE_IP, port: 30000, expect: PASS }],
    { nodePortAddresses: ['127.0.0.0/8'] },
  ),
  flowCase(
    'TestHealthCheckNodePort: after the service is deleted',
    [],
    [{ name: 'HealthCheckNodePort no longer has any rule', from: EXTERNAL_CLIENT, to: NODE_IP, port: 30000, expect: PASS }],
    { nodePortAddresses: ['127.0.0.0/8'] },
  ),
];

// ---- TestExternalTrafficPolicyLocal / Cluster ----

function externalTrafficPolicyCase(policy: 'Local' | 'Cluster'): FlowCase {
  const nearby = local(1);
  const far = remote(1);
  const both = [far, nearby];
  const isLocal = policy === 'Local';
  return flowCase(
    `TestExternalTrafficPolicy${policy}`,
    [
      svc1({
        clusterIPs: [CLUSTER_IP(41)],
        nodePort: 3001,
        externalIPs: [EXTERNAL_IP],
        loadBalancerIPs: [LB_IP1],
        externalTrafficPolicy: policy,
        healthCheckNodePort: isLocal ? 30000 : null,
        endpoints: both,
      }),
    ],
    isLocal
      ? [
          { name: 'pod to cluster IP hits both endpoints, unmasqueraded', from: POD, to: CLUSTER_IP(41), port: 80, expect: dnat(both) },
          { name: 'pod to external IP hits both endpoints, unmasqueraded', from: POD, to: EXTERNAL_IP, port: 80, expect: dnat(both) },
          { name: 'external to external IP hits only local endpoint, unmasqueraded', from: EXTERNAL_CLIENT, to: EXTERNAL_IP, port: 80, expect: dnat([nearby]) },
          { name: 'pod to LB IP hits only both endpoints, unmasqueraded', from: POD, to: LB_IP1, port: 80, expect: dnat(both) },
          { name: 'external to LB IP hits only local endpoint, unmasqueraded', from: EXTERNAL_CLIENT, to: LB_IP1, port: 80, expect: dnat([nearby]) },
          { name: 'pod to NodePort hits both endpoints, unmasqueraded', from: POD, to: NODE_IP, port: 3001, expect: dnat(both) },
          { name: 'external to NodePort hits only local endpoint, unmasqueraded', from: EXTERNAL_CLIENT, to: NODE_IP, port: 3001, expect: dnat([nearby]) },
        ]
      : [
          { name: 'pod to cluster IP hits both endpoints, unmasqueraded', from: POD, to: CLUSTER_IP(41), port: 80, expect: dnat(both) },
          { name: 'pod to external IP hits both endpoints, masqueraded', from: POD, to: EXTERNAL_IP, port: 80, expect: dnat(both, MASQ) },
          { name: 'external to external IP hits both endpoints, masqueraded', from: EXTERNAL_CLIENT, to: EXTERNAL_IP, port: 80, expect: dnat(both, MASQ) },
          { name: 'pod to LB IP hits both endpoints, masqueraded', from: POD, to: LB_IP1, port: 80, expect: dnat(both, MASQ) },
          { name: 'external to LB IP hits both endpoints, masqueraded', from: EXTERNAL_CLIENT, to: LB_IP1, port: 80, expect: dnat(both, MASQ) },
          { name: 'pod to NodePort hits both endpoints, masqueraded', from: POD, to: NODE_IP, port: 3001, expect: dnat(both, MASQ) },
          { name: 'external to NodePort hits both endpoints, masqueraded', from: EXTERNAL_CLIENT, to: NODE_IP, port: 3001, expect: dnat(both, MASQ) },
        ],
  );
}

// ---- TestInternalExternalMasquerade: one set of flows, four configurations ----

const internalExternalMasquerade: FlowCase[] = (() => {
  // svc1: plain; svc2: externalTrafficPolicy Local; svc3: internalTrafficPolicy Local. Each has an endpoint
  // on this node and one elsewhere.
  const lb = (ns: string, name: string, clusterIP: string, nodePort: number, lbIP: string, n: number, extra: Partial<PortSpec>) =>
    servicePort({
      namespace: ns,
      name,
      portName: 'p80',
      port: 80,
      clusterIPs: [clusterIP],
      nodePort,
      healthCheckNodePort: 30000 + n,
      loadBalancerIPs: [lbIP],
      endpoints: [local(n), remote(n)],
      ...extra,
    });
  const ports = [
    lb('ns1', 'svc1', CLUSTER_IP(41), 3001, LB_IP1, 1, {}),
    lb('ns2', 'svc2', CLUSTER_IP(42), 3002, LB_IP2, 2, { externalTrafficPolicy: 'Local' }),
    lb('ns3', 'svc3', CLUSTER_IP(43), 3003, LB_IP3, 3, { internalTrafficPolicy: 'Local' }),
  ];
  const all = (n: number) => [local(n), remote(n)];
  // "The "output" and "masq" values here represent the normal case (working localDetector, no masqueradeAll)"
  const flows: Flow[] = [
    { name: 'pod to ClusterIP', from: POD, to: CLUSTER_IP(41), port: 80, expect: dnat(all(1)) },
    { name: 'pod to NodePort', from: POD, to: NODE_IP, port: 3001, expect: dnat(all(1), MASQ) },
    { name: 'pod to LB', from: POD, to: LB_IP1, port: 80, expect: dnat(all(1), MASQ) },
    { name: 'node to ClusterIP', from: NODE_IP, to: CLUSTER_IP(41), port: 80, expect: dnat(all(1), MASQ) },
    { name: 'node to NodePort', from: NODE_IP, to: NODE_IP, port: 3001, expect: dnat(all(1), MASQ) },
    { name: 'node to LB', from: NODE_IP, to: LB_IP1, port: 80, expect: dnat(all(1), MASQ) },
    { name: 'external to ClusterIP', from: EXTERNAL_CLIENT, to: CLUSTER_IP(41), port: 80, expect: dnat(all(1), MASQ) },
    { name: 'external to NodePort', from: EXTERNAL_CLIENT, to: NODE_IP, port: 3001, expect: dnat(all(1), MASQ) },
    { name: 'external to LB', from: EXTERNAL_CLIENT, to: LB_IP1, port: 80, expect: dnat(all(1), MASQ) },
    // externalTrafficPolicy does not apply to ClusterIP traffic.
    { name: 'pod to ClusterIP with eTP:Local', from: POD, to: CLUSTER_IP(42), port: 80, expect: dnat(all(2)) },
    // The short circuit: pods reach every endpoint of an eTP:Local service's NodePort and LB IP, unmasqueraded.
    { name: 'pod to NodePort with eTP:Local', from: POD, to: NODE_IP, port: 3002, expect: dnat(all(2)) },
    { name: 'pod to LB with eTP:Local', from: POD, to: LB_IP2, port: 80, expect: dnat(all(2)) },
    { name: 'node to ClusterIP with eTP:Local', from: NODE_IP, to: CLUSTER_IP(42), port: 80, expect: dnat(all(2), MASQ) },
    // (upstream's flow sends this one to port 3001, svc1's NodePort: kept as written; the next flow is the eTP:Local one)
    { name: 'node to NodePort with eTP:Local', from: NODE_IP, to: NODE_IP, port: 3001, expect: dnat(all(1), MASQ) },
    { name: 'node to NodePort with eTP:Local (its own NodePort 3002)', from: NODE_IP, to: NODE_IP, port: 3002, expect: dnat(all(2), MASQ) },
    { name: 'node to LB with eTP:Local', from: NODE_IP, to: LB_IP2, port: 80, expect: dnat(all(2), MASQ) },
    { name: 'external to ClusterIP with eTP:Local', from: EXTERNAL_CLIENT, to: CLUSTER_IP(42), port: 80, expect: dnat(all(2), MASQ) },
    { name: 'external to NodePort with eTP:Local', from: EXTERNAL_CLIENT, to: NODE_IP, port: 3002, expect: dnat([local(2)]) },
    { name: 'external to LB with eTP:Local', from: EXTERNAL_CLIENT, to: LB_IP2, port: 80, expect: dnat([local(2)]) },
    // internalTrafficPolicy applies to ClusterIP traffic only, and does not change masquerading.
    { name: 'pod to ClusterIP with iTP:Local', from: POD, to: CLUSTER_IP(43), port: 80, expect: dnat([local(3)]) },
    { name: 'pod to NodePort with iTP:Local', from: POD, to: NODE_IP, port: 3003, expect: dnat(all(3), MASQ) },
    { name: 'pod to LB with iTP:Local', from: POD, to: LB_IP3, port: 80, expect: dnat(all(3), MASQ) },
    { name: 'node to ClusterIP with iTP:Local', from: NODE_IP, to: CLUSTER_IP(43), port: 80, expect: dnat([local(3)], MASQ) },
    { name: 'node to NodePort with iTP:Local', from: NODE_IP, to: NODE_IP, port: 3003, expect: dnat(all(3), MASQ) },
    { name: 'node to LB with iTP:Local', from: NODE_IP, to: LB_IP3, port: 80, expect: dnat(all(3), MASQ) },
    { name: 'external to ClusterIP with iTP:Local', from: EXTERNAL_CLIENT, to: CLUSTER_IP(43), port: 80, expect: dnat([local(3)], MASQ) },
    { name: 'external to NodePort with iTP:Local', from: EXTERNAL_CLIENT, to: NODE_IP, port: 3003, expect: dnat(all(3), MASQ) },
    { name: 'external to LB with iTP:Local', from: EXTERNAL_CLIENT, to: LB_IP3, port: 80, expect: dnat(all(3), MASQ) },
  ];
  const unmasqueraded = (e: Expect): Expect => ({ ...e, masquerade: false }) as Expect;
  const masqueraded = (e: Expect): Expect => ({ ...e, masquerade: true }) as Expect;
  const onlyLocal2 = () => dnat([local(2)]);
  /** upstream's overrides by flow name; each must name a flow and change it. */
  type Override = (e: Expect) => Expect;
  // "With no LocalTrafficDetector, all traffic to a ClusterIP is assumed to be from a pod, and thus to not
  // require masquerading. And there's no eTP:Local short-circuit for pod traffic, so pods get only the local
  // endpoints." (This project: no --cluster-cidr.)
  const noShortCircuit: Record<string, Override> = {
    'pod to NodePort with eTP:Local': onlyLocal2,
    'pod to LB with eTP:Local': onlyLocal2,
  };
  const noDetector: Record<string, Override> = {
    'node to ClusterIP': unmasqueraded,
    'node to ClusterIP with eTP:Local': unmasqueraded,
    'node to ClusterIP with iTP:Local': unmasqueraded,
    'external to ClusterIP': unmasqueraded,
    'external to ClusterIP with eTP:Local': unmasqueraded,
    'external to ClusterIP with iTP:Local': unmasqueraded,
    ...noShortCircuit,
  };
  // "All "to ClusterIP" traffic gets masqueraded when using --masquerade-all."
  const masqueradeAll: Record<string, Override> = {
    'pod to ClusterIP': masqueraded,
    'pod to ClusterIP with eTP:Local': masqueraded,
    'pod to ClusterIP with iTP:Local': masqueraded,
  };
  const variant = (name: string, config: Partial<ProxyConfig>, overrides: Record<string, Override>): FlowCase => {
    const unused = new Set(Object.keys(overrides));
    const out = flows.map((f) => {
      const o = overrides[f.name];
      if (!o) return f;
      unused.delete(f.name);
      const expect = o(f.expect);
      if (JSON.stringify(expect) === JSON.stringify(f.expect)) throw new Error(`override of "${f.name}" in ${name} changes nothing`);
      return { ...f, expect };
    });
    if (unused.size > 0) throw new Error(`overrides of ${name} name no flow: ${[...unused].join(', ')}`);
    return flowCase(`TestInternalExternalMasquerade: ${name}`, ports, out, config);
  };
  return [
    variant('base', {}, {}),
    variant('no LocalTrafficDetector', { clusterCIDRs: [] }, noDetector),
    variant('masqueradeAll', { masqueradeAll: true }, masqueradeAll),
    // With --masquerade-all every ClusterIP flow is masqueraded anyway; only the short circuit goes.
    variant('masqueradeAll, no LocalTrafficDetector', { masqueradeAll: true, clusterCIDRs: [] }, { ...masqueradeAll, ...noShortCircuit }),
    // Another mark bit (--iptables-masquerade-bit / nftables.masqueradeBit) changes no flow.
    variant('masqueradeBit 9', { masqueradeBit: 9 }, {}),
    // upstream's detect-local-mode NodeCIDR: this node's podCIDRs instead of the cluster CIDR; every pod of the
    // table is on this node, so no flow changes. (The interface detectors need an input interface, which a
    // flow does not carry: test/unit/local-detect.test.ts and test/e2e/local-detect.test.ts cover them.)
    variant('NodeCIDR', { clusterCIDRs: [], detectLocal: { mode: 'NodeCIDR', podCIDRs: ['198.19.1.0/24', '2001:2:0:11::/64'] } }, {}),
  ];
})();

// ---- TestTerminatingEndpointsTrafficPolicyLocal / Cluster ----

/** upstream's service of the terminating tests: a LoadBalancer (no NodePort) on 172.30.1.1 with a health check. */
const terminatingService = (policy: 'Local' | 'Cluster', endpoints: Endpoint[]) =>
  servicePort({
    namespace: 'ns1',
    name: 'svc1',
    portName: '',
    port: 80,
    clusterIPs: [CLUSTER_IP(1)],
    loadBalancerIPs: [LB_IP1],
    externalTrafficPolicy: policy,
    healthCheckNodePort: 30000,
    endpoints,
  });

function terminatingCases(policy: 'Local' | 'Cluster'): FlowCase[] {
  const external = policy === 'Local' ? (eps: Endpoint[]) => dnat(eps) : (eps: Endpoint[]) => dnat(eps, MASQ);
  const caseOf = (name: string, endpoints: Endpoint[], podTo: Expect, externalTo: Expect) =>
    flowCase(
      `TestTerminatingEndpointsTrafficPolicy${policy}: ${name}`,
      [terminatingService(policy, endpoints)],
      [
        { name: 'pod to clusterIP', from: POD, to: CLUSTER_IP(1), port: 80, expect: podTo },
        { name: 'external to LB', from: EXTERNAL_CLIENT, to: LB_IP1, port: 80, expect: externalTo },
      ],
    );
  const cases: FlowCase[] = [];
  if (policy === 'Local') {
    cases.push(
      // Ready endpoints exist: terminating ones are ignored; external traffic only uses the local ready ones.
      caseOf(
        'ready endpoints exist',
        [local(1), local(2), local(3, 80, TERMINATING), local(4, 80, GONE), remote(5)],
        dnat([local(1), local(2), remote(5)]),
        external([local(1), local(2)]),
      ),
      // Only terminating endpoints on this node: external traffic falls back to the serving ones.
      caseOf(
        'only terminating endpoints exist',
        [local(2, 80, TERMINATING), local(3, 80, TERMINATING), local(4, 80, GONE), remote(5)],
        dnat([remote(5)]),
        external([local(2), local(3)]),
      ),
      caseOf('terminating endpoints on remote node', [remote(5, 80, TERMINATING)], dnat([remote(5)]), DROP),
    );
  } else {
    cases.push(
      caseOf(
        'ready endpoints exist',
        [local(1), local(2), remote(3, 80, TERMINATING), remote(4, 80, GONE), remote(5)],
        dnat([local(1), local(2), remote(5)]),
        external([local(1), local(2), remote(5)]),
      ),
      caseOf(
        'only terminating endpoints exist',
        [local(2, 80, TERMINATING), local(3, 80, TERMINATING), remote(4, 80, GONE), remote(5, 80, TERMINATING)],
        dnat([local(2), local(3), remote(5)]),
        external([local(2), local(3), remote(5)]),
      ),
      caseOf('terminating endpoints on remote node', [remote(5, 80, TERMINATING)], dnat([remote(5)]), external([remote(5)])),
    );
  }
  cases.push(
    caseOf('no usable endpoints on any node', [local(5, 80, GONE), remote(5, 80, GONE)], REJECT, REJECT),
    // upstream runs these two flows again after deleting the slice.
    caseOf('after endpoints deleted', [], REJECT, REJECT),
  );
  return cases;
}

// ---- TestInternalTrafficPolicy ----

function internalTrafficPolicyCase(name: string, policy: 'Local' | 'Cluster', endpoints: Endpoint[], expect: Expect): FlowCase {
  return flowCase(
    `TestInternalTrafficPolicy: ${name}`,
    [servicePort({ namespace: 'ns1', name: 'svc1', portName: '', port: 80, clusterIPs: [CLUSTER_IP(1)], internalTrafficPolicy: policy, endpoints })],
    [{ name: endpoints.length === 0 ? 'endpoints deleted' : 'pod to ClusterIP', from: POD, to: CLUSTER_IP(1), port: 80, expect }],
  );
}

const internalTrafficPolicy: FlowCase[] = [
  internalTrafficPolicyCase('internalTrafficPolicy is cluster', 'Cluster', [local(1), remote(2), remote(3)], dnat([local(1), remote(2), remote(3)])),
  internalTrafficPolicyCase('internalTrafficPolicy is local and there is one local endpoint', 'Local', [local(1), remote(2), remote(3)], dnat([local(1)])),
  internalTrafficPolicyCase(
    'internalTrafficPolicy is local and there are multiple local endpoints',
    'Local',
    [local(1), local(2), remote(3)],
    dnat([local(1), local(2)]),
  ),
  internalTrafficPolicyCase('internalTrafficPolicy is local and there are no local endpoints', 'Local', [remote(1), remote(2), remote(3)], DROP),
  // upstream deletes the slice after each case: whatever the policy, no endpoint anywhere is a REJECT.
  internalTrafficPolicyCase('internalTrafficPolicy is cluster, endpoints deleted', 'Cluster', [], REJECT),
  internalTrafficPolicyCase('internalTrafficPolicy is local, endpoints deleted', 'Local', [], REJECT),
];

/** Every case, in upstream's order. */
export const FLOW_CASES: readonly FlowCase[] = [
  noEndpointsReject,
  clusterIPGeneral,
  loadBalancer,
  ...nodePorts,
  ...healthCheckNodePort,
  externalTrafficPolicyCase('Local'),
  externalTrafficPolicyCase('Cluster'),
  ...internalExternalMasquerade,
  ...terminatingCases('Local'),
  ...terminatingCases('Cluster'),
  ...internalTrafficPolicy,
];
