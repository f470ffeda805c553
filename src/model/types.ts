// The node-local desired state: what every mode renders. Pure data, no I/O.

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type IPFamily = 'IPv4' | 'IPv6';
export type TrafficPolicy = 'Cluster' | 'Local';

/** One backend of a service port, already resolved to the port the service port targets. */
export interface Endpoint {
  ip: string;
  port: number;
  /** "ip:port" ("[ip]:port" for IPv6): the identity of the endpoint within a service port. */
  id: string;
  nodeName: string | null;
  zone: string | null;
  /** True when nodeName is this node. */
  isLocal: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** hints.forZones names (empty: no zone hint). */
  zoneHints: readonly string[];
  /** hints.forNodes names (empty: no node hint). */
  nodeHints: readonly string[];
}

/** The topology mode chosen from the hints (upstream's topologyModeFromHints); '' means none. */
export type TopologyMode = '' | 'PreferSameZone' | 'PreferSameNode';

/**
 * One service port as this node must program it, for one IP family.
 * Endpoint arrays are sorted by id and never changed: they may be shared (with the parsed slice the endpoints
 * come from, with the previous version of the same service port, and with each other).
 */
export interface ServicePort {
  /** Unique within a family: "namespace/name:portName" (portName may be empty). */
  key: string;
  /** "namespace/name" */
  service: string;
  namespace: string;
  name: string;
  portName: string;
  protocol: Protocol;
  family: IPFamily;
  port: number;
  /** ClusterIPs of this family (normally one). */
  clusterIPs: readonly string[];
  nodePort: number | null;
  externalIPs: readonly string[];
  /** status.loadBalancer.ingress[].ip of this family, without ipMode: Proxy entries. */
  loadBalancerIPs: readonly string[];
  /** Normalised CIDRs ("a.b.c.d/n") of this family. */
  loadBalancerSourceRanges: readonly string[];
  /** ClientIP session affinity timeout, or null without affinity. */
  affinityTimeoutSeconds: number | null;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  healthCheckNodePort: number | null;
  /** Every endpoint from the slices, whatever its conditions (for tools and health checks). */
  allEndpoints: readonly Endpoint[];
  // ---- The one endpoint decision (model/endpoints.ts, upstream's CategorizeEndpoints). Every mode,
  // explain and the daemon read these fields; none re-derives a traffic policy.
  /**
   * Upstream's ExternallyAccessible: this family has a NodePort, an externalIP or an LB IP. Only then
   * does externalTrafficPolicy apply, and only these frontends are "external".
   */
  externallyAccessible: boolean;
  /** internalTrafficPolicy is Local: ClusterIP traffic uses localEndpoints only. */
  internalPolicyLocal: boolean;
  /** externalTrafficPolicy is Local and the port is externally accessible: outside traffic uses localEndpoints only. */
  externalPolicyLocal: boolean;
  /** The topology mode applied to clusterEndpoints. */
  topologyMode: TopologyMode;
  /**
   * Cluster-policy endpoints: ready ones (filtered by topology hints) or, when there are none
   * anywhere, the serving-and-terminating ones. Also what external traffic from a pod or the node
   * itself uses under a Local external policy (upstream's short circuit). Empty when unused.
   */
  clusterEndpoints: readonly Endpoint[];
  /** Local-policy endpoints: this node's ready ones, else its serving-and-terminating ones. Empty when unused. */
  localEndpoints: readonly Endpoint[];
  /** The endpoints ClusterIP traffic goes to: localEndpoints under internalPolicyLocal, else clusterEndpoints. */
  internalEndpoints: readonly Endpoint[];
  /** The endpoints outside traffic to an external frontend goes to: localEndpoints under externalPolicyLocal, else clusterEndpoints. */
  externalEndpoints: readonly Endpoint[];
  /**
   * Any usable endpoint anywhere in the cluster. Without one every frontend REJECTs; with some but none
   * for a Local policy, that policy's traffic is DROPped.
   */
  hasAnyEndpoints: boolean;
}

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
  /** The topology.kubernetes.io/zone label, or '' without one. */
  zone: string;
  /** status.addresses[].address (InternalIP/ExternalIP). */
  addresses: string[];
  podCIDRs: string[];
  /** metadata.deletionTimestamp is set. */
  deleting: boolean;
}

export interface ProxyConfig {
  /** This node's name (--hostname-override, else the host name). */
  hostname: string;
  /** --cluster-cidr: pod CIDRs, normalised; traffic from elsewhere to a ClusterIP is masqueraded. */
  clusterCIDRs: string[];
  /** --masquerade-all */
  masqueradeAll: boolean;
  /** --nodeport-addresses: CIDRs whose local addresses accept NodePorts; empty = every local address. */
  nodePortAddresses: string[];
  /**
   * --iptables-localhost-nodeports (default true, upstream): in the iptables mode, IPv4 NodePorts also answer on
   * 127.0.0.1 from the node (route_localnet plus upstream's martian-packet guard). Optional: absent means true.
   */
  localhostNodePorts?: boolean;
  /**
   * The NodePort range the API server allocates from (its --service-node-port-range; default 30000-32767).
   * A NodePort or health-check node port outside it (port 22 would take over SSH) is reported; with `refuse`
   * it is left out. Absent: the default range, reported only.
   */
  nodePortRange?: { min: number; max: number; refuse: boolean };
  /**
   * --iptables-masquerade-bit (iptables.masqueradeBit / nftables.masqueradeBit, default 14, within [0, 31]): the
   * fwmark bit that marks packets to masquerade. Optional: absent means 14.
   */
  masqueradeBit?: number;
  /**
   * --detect-local-mode and its settings: how a packet is known to come from a local pod (upstream's
   * LocalTrafficDetector). ClusterCIDR (the default) uses clusterCIDRs; NodeCIDR the Node's podCIDRs;
   * BridgeInterface an input interface; InterfaceNamePrefix an input interface name prefix. Optional: absent
   * means ClusterCIDR.
   */
  detectLocal?: DetectLocal;
}

export type DetectLocal =
  | { mode: 'ClusterCIDR' }
  /** podCIDRs: the Node's spec.podCIDRs, resolved at start (daemon/run.ts); absent or empty: not known (yet). */
  | { mode: 'NodeCIDR'; podCIDRs?: string[] }
  | { mode: 'BridgeInterface'; bridgeInterface: string }
  | { mode: 'InterfaceNamePrefix'; interfaceNamePrefix: string };

export const DEFAULT_MASQUERADE_BIT = 14;

/** The fwmark value that marks packets to masquerade: 1 << masqueradeBit (upstream's masqueradeValue), unsigned. */
export function masqueradeMark(config: ProxyConfig): number {
  return (1 << (config.masqueradeBit ?? DEFAULT_MASQUERADE_BIT)) >>> 0;
}

export const DEFAULT_NODEPORT_RANGE = { min: 30000, max: 32767, refuse: false } as const;

export interface ChangeSet {
  /** Service port keys that appeared. */
  added: string[];
  /** Service port keys whose rendering inputs changed. */
  updated: string[];
  /** Service port keys that disappeared. */
  removed: string[];
  /**
   * The value each updated or removed key had before the change (as upstream's change trackers keep it):
   * what the data path held, for cleanups that must know what went away (UDP conntrack entries).
   */
  previous: ReadonlyMap<string, ServicePort>;
}

export function changeSetSize(c: ChangeSet): number {
  return c.added.length + c.updated.length + c.removed.length;
}

/**
 * What every mode renders: the service ports of one family, keyed by ServicePort.key. A snapshot: a
 * later commit never changes a state already handed out (the map is replaced, ServicePorts are immutable).
 */
export interface DesiredState {
  family: IPFamily;
  config: ProxyConfig;
  node: NodeInfo | null;
  servicePorts: ReadonlyMap<string, ServicePort>;
}

/** A problem with one input object: reported, and the object left out. */
export interface ValidationIssue {
  /** "Service shop/web", "EndpointSlice shop/web-x7k2p", "Node node-a" */
  object: string;
  /** JSON-path-like field name, e.g. "spec.ports[0].port" */
  field: string;
  message: string;
  /** 'warning': reported but still routed (e.g. a NodePort outside the range); default: the object or field is left out. */
  severity?: 'warning';
}
