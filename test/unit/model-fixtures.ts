// Hand-built model objects for the modes' tests: endpoints and service ports with the model's endpoint
// selection, a config and a desired state. (The model itself builds them from Kubernetes objects.)
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
    isLocal: nodeName === NODE,
    ready,
    serving: spec.serving ?? ready,
    terminating: spec.terminating ?? false,
  };
}

export interface PortSpec extends Partial<Omit<ServicePort, 'clusterEndpoints' | 'localEndpoints' | 'allEndpoints'>> {
  name: string;
  namespace?: string;
  endpoints?: Endpoint[];
}

/** A ServicePort with the model's endpoint selection: ready ones, else serving-and-terminating ones. */
export function servicePort(spec: PortSpec): ServicePort {
  const { endpoints = [], namespace = 'shop', ...rest } = spec;
  const select = (eps: Endpoint[]) => {
    const ready = eps.filter((e) => e.ready);
    return (ready.length > 0 ? ready : eps.filter((e) => e.serving && e.terminating)).sort((a, b) => (a.id < b.id ? -1 : 1));
  };
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
    hasExternal: nodePort !== null || externalIPs.length > 0 || loadBalancerIPs.length > 0,
    ...rest,
    clusterEndpoints: select(endpoints),
    localEndpoints: select(endpoints.filter((e) => e.isLocal)),
    allEndpoints: [...endpoints],
  };
}

export function config(c: Partial<ProxyConfig> = {}): ProxyConfig {
  return { hostname: NODE, clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [], ...c };
}

export function desiredState(ports: ServicePort[], c: Partial<ProxyConfig> = {}, family: IPFamily = 'IPv4'): DesiredState {
  return { family, config: config(c), node: null, servicePorts: new Map(ports.map((p) => [p.key, p])) };
}

/** Renders one service port alone (it owns all its frontends; fresh slots). */
