// Builders for Kubernetes objects in model tests.
import type { EndpointSlice, Service } from '../../src/model/k8s.ts';
import type { ProxyConfig } from '../../src/model/types.ts';

export const CONFIG: ProxyConfig = { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [] };

export function svc(name: string, spec: NonNullable<Service['spec']>, extra: Partial<Service> = {}, ns = 'shop'): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns, ...extra.metadata }, spec, ...(extra.status ? { status: extra.status } : {}) };
}

type Ep = NonNullable<EndpointSlice['endpoints']>[number];

export function ep(ip: string, nodeName: string | undefined, conditions?: Ep['conditions']): Ep {
  return { addresses: [ip], ...(nodeName ? { nodeName } : {}), ...(conditions ? { conditions } : {}) };
}

export function slice(
  name: string,
  service: string,
  ports: EndpointSlice['ports'],
  endpoints: Ep[],
  ns = 'shop',
  extraLabels: Record<string, string> = {},
): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': service, ...extraLabels } },
    addressType: 'IPv4',
    ports,
    endpoints,
  };
}
