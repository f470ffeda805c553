// Hand-built model objects and helpers for the nftables mode's tests.
import { type ElemList, frontendsOf, type RenderedPort, renderPort } from '../../src/modes/nftables/elements.ts';
import { FAMILIES } from '../../src/modes/nftables/layout.ts';
import { SlotAllocator } from '../../src/modes/nftables/slots.ts';
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
export function render(sp: ServicePort, family: IPFamily = 'IPv4'): RenderedPort {
  const slots = new SlotAllocator(() => 0);
  const fam = FAMILIES[family];
  return renderPort(sp, { family: fam, owns: () => true, slots: (id, ids, hold) => slots.assign(id, ids, hold) }, frontendsOf(sp, fam));
}

/** The elements of `set` in a flat element list, keys and values parsed from their JSON. */
export function elemsOf(list: ElemList, set: string): { key: unknown; value: unknown; comment?: string }[] {
  const out: { key: unknown; value: unknown; comment?: string }[] = [];
  for (let i = 0; i < list.length; i += 3) {
    if (list[i] !== set) continue;
    const key = list[i + 1]!;
    const value = list[i + 2];
    const parsedKey = /^([{["]|\d+$)/.test(key) ? JSON.parse(key) : key;
    const k = typeof parsedKey === 'object' && parsedKey && 'concat' in parsedKey ? (parsedKey as { concat: unknown[] }).concat : parsedKey;
    if (value === null || value === undefined) {
      out.push({ key: k, value: null });
      continue;
    }
    const nul = value.indexOf('\u0000');
    if (nul >= 0) out.push({ key: k, value: JSON.parse(value.slice(nul + 1)), comment: JSON.parse(value.slice(0, nul)) });
    else out.push({ key: k, value: JSON.parse(value) });
  }
  return out;
}

/** The distinct keys of a (pseudo-)set in a flat element list. */
export function keysOf(list: ElemList, set: string): unknown[] {
  return [...new Set(elemsOf(list, set).map((e) => JSON.stringify(e.key)))].map((k) => JSON.parse(k));
}

/** Every command of an nft JSON batch, as [verb, object kind, body]. */
export function commands(json: string): [string, string, Record<string, unknown>][] {
  const doc = JSON.parse(json) as { nftables: Record<string, Record<string, Record<string, unknown>>>[] };
  return doc.nftables.map((c) => {
    const verb = Object.keys(c)[0]!;
    const kind = Object.keys(c[verb]!)[0]!;
    return [verb, kind, c[verb]![kind]!];
  });
}
