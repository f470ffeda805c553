// ServicePort and Endpoint builders for the userspace mode's unit tests: the shared model fixtures (the
// model's one endpoint decision) with this mode's defaults, a ClusterIP and node-a / node-b endpoints.
import type { DesiredState, Endpoint, IPFamily, ProxyConfig, ServicePort } from '../../src/model/types.ts';
import { config, endpoint as modelEndpoint, servicePort as modelServicePort, type PortSpec } from './model-fixtures.ts';

export const CONFIG: ProxyConfig = config();

/** An endpoint on node-a (local) or node-b. */
export function endpoint(ip: string, port: number, isLocal = false): Endpoint {
  return modelEndpoint(ip, port, { node: isLocal ? 'node-a' : 'node-b' });
}

/** A service port with the model's endpoint decision; the ClusterIP defaults to 198.18.100.10 (2001:2:0:100::10 for IPv6). */
export function servicePort(name: string, over: Omit<PortSpec, 'name'> = {}): ServicePort {
  const clusterIPs = over.clusterIPs ?? [over.family === 'IPv6' ? '2001:2:0:100::10' : '198.18.100.10'];
  return modelServicePort({ name, ...over, clusterIPs });
}

export function state(sps: ServicePort[], c: ProxyConfig = CONFIG, family: IPFamily = 'IPv4'): DesiredState {
  return { family, config: c, node: null, servicePorts: new Map(sps.map((sp) => [sp.key, sp])) };
}
