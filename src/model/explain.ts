// "Why does this packet go there?": what the desired state does with one new connection, as every mode
// programs it. Pure: the same decisions the renderers encode, in words.
import { cidrContains, hostPort, inAnyCIDR } from './addr.ts';
import { nodePortCIDRsOf } from './config.ts';
import { describeTopology } from './endpoints.ts';
import { type LocalDetector, describeDetector, localDetector } from './local-detect.ts';
import type { DesiredState, Endpoint, ServicePort } from './types.ts';

export type SourceKind = 'pod' | 'node' | 'external';

export interface PacketQuery {
  /** Destination address and port. */
  dst: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  /** Source address, or 'node' for a process on the node itself. */
  src: string | 'node';
  /** Whether dst is an address of this node (for NodePorts). Default: true when no service frontend has dst. */
  dstIsLocal?: boolean;
}

export interface Explanation {
  /** The service port that matched, or null. */
  servicePort: string | null;
  frontend: 'clusterIP' | 'externalIP' | 'loadBalancerIP' | 'nodePort' | null;
  verdict: 'dnat' | 'reject' | 'drop' | 'no-match';
  /** Endpoints the connection may go to, with the chance of each. */
  endpoints: { id: string; node: string | null; probability: number }[];
  masquerade: boolean | 'hairpin-only';
  affinitySeconds: number | null;
  /** The reasoning, one step per line. */
  steps: string[];
}

/** A source address is a local pod's only by the detector's CIDRs; an interface detector cannot be asked by address. */
function classify(src: string | 'node', detector: LocalDetector): SourceKind {
  if (src === 'node') return 'node';
  return detector.kind === 'cidr' && inAnyCIDR(detector.cidrs, src) ? 'pod' : 'external';
}

function describeSource(src: string | 'node', kind: SourceKind, detector: LocalDetector): string {
  if (src === 'node') return 'a process on this node';
  if (kind === 'pod') return `${src} (a local pod: ${describeDetector(detector)})`;
  switch (detector.kind) {
    case 'cidr':
      return `${src} (not a local pod: not a ${describeDetector(detector)})`;
    case 'none':
      return `${src} (${detector.reason})`;
    default:
      return `${src} (local pods are told by their ${describeDetector(detector)}, which an address does not show: this is what a packet that came in elsewhere meets)`;
  }
}

function findFrontend(q: PacketQuery, state: DesiredState): { sp: ServicePort; frontend: NonNullable<Explanation['frontend']> } | null {
  for (const sp of state.servicePorts.values()) {
    if (sp.protocol !== q.protocol) continue;
    if (sp.port === q.port) {
      if (sp.clusterIPs.includes(q.dst)) return { sp, frontend: 'clusterIP' };
      if (sp.externalIPs.includes(q.dst)) return { sp, frontend: 'externalIP' };
      if (sp.loadBalancerIPs.includes(q.dst)) return { sp, frontend: 'loadBalancerIP' };
    }
  }
  const isFrontendIP = [...state.servicePorts.values()].some(
    (sp) => sp.clusterIPs.includes(q.dst) || sp.externalIPs.includes(q.dst) || sp.loadBalancerIPs.includes(q.dst),
  );
  const local = q.dstIsLocal ?? !isFrontendIP;
  if (!local) return null;
  const nodePortCIDRs = nodePortCIDRsOf(state.config, state.family);
  if (nodePortCIDRs !== null && q.dst !== 'node' && !inAnyCIDR(nodePortCIDRs, q.dst)) return null;
  for (const sp of state.servicePorts.values()) if (sp.protocol === q.protocol && sp.nodePort === q.port) return { sp, frontend: 'nodePort' };
  return null;
}

const share = (eps: readonly Endpoint[]) => eps.map((e) => ({ id: e.id, node: e.nodeName, probability: 1 / eps.length }));

export function explain(q: PacketQuery, state: DesiredState): Explanation {
  const steps: string[] = [];
  const detector = localDetector(state.config, state.family);
  const kind = classify(q.src, detector);
  steps.push(`source: ${describeSource(q.src, kind, detector)}`);
  const hit = findFrontend(q, state);
  const out: Explanation = { servicePort: null, frontend: null, verdict: 'no-match', endpoints: [], masquerade: false, affinitySeconds: null, steps };
  if (!hit) {
    steps.push(`no service port has the frontend ${hostPort(q.dst, q.port)}/${q.protocol}: the proxy does not touch this packet; it is routed as usual`);
    return out;
  }
  const { sp, frontend } = hit;
  out.servicePort = sp.key;
  out.frontend = frontend;
  out.affinitySeconds = sp.affinityTimeoutSeconds;
  const what = { clusterIP: 'the ClusterIP', externalIP: 'an externalIP', loadBalancerIP: 'a load-balancer IP', nodePort: 'the NodePort' }[frontend];
  steps.push(`destination: ${what} of ${sp.key} (${sp.protocol} port ${frontend === 'nodePort' ? sp.nodePort : sp.port})`);
  if (!sp.hasAnyEndpoints) {
    out.verdict = 'reject';
    steps.push('the service port has no usable endpoint (none ready, none serving-and-terminating): REJECT, so the client is refused at once');
    return out;
  }
  const external = frontend !== 'clusterIP';
  if (external && frontend === 'loadBalancerIP' && sp.loadBalancerSourceRanges.length > 0) {
    // The node's own connection leaves from one of its addresses (its Node's status.addresses): those count.
    const sources = q.src === 'node' ? (state.node?.addresses ?? []) : [q.src];
    const allowed = sources.some((ip) => sp.loadBalancerSourceRanges.some((c) => cidrContains(c, ip)));
    steps.push(`loadBalancerSourceRanges ${sp.loadBalancerSourceRanges.join(',')}: the source is ${allowed ? 'allowed' : 'not allowed: DROP'}`);
    if (!allowed) {
      out.verdict = 'drop';
      return out;
    }
  }
  // Which endpoints: the model decided (ServicePort.internalEndpoints / externalEndpoints / clusterEndpoints);
  // this only says which of its lists this connection meets, and why.
  let eps: readonly Endpoint[];
  let masq: boolean;
  const topology = describeTopology(sp.topologyMode, { name: state.config.hostname, zone: state.node?.zone ?? '' });
  if (!external) {
    eps = sp.internalEndpoints;
    if (sp.internalPolicyLocal) {
      steps.push(`internalTrafficPolicy Local: only this node's endpoints (${eps.length})`);
      if (eps.length === 0) {
        out.verdict = 'drop';
        steps.push('this node has no endpoint of the service: DROP (traffic must not leave the node)');
        return out;
      }
    } else {
      steps.push(`internalTrafficPolicy Cluster: every endpoint of the cluster (${eps.length})`);
      if (topology) steps.push(topology);
    }
    // Upstream masquerades "not from a local pod" only when it has a detector (IfNotLocal); without one, nothing.
    masq = state.config.masqueradeAll || (detector.kind !== 'none' && kind !== 'pod');
    if (state.config.masqueradeAll) steps.push('--masquerade-all: masqueraded');
    else if (masq) steps.push('the source is not a pod address: masqueraded, so replies come back through this node');
    else steps.push('the source is a pod: its address is kept');
  } else if (sp.externalPolicyLocal && kind === 'external') {
    eps = sp.externalEndpoints;
    masq = false;
    steps.push(`externalTrafficPolicy Local and an outside source: only this node's endpoints (${eps.length}), the client address is kept`);
    if (eps.length === 0) {
      out.verdict = 'drop';
      steps.push('this node has no endpoint of the service: DROP (the load balancer should have seen this node fail its health check)');
      return out;
    }
  } else {
    // A Local external policy does not apply to pods and the node itself: they use the cluster endpoints (the short circuit).
    eps = sp.clusterEndpoints;
    masq = !sp.externalPolicyLocal || kind === 'node';
    if (sp.externalPolicyLocal)
      steps.push(`externalTrafficPolicy Local, but the source is ${kind === 'pod' ? 'a pod' : 'this node'}: every endpoint of the cluster (${eps.length})`);
    else steps.push(`externalTrafficPolicy Cluster: every endpoint of the cluster (${eps.length})`);
    if (topology) steps.push(topology);
    steps.push(masq ? 'masqueraded: the endpoint may be on another node, and replies must come back through this one' : 'the source address is kept');
  }
  out.verdict = 'dnat';
  out.endpoints = share(eps);
  const srcIsEndpoint = q.src !== 'node' && eps.some((e) => e.ip === q.src);
  out.masquerade = masq ? true : srcIsEndpoint ? 'hairpin-only' : false;
  if (srcIsEndpoint) steps.push('the source is one of the endpoints: if the connection goes back to it (hairpin), it is masqueraded');
  if (sp.affinityTimeoutSeconds !== null)
    steps.push(`sessionAffinity ClientIP: a source that connected in the last ${sp.affinityTimeoutSeconds} s goes to the same endpoint; otherwise:`);
  const names = eps.map((e) => `${e.id}${e.nodeName ? ` (${e.nodeName})` : ''}`);
  steps.push(eps.length === 1 ? `DNAT to its one endpoint: ${names[0]}` : `DNAT to one endpoint, chosen at random with equal chances: ${names.join(', ')}`);
  return out;
}

export function formatExplanation(q: PacketQuery, e: Explanation): string {
  const head = `${q.src === 'node' ? 'node' : q.src} -> ${hostPort(q.dst, q.port)}/${q.protocol}`;
  const lines = [head, ...e.steps.map((s) => `  - ${s}`)];
  if (e.verdict === 'dnat') {
    lines.push('  endpoints:');
    for (const ep of e.endpoints) lines.push(`    ${ep.id.padEnd(24)} ${(ep.probability * 100).toFixed(1).padStart(5)}%  ${ep.node ?? ''}`);
  }
  lines.push(
    `  verdict: ${e.verdict.toUpperCase()}${e.verdict === 'dnat' ? (e.masquerade === true ? ', masqueraded' : e.masquerade === 'hairpin-only' ? ', masqueraded only on hairpin' : ', source kept') : ''}`,
  );
  return `${lines.join('\n')}\n`;
}
