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
  /** True when nodeName is this node. */
  isLocal: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

/**
 * One service port as this node must program it, for one IP family.
 * Endpoint arrays are sorted by id and never shared with another ServicePort.
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
  clusterIPs: string[];
  nodePort: number | null;
  externalIPs: string[];
  /** status.loadBalancer.ingress[].ip of this family, without ipMode: Proxy entries. */
  loadBalancerIPs: string[];
  /** Normalised CIDRs ("a.b.c.d/n") of this family. */
  loadBalancerSourceRanges: string[];
  /** ClientIP session affinity timeout, or null without affinity. */
  affinityTimeoutSeconds: number | null;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  healthCheckNodePort: number | null;
  /** Whether the service has external frontends (NodePort, externalIPs, LB IPs) subject to externalTrafficPolicy. */
  hasExternal: boolean;
  /** Ready endpoints of every node or, when there are none, the serving-and-terminating ones. */
  clusterEndpoints: Endpoint[];
  /** Ready endpoints on this node or, when there are none, this node's serving-and-terminating ones. */
  localEndpoints: Endpoint[];
  /** Every endpoint from the slices, whatever its conditions (for tools and health checks). */
  allEndpoints: Endpoint[];
}

/** Endpoints for traffic to the ClusterIP (internal traffic). */
export function internalEndpoints(sp: ServicePort): Endpoint[] {
  return sp.internalTrafficPolicy === 'Local' ? sp.localEndpoints : sp.clusterEndpoints;
}

/** Endpoints for traffic to NodePorts, externalIPs and LB IPs (external traffic). */
export function externalEndpoints(sp: ServicePort): Endpoint[] {
  return sp.externalTrafficPolicy === 'Local' ? sp.localEndpoints : sp.clusterEndpoints;
}

/**
 * kube-proxy's "has endpoints": any usable endpoint at all. Without one, every frontend
 * REJECTs. With some but none for a Local policy, that policy's traffic is DROPped.
 */
export function hasEndpoints(sp: ServicePort): boolean {
  return sp.clusterEndpoints.length > 0 || sp.localEndpoints.length > 0;
}

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
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
}

export interface ChangeSet {
  /** Service port keys that appeared. */
  added: string[];
  /** Service port keys whose rendering inputs changed. */
  updated: string[];
  /** Service port keys that disappeared. */
  removed: string[];
}

export function emptyChangeSet(): ChangeSet {
  return { added: [], updated: [], removed: [] };
}

export function changeSetSize(c: ChangeSet): number {
  return c.added.length + c.updated.length + c.removed.length;
}

/** What every mode renders: the service ports of one family, keyed by ServicePort.key. */
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
}
