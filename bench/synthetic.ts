// A synthetic cluster for benchmarks: N services with E endpoints each, as Kubernetes objects and as the
// model's ServicePorts. Addresses come from 198.18.0.0/15 (ClusterIPs 198.18.64.0/18, pods 198.19.0.0/16).
import type { EndpointSlice, Service } from '../src/model/k8s.ts';
import { categorizeEndpoints } from '../src/model/endpoints.ts';
import { ClusterState } from '../src/model/store.ts';
import type { DesiredState, Endpoint, ProxyConfig, ServicePort } from '../src/model/types.ts';

export const BENCH_CONFIG: ProxyConfig = { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [] };

export function clusterIP(i: number): string {
  return `198.18.${64 + (i >> 8)}.${i & 255}`;
}

export function podIP(i: number, j: number): string {
  const n = i * 16 + j; // up to 16 endpoints per service, 4096 services per /16... wrap within 198.19/16
  return `198.19.${(n >> 8) & 255}.${n & 255 || 1}`;
}

export function makeService(i: number): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `svc-${i}`, namespace: 'bench' },
    spec: { clusterIP: clusterIP(i), clusterIPs: [clusterIP(i)], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
  };
}

export function makeSlice(i: number, endpoints: number, generation = 0): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `svc-${i}-abcde`, namespace: 'bench', labels: { 'kubernetes.io/service-name': `svc-${i}` } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080 + (generation % 2), protocol: 'TCP' }],
    endpoints: Array.from({ length: endpoints }, (_, j) => ({
      addresses: [podIP(i, j)],
      conditions: { ready: true },
      nodeName: j % 2 === 0 ? 'node-a' : 'node-b',
    })),
  };
}

export function makeObjects(services: number, endpoints: number): (Service | EndpointSlice)[] {
  const out: (Service | EndpointSlice)[] = [];
  for (let i = 0; i < services; i++) out.push(makeService(i), makeSlice(i, endpoints));
  return out;
}

/** A ClusterState holding a synthetic cluster, committed. */
export function makeCluster(services: number, endpoints: number, config = BENCH_CONFIG): { cluster: ClusterState; state: DesiredState } {
  const cluster = new ClusterState(config);
  for (const o of makeObjects(services, endpoints)) cluster.upsert(o);
  return { cluster, state: cluster.commit().state };
}

// ---- the same kind of cluster as model ServicePorts, for the modes' benchmarks (every tenth a NodePort,
// half the endpoints on this node) ----

export function endpointAt(k: number, local: boolean): Endpoint {
  // 198.19.0.0/16 holds 65,534 hosts; past that the port differs, so every endpoint is distinct.
  const j = (k % 65000) + 1;
  const ip = `198.19.${j >> 8}.${j & 255}`;
  const port = 8080 + Math.floor(k / 65000);
  return {
    ip,
    port,
    id: `${ip}:${port}`,
    nodeName: local ? 'node-a' : 'node-b',
    zone: null,
    isLocal: local,
    ready: true,
    serving: true,
    terminating: false,
    zoneHints: [],
    nodeHints: [],
  };
}

export function servicePortAt(i: number, eps: Endpoint[], firstIP = 100, namespace = 'bench'): ServicePort {
  const clusterIP = `198.18.${firstIP + Math.floor(i / 250)}.${(i % 250) + 1}`;
  const nodePort = i % 10 === 0 ? 30000 + (i % 2700) : null;
  return {
    key: `${namespace}/svc${i}:http`,
    service: `${namespace}/svc${i}`,
    namespace,
    name: `svc${i}`,
    portName: 'http',
    protocol: 'TCP',
    family: 'IPv4',
    port: 80,
    clusterIPs: [clusterIP],
    nodePort,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: null,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: null,
    allEndpoints: eps,
    externallyAccessible: nodePort !== null,
    ...categorizeEndpoints(
      eps,
      { internalTrafficPolicy: 'Cluster', externalTrafficPolicy: 'Cluster', externallyAccessible: nodePort !== null },
      { name: 'node-a', zone: '' },
    ),
  };
}

export function servicePortCluster(services: number, perService: number, firstIP = 100): Map<string, ServicePort> {
  const m = new Map<string, ServicePort>();
  for (let i = 0; i < services; i++) {
    const eps = Array.from({ length: perService }, (_, j) => endpointAt(i * perService + j, j % 2 === 0));
    const sp = servicePortAt(i, eps, firstIP);
    m.set(sp.key, sp);
  }
  return m;
}

export function stateOf(servicePorts: ReadonlyMap<string, ServicePort>): DesiredState {
  return { family: 'IPv4', config: BENCH_CONFIG, node: null, servicePorts };
}
