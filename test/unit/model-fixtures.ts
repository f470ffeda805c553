// Hand-built model objects for the modes' tests: endpoints and service ports with the model's one endpoint
// decision (src/model/endpoints.ts), a config and a desired state. (The model itself builds them from
// Kubernetes objects.)
import { categorizeEndpoints } from '../../src/model/endpoints.ts';
import type { DesiredState, Endpoint, IPFamily, ProxyConfig, ServicePort } from '../../src/model/types.ts';

export const NODE = 'node-a';

export interface EndpointSpec {
  node?: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export function endpoint(ip: string, port = 8080, spec: EndpointSpec = {}): Endpoint {
  const nodeName = spec.node ?? NODE;
  const ready = spec.ready ?? true;
  return {
    ip,
    port,
    id: ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`,
    nodeName,
    zone: null,
    isLocal: nodeName === NODE,
    ready,
    serving: spec.serving ?? ready,
    terminating: spec.terminating ?? false,
    zoneHints: [],
    nodeHints: [],
  };
}

/** The decided fields come from categorizeEndpoints, never from the spec. */
type Decided =
  | 'clusterEndpoints'
  | 'localEndpoints'
  | 'internalEndpoints'
  | 'externalEndpoints'
  | 'hasAnyEndpoints'
  | 'internalPolicyLocal'
  | 'externalPolicyLocal'
  | 'externallyAccessible'
  | 'topologyMode'
  | 'allEndpoints';

export interface PortSpec extends Partial<Omit<ServicePort, Decided>> {
  name: string;
  namespace?: string;
  endpoints?: readonly Endpoint[];
}

/** A ServicePort with the model's endpoint decision (categorizeEndpoints), as the store builds it. */
export function servicePort(spec: PortSpec): ServicePort {
  const { endpoints = [], namespace = 'shop', ...rest } = spec;
  const sorted = [...endpoints].sort((a, b) => (a.id < b.id ? -1 : 1));
  const portName = rest.portName ?? 'http';
  const nodePort = rest.nodePort ?? null;
  const externalIPs = rest.externalIPs ?? [];
  const loadBalancerIPs = rest.loadBalancerIPs ?? [];
  return {
    key: `${namespace}/${spec.name}:${portName}`,
    service: `${namespace}/${spec.name}`,
    namespace,
    portName,
    protocol: 'TCP',
    family: 'IPv4',
    port: 80,
    clusterIPs: [],
    nodePort,
    externalIPs,
    loadBalancerIPs,
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: null,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: null,
    ...rest,
    ...decide(sorted, rest, nodePort !== null || externalIPs.length > 0 || loadBalancerIPs.length > 0),
  };
}

function decide(endpoints: readonly Endpoint[], rest: Partial<ServicePort>, externallyAccessible: boolean) {
  const policy = {
    internalTrafficPolicy: rest.internalTrafficPolicy ?? 'Cluster',
    externalTrafficPolicy: rest.externalTrafficPolicy ?? 'Cluster',
    externallyAccessible,
  };
  return { allEndpoints: endpoints, externallyAccessible, ...categorizeEndpoints(endpoints, policy, { name: NODE, zone: '' }) };
}

export function config(c: Partial<ProxyConfig> = {}): ProxyConfig {
  return { hostname: NODE, clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [], ...c };
}

export function desiredState(ports: ServicePort[], c: Partial<ProxyConfig> = {}, family: IPFamily = 'IPv4'): DesiredState {
  return { family, config: config(c), node: null, servicePorts: new Map(ports.map((p) => [p.key, p])) };
}

/** Renders one service port alone (it owns all its frontends; fresh slots). */
