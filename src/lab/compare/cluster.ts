// A synthetic cluster for sync-time measurements: Services with one TCP port each and an
// EndpointSlice of `endpoints` ready pods, spread over node-a and node-b. ClusterIPs come from
// 198.18.96.0/20, pod addresses from 198.19.0.0/16 (nothing is ever sent to them).
import { formatIPv4 } from '../../model/addr.ts';

const CLUSTER_IP_BASE = (198 << 24) | (18 << 16) | (96 << 8);
const CLUSTER_IP_COUNT = 4096;
const POD_BASE = (198 << 24) | (19 << 16);
/** Pod addresses start at 198.19.1.0 and must stay inside 198.19.0.0/16. */
const POD_FIRST = 256;
const POD_COUNT = 65536 - POD_FIRST - 1;

/** `services` Services and their EndpointSlices (`endpoints` each), as a v1 List's items. */
export function syntheticCluster(services: number, endpoints: number): unknown[] {
  if (!Number.isInteger(services) || services < 1 || services > CLUSTER_IP_COUNT - 2) throw new Error(`services must be 1..${CLUSTER_IP_COUNT - 2}`);
  if (!Number.isInteger(endpoints) || endpoints < 1 || services * endpoints > POD_COUNT) throw new Error(`at most ${POD_COUNT} endpoints in all`);
  const items: unknown[] = [];
  for (let i = 0; i < services; i++) {
    const name = `svc-${i}`;
    const clusterIP = formatIPv4(CLUSTER_IP_BASE + 1 + i);
    items.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'synthetic' },
      spec: { clusterIP, clusterIPs: [clusterIP], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
    });
    items.push({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'synthetic', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: Array.from({ length: endpoints }, (_, j) => ({
        addresses: [formatIPv4(POD_BASE + POD_FIRST + i * endpoints + j)],
        conditions: { ready: true },
        nodeName: j % 2 === 0 ? 'node-a' : 'node-b',
      })),
    });
  }
  return items;
}
