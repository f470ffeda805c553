// The one endpoint decision: which endpoints each kind of traffic to a service port uses on this node.
// Upstream kube-proxy's CategorizeEndpoints and topologyModeFromHints (pkg/proxy/topology.go), with its
// fallbacks exactly: ready endpoints, else serving-and-terminating ones, independently for the Cluster
// and the Local policy; topology hints (same node first, then same zone) narrow the ready Cluster
// endpoints only, and only when every ready endpoint carries such a hint and one is for this node/zone.
// Every mode, explain and the daemon read the result from the ServicePort; nothing else decides this.
import type { Endpoint, ServicePort, TopologyMode, TrafficPolicy } from './types.ts';

/** What the decision needs to know about the service port. */
export interface PolicyInput {
  internalTrafficPolicy: TrafficPolicy;
  externalTrafficPolicy: TrafficPolicy;
  /** This family has a NodePort, an externalIP or an LB IP. */
  externallyAccessible: boolean;
}

/** This node as topology sees it. */
export interface NodeTopology {
  name: string;
  /** The node's topology.kubernetes.io/zone label, '' without one. */
  zone: string;
}

/** The decision, as the ServicePort fields of the same names carry it (documented there). */
export type EndpointCategories = Pick<
  ServicePort,
  | 'internalPolicyLocal'
  | 'externalPolicyLocal'
  | 'topologyMode'
  | 'clusterEndpoints'
  | 'localEndpoints'
  | 'internalEndpoints'
  | 'externalEndpoints'
  | 'hasAnyEndpoints'
>;

const usable = (e: Endpoint) => e.ready || (e.serving && e.terminating);

/** No endpoints: one shared empty list (most Local-policy lists, and service ports without endpoints). */
export const NO_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);

/**
 * The endpoints of `list` that pass `keep`: the list itself when all do (nearly always, for the ready Cluster
 * endpoints) and one shared empty list when none do (nearly always, for a node's Local endpoints), so that
 * 10,000 service ports do not hold 20,000 copies of lists they already have.
 */
function only(list: readonly Endpoint[], keep: (e: Endpoint) => boolean): readonly Endpoint[] {
  let kept = 0;
  for (const e of list) if (keep(e)) kept++;
  if (kept === list.length) return list;
  if (kept === 0) return NO_ENDPOINTS;
  return list.filter(keep);
}

/** Categorises `endpoints` (every endpoint of the service port, sorted by id) for traffic on `node`. */
export function categorizeEndpoints(endpoints: readonly Endpoint[], policy: PolicyInput, node: NodeTopology): EndpointCategories {
  const internalPolicyLocal = policy.internalTrafficPolicy === 'Local';
  const externalPolicyLocal = policy.externallyAccessible && policy.externalTrafficPolicy === 'Local';
  // Upstream computes each list only when a policy uses it. Both are computed here, so that `state` and the
  // health checks can show them; what routes is only ever internalEndpoints, externalEndpoints and (for the
  // short circuit of pods and the node itself to external frontends under a Local policy) clusterEndpoints.
  const topologyMode = topologyModeFromHints(endpoints, node);
  let clusterEndpoints = only(endpoints, (e) => e.ready && availableForTopology(e, topologyMode, node));
  // No ready endpoint anywhere (topology was already dropped if none matched it): serving-and-terminating ones.
  // Topology never narrows this fallback.
  if (clusterEndpoints.length === 0) clusterEndpoints = only(endpoints, (e) => e.serving && e.terminating);
  let localEndpoints = only(endpoints, (e) => e.isLocal && e.ready);
  if (localEndpoints.length === 0) localEndpoints = only(endpoints, (e) => e.isLocal && e.serving && e.terminating);
  return {
    internalPolicyLocal,
    externalPolicyLocal,
    topologyMode,
    clusterEndpoints,
    localEndpoints,
    internalEndpoints: internalPolicyLocal ? localEndpoints : clusterEndpoints,
    externalEndpoints: externalPolicyLocal ? localEndpoints : clusterEndpoints,
    hasAnyEndpoints: endpoints.some(usable),
  };
}

/**
 * Upstream's topologyModeFromHints: PreferSameNode when every ready endpoint has a node hint and one is
 * for this node; else PreferSameZone when every ready endpoint has a zone hint and one is for this
 * node's zone; else none. (Services ask for hints with trafficDistribution or the topology-mode
 * annotation; the EndpointSlice controller then writes them. The proxy only reads the hints.)
 */
export function topologyModeFromHints(endpoints: readonly Endpoint[], node: NodeTopology): TopologyMode {
  let anyReady = false;
  let allNodeHints = true;
  let forNode = false;
  let allZoneHints = true;
  let forZone = false;
  for (const e of endpoints) {
    if (!e.ready) continue;
    anyReady = true;
    if (e.nodeHints.length === 0) allNodeHints = false;
    else if (e.nodeHints.includes(node.name)) forNode = true;
    if (e.zoneHints.length === 0) allZoneHints = false;
    else if (node.zone !== '' && e.zoneHints.includes(node.zone)) forZone = true;
  }
  if (!anyReady) return '';
  if (allNodeHints && forNode) return 'PreferSameNode';
  if (allZoneHints && forZone) return 'PreferSameZone';
  return '';
}

function availableForTopology(e: Endpoint, mode: TopologyMode, node: NodeTopology): boolean {
  if (mode === 'PreferSameNode') return e.nodeHints.includes(node.name);
  if (mode === 'PreferSameZone') return e.zoneHints.includes(node.zone);
  return true;
}

/** Why the topology mode is what it is, in words (for explain). */
export function describeTopology(mode: TopologyMode, node: NodeTopology): string | null {
  if (mode === 'PreferSameNode') return `topology hints: only endpoints hinted for this node (${node.name})`;
  if (mode === 'PreferSameZone') return `topology hints: only endpoints hinted for this node's zone (${node.zone})`;
  return null;
}
