// Presentations of the desired state: the stable JSON contract and the table for people.
import type { DesiredState, Endpoint, ServicePort } from './types.ts';

/** The `state -o json` contract: one object per service port. Fields are only ever added. */
export interface ServicePortView {
  service: string;
  portName: string;
  protocol: string;
  family: string;
  port: number;
  clusterIPs: string[];
  nodePort: number | null;
  externalIPs: string[];
  loadBalancerIPs: string[];
  loadBalancerSourceRanges: string[];
  affinityTimeoutSeconds: number | null;
  externalTrafficPolicy: string;
  internalTrafficPolicy: string;
  healthCheckNodePort: number | null;
  clusterEndpoints: string[];
  localEndpoints: string[];
  /** The topology mode the endpoint hints chose ('' for none, PreferSameZone, PreferSameNode). */
  topologyMode: string;
}

const ids = (eps: readonly Endpoint[]): string[] => eps.map((e) => e.id).sort();

/** The service ports of one state, or of several (one per family), sorted by key, IPv4 before IPv6. */
export function sortedServicePorts(states: DesiredState | readonly DesiredState[]): ServicePort[] {
  const all = (Array.isArray(states) ? states : [states]).flatMap((s: DesiredState) => [...s.servicePorts.values()]);
  return all.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.family < b.family ? -1 : a.family > b.family ? 1 : 0));
}

export function toView(sp: ServicePort): ServicePortView {
  return {
    service: sp.service,
    portName: sp.portName,
    protocol: sp.protocol,
    family: sp.family,
    port: sp.port,
    clusterIPs: sp.clusterIPs,
    nodePort: sp.nodePort,
    externalIPs: sp.externalIPs,
    loadBalancerIPs: sp.loadBalancerIPs,
    loadBalancerSourceRanges: sp.loadBalancerSourceRanges,
    affinityTimeoutSeconds: sp.affinityTimeoutSeconds,
    externalTrafficPolicy: sp.externalTrafficPolicy,
    internalTrafficPolicy: sp.internalTrafficPolicy,
    healthCheckNodePort: sp.healthCheckNodePort,
    clusterEndpoints: ids(sp.clusterEndpoints),
    localEndpoints: ids(sp.localEndpoints),
    topologyMode: sp.topologyMode,
  };
}

export function stateToJSON(state: DesiredState | readonly DesiredState[]): string {
  return `${JSON.stringify(sortedServicePorts(state).map(toView), null, 2)}\n`;
}

function list(xs: readonly string[]): string {
  return xs.length === 0 ? '<none>' : xs.join(',');
}

/** A kubectl-style table: one row per service port. */
export function stateToTable(state: DesiredState | readonly DesiredState[]): string {
  return viewsToTable(sortedServicePorts(state).map(toView));
}

/** The table of `state` from its JSON form (what a running proxy's /debug/state answers). */
export function viewsToTable(views: readonly ServicePortView[]): string {
  const header = ['SERVICE', 'PORT', 'CLUSTER-IP', 'NODEPORT', 'EXTERNAL', 'POLICY (EXT/INT)', 'AFFINITY', 'ENDPOINTS', 'LOCAL'];
  const rows = views.map((sp) => {
    const external = [...sp.externalIPs, ...sp.loadBalancerIPs.map((ip) => `${ip}(lb)`)];
    const ranges = sp.loadBalancerSourceRanges.length > 0 ? ` from ${sp.loadBalancerSourceRanges.join(',')}` : '';
    return [
      sp.portName ? `${sp.service}:${sp.portName}` : sp.service,
      `${sp.port}/${sp.protocol}`,
      list(sp.clusterIPs),
      sp.nodePort === null ? '<none>' : String(sp.nodePort),
      list(external) + ranges,
      `${sp.externalTrafficPolicy}/${sp.internalTrafficPolicy}`,
      sp.affinityTimeoutSeconds === null ? 'None' : `ClientIP ${sp.affinityTimeoutSeconds}s`,
      list(sp.clusterEndpoints),
      list(sp.localEndpoints),
    ];
  });
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return `${all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('   ')).join('\n')}\n`;
}
