// Presentations of the desired state: the stable JSON contract and the table for people.
import type { DesiredState, Endpoint, ServicePort } from './types.ts';

/** The `state -o json` contract: one object per service port. Fields are only ever added. */
export interface ServicePortView {
  service: string;
  portName: string;
  protocol: string;
  family: string;
  port: number;
  clusterIPs: readonly string[];
  nodePort: number | null;
  externalIPs: readonly string[];
  loadBalancerIPs: readonly string[];
  loadBalancerSourceRanges: readonly string[];
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
  return [...stateJSONChunks(state)].join('');
}

/**
 * stateToJSON in pieces, one service port each, as they are iterated: `state` writes them as they come. The
 * same text as JSON.stringify(views, null, 2): each view indented one level (string values hold no newline).
 */
export function* stateJSONChunks(state: DesiredState | readonly DesiredState[]): Generator<string> {
  const ports = sortedServicePorts(state);
  if (ports.length === 0) {
    yield '[]\n';
    return;
  }
  for (let i = 0; i < ports.length; i++) {
    yield `${i === 0 ? '[\n' : ',\n'}  ${JSON.stringify(toView(ports[i]!), null, 2).replaceAll('\n', '\n  ')}`;
  }
  yield '\n]\n';
}

function list(xs: readonly string[]): string {
  return xs.length === 0 ? '<none>' : xs.join(',');
}

/** A kubectl-style table: one row per service port. */
export function stateToTable(state: DesiredState | readonly DesiredState[]): string {
  return [...stateTableChunks(state)].join('');
}

/** The table of `state` from its JSON form (what a running proxy's /debug/state answers). */
export function viewsToTable(views: readonly ServicePortView[]): string {
  return [...tableChunks(views)].join('');
}

/** stateToTable in pieces, one row each, as they are iterated: `state` writes them as they come. */
export function stateTableChunks(state: DesiredState | readonly DesiredState[]): Generator<string> {
  return tableChunks(sortedServicePorts(state).map(toView));
}

const HEADER = ['SERVICE', 'PORT', 'CLUSTER-IP', 'NODEPORT', 'EXTERNAL', 'POLICY (EXT/INT)', 'AFFINITY', 'ENDPOINTS', 'LOCAL'];

/** The table's lines: every row is made before the first line, which needs the column widths. */
function* tableChunks(views: readonly ServicePortView[]): Generator<string> {
  const rows: string[][] = [];
  for (const sp of views) {
    const external = [...sp.externalIPs, ...sp.loadBalancerIPs.map((ip) => `${ip}(lb)`)];
    const ranges = sp.loadBalancerSourceRanges.length > 0 ? ` from ${sp.loadBalancerSourceRanges.join(',')}` : '';
    rows.push([
      sp.portName ? `${sp.service}:${sp.portName}` : sp.service,
      `${sp.port}/${sp.protocol}`,
      list(sp.clusterIPs),
      sp.nodePort === null ? '<none>' : String(sp.nodePort),
      list(external) + ranges,
      `${sp.externalTrafficPolicy}/${sp.internalTrafficPolicy}`,
      sp.affinityTimeoutSeconds === null ? 'None' : `ClientIP ${sp.affinityTimeoutSeconds}s`,
      list(sp.clusterEndpoints),
      list(sp.localEndpoints),
    ]);
  }
  const widths = HEADER.map((h, i) => rows.reduce((w, r) => Math.max(w, r[i]!.length), h.length));
  const line = (r: readonly string[]) => `${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('   ')}\n`;
  yield line(HEADER);
  for (const r of rows) yield line(r);
}
