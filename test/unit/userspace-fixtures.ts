// ServicePort and Endpoint builders for the userspace mode's unit tests.
import type { DesiredState, Endpoint, ProxyConfig, ServicePort } from '../../src/model/types.ts';

export const CONFIG: ProxyConfig = { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [] };

export function endpoint(ip: string, port: number, isLocal = false): Endpoint {
  return { ip, port, id: `${ip}:${port}`, nodeName: isLocal ? 'node-a' : 'node-b', isLocal, ready: true, serving: true, terminating: false };
}

/**
 * A service port; `endpoints` are split into cluster and local sets the way the model does it
 * (local = those on node-a). Anything can be overridden.
 */
export function servicePort(name: string, over: Partial<ServicePort> & { endpoints?: Endpoint[] } = {}): ServicePort {
  const { endpoints = [], ...rest } = over;
  const sorted = [...endpoints].sort((a, b) => (a.id < b.id ? -1 : 1));
  const sp: ServicePort = {
    key: `shop/${name}:http`,
    service: `shop/${name}`,
    namespace: 'shop',
    name,
    portName: 'http',
    protocol: 'TCP',
    family: 'IPv4',
    port: 80,
    clusterIPs: ['198.18.100.10'],
    nodePort: null,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: null,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: null,
    hasExternal: false,
    clusterEndpoints: sorted,
    localEndpoints: sorted.filter((e) => e.isLocal),
    allEndpoints: sorted,
    ...rest,
  };
  if (over.hasExternal === undefined) sp.hasExternal = sp.nodePort !== null || sp.externalIPs.length > 0 || sp.loadBalancerIPs.length > 0;
  return sp;
}

export function state(sps: ServicePort[], config: ProxyConfig = CONFIG): DesiredState {
  return { family: 'IPv4', config, node: null, servicePorts: new Map(sps.map((sp) => [sp.key, sp])) };
}
