// Validation of untrusted Kubernetes objects into the proxy's own, checked shapes.
// An object with any invalid field is reported (object, field, reason) and left out as a whole.
import { hostPort, isValidPort, parseCIDR, parseIP, specialAddress } from './addr.ts';
import {
  type EndpointSlice,
  HEADLESS_LABEL,
  HOSTNAME_LABEL,
  type Node,
  SERVICE_NAME_LABEL,
  SERVICE_PROXY_NAME_LABEL,
  type Service,
  TRIGGER_TIME_ANNOTATION,
  ZONE_LABEL,
} from './k8s.ts';
import type { Endpoint, IPFamily, NodeInfo, Protocol, TrafficPolicy, ValidationIssue } from './types.ts';

export const DEFAULT_AFFINITY_TIMEOUT = 10800;
const MAX_AFFINITY_TIMEOUT = 86400;
// Names as the API server validates them (k8s.io/apimachinery/pkg/util/validation); also what keeps names
// safe to print in rule comments. Service names are DNS-1035 labels; namespaces and service port names
// DNS-1123 labels (validateServicePort); other object names DNS-1123 subdomains.
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const MAX_SUBDOMAIN = 253;

type NameRule = 'dns1035-label' | 'dns1123-subdomain';
function nameProblem(name: string, rule: NameRule): string | null {
  if (rule === 'dns1035-label')
    return DNS1035_LABEL.test(name)
      ? null
      : `${JSON.stringify(name)} is not a valid name: at most 63 lower-case letters, digits and '-', starting with a letter`;
  return name.length <= MAX_SUBDOMAIN && DNS1123_SUBDOMAIN.test(name)
    ? null
    : `${JSON.stringify(name)} is not a valid name: at most 253 characters, dot-separated lower-case labels of letters, digits and '-'`;
}

/** Text from an object made safe for a terminal or a log: control and other invisible characters escaped. */
export function printable(s: string): string {
  return /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]/.test(s) ? JSON.stringify(s).slice(1, -1) : s;
}

export interface ParsedServicePort {
  name: string;
  protocol: Protocol;
  port: number;
  nodePort: number | null;
}

/** A valid Service reduced to what routing needs, addresses split by family. */
export interface ParsedService {
  key: string; // namespace/name
  namespace: string;
  name: string;
  ports: ParsedServicePort[];
  clusterIPs: Record<IPFamily, string[]>;
  externalIPs: Record<IPFamily, string[]>;
  loadBalancerIPs: Record<IPFamily, string[]>;
  loadBalancerSourceRanges: Record<IPFamily, string[]>;
  affinityTimeoutSeconds: number | null;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  healthCheckNodePort: number | null;
}

/** One port of a slice, with the slice's endpoints at that port. */
export interface ParsedSlicePort {
  name: string;
  protocol: Protocol;
  port: number;
  /**
   * The slice's endpoints resolved to this port, as the model's Endpoint, sorted by id; an address listed twice
   * is merged (a ready copy winning). Made once here: a service port with one slice uses this very array (the
   * model keeps each endpoint once, not once parsed and again per service port). Never changed after parsing.
   */
  endpoints: readonly Endpoint[];
}

export interface ParsedSlice {
  key: string; // namespace/sliceName
  namespace: string;
  name: string;
  /** namespace/serviceName from the kubernetes.io/service-name label. */
  serviceKey: string;
  family: IPFamily;
  ports: ParsedSlicePort[];
  /** The node the endpoints' isLocal was decided for. */
  hostname: string;
  /** endpoints.kubernetes.io/last-change-trigger-time in ms since the epoch, if present. */
  triggerTime: number | null;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; issues: ValidationIssue[] } | { ok: 'skip'; reason: string };

class Collector {
  readonly issues: ValidationIssue[] = [];
  readonly object: string;
  constructor(object: string) {
    this.object = object;
  }
  add(field: string, message: string): void {
    this.issues.push({ object: this.object, field, message });
  }
}

/** "Service ns/name": how messages name an object (names escaped: they come from whoever wrote the object). */
export function describe(kind: string, meta: { name?: unknown; namespace?: unknown } | undefined): string {
  const name = typeof meta?.name === 'string' && meta.name ? printable(meta.name.slice(0, 300)) : '<no name>';
  const ns = typeof meta?.namespace === 'string' && meta.namespace ? printable(meta.namespace.slice(0, 100)) : 'default';
  return kind === 'Node' ? `Node ${name}` : `${printable(kind)} ${ns}/${name}`;
}

function checkMeta(
  c: Collector,
  meta: { name?: unknown; namespace?: unknown } | undefined,
  namespaced: boolean,
  rule: NameRule,
): { name: string; namespace: string } {
  const name = meta?.name;
  if (typeof name !== 'string' || name === '') c.add('metadata.name', 'is missing');
  else {
    const problem = nameProblem(name, rule);
    if (problem) c.add('metadata.name', problem);
  }
  let namespace = 'default';
  if (namespaced && meta?.namespace !== undefined) {
    if (typeof meta.namespace !== 'string' || !DNS1123_LABEL.test(meta.namespace))
      c.add('metadata.namespace', `${JSON.stringify(meta.namespace)} is not a valid namespace`);
    else namespace = meta.namespace;
  }
  return { name: typeof name === 'string' ? name : '', namespace };
}

function parseProtocol(c: Collector, field: string, p: unknown): Protocol {
  if (p === undefined || p === null || p === '') return 'TCP';
  if (p === 'TCP' || p === 'UDP' || p === 'SCTP') return p;
  c.add(field, `protocol ${JSON.stringify(p)} is not TCP, UDP or SCTP`);
  return 'TCP';
}

function byFamily(): Record<IPFamily, string[]> {
  return { IPv4: [], IPv6: [] };
}

function addIPs(c: Collector, field: string, list: unknown, out: Record<IPFamily, string[]>): void {
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) {
    c.add(field, 'is not a list');
    return;
  }
  list.forEach((s, i) => {
    const ip = checkIP(c, `${field}[${i}]`, s);
    if (ip && !out[ip.family].includes(ip.ip)) out[ip.family].push(ip.ip);
  });
}

/**
 * A valid, ordinary address, or null with the problem reported. Special addresses (loopback, link-local,
 * unspecified, multicast, broadcast) are refused as the API server refuses them (ValidateNonSpecialIP): a
 * rule for one would reach the node itself (in userspace mode a pod could read loopback-only ports) or nothing.
 */
function checkIP(c: Collector, field: string, s: unknown): ReturnType<typeof parseIP> {
  const ip = parseIP(s);
  if (!ip) {
    c.add(field, `${JSON.stringify(s)} is not a valid IP address`);
    return null;
  }
  const special = specialAddress(ip.ip);
  if (special) {
    c.add(field, `${ip.ip} is ${special}, which may not be used here`);
    return null;
  }
  return ip;
}

function isLabelled(labels: Record<string, string> | undefined, key: string): boolean {
  return labels !== undefined && labels !== null && typeof labels === 'object' && Object.hasOwn(labels, key);
}

/**
 * Parsing is pure, and the daemon hands the same object to the model of each IP family: remember each
 * object's result, so it is parsed once and its parsed form is shared (not copied) between the families.
 */
function memo<O extends object, T>(fn: (o: O) => ParseResult<T>): (o: O) => ParseResult<T> {
  const cache = new WeakMap<O, ParseResult<T>>();
  return (o) => {
    let r = cache.get(o);
    if (r === undefined) cache.set(o, (r = fn(o)));
    return r;
  };
}

/** Checks a Service; skipped kinds of service (ExternalName, headless, other proxies') are not errors. */
export const parseService = memo(parseServiceOnce);

/**
 * Checks an EndpointSlice for this node (`hostname` decides which endpoints are local); slices of no service, of
 * other proxies, or of FQDN type are skipped. Remembered per object as the others are; asked for another node
 * (tools and tests only), it is parsed again.
 */
export function parseEndpointSlice(slice: EndpointSlice, hostname: string): ParseResult<ParsedSlice> {
  let r = parsedSlices.get(slice);
  if (r === undefined || (r.ok === true && r.value.hostname !== hostname)) parsedSlices.set(slice, (r = parseEndpointSliceOnce(slice, hostname)));
  return r;
}
const parsedSlices = new WeakMap<EndpointSlice, ParseResult<ParsedSlice>>();

export const parseNode = memo(parseNodeOnce);

function parseServiceOnce(svc: Service): ParseResult<ParsedService> {
  const c = new Collector(describe('Service', svc.metadata));
  const { name, namespace } = checkMeta(c, svc.metadata, true, 'dns1035-label');
  const labels = svc.metadata?.labels;
  if (isLabelled(labels, SERVICE_PROXY_NAME_LABEL)) return { ok: 'skip', reason: `labelled ${SERVICE_PROXY_NAME_LABEL}` };
  if (isLabelled(labels, HEADLESS_LABEL)) return { ok: 'skip', reason: `labelled ${HEADLESS_LABEL}` };
  const spec = svc.spec;
  if (!spec || typeof spec !== 'object') {
    c.add('spec', 'is missing');
    return { ok: false, issues: c.issues };
  }
  const type = spec.type ?? 'ClusterIP';
  if (type === 'ExternalName') return { ok: 'skip', reason: 'ExternalName service' };
  if (!['ClusterIP', 'NodePort', 'LoadBalancer'].includes(type)) c.add('spec.type', `${JSON.stringify(type)} is not a service type`);
  const clusterIPs = parseClusterIPs(c, spec);
  if (clusterIPs === 'headless') return { ok: 'skip', reason: 'headless service (no cluster IP)' };
  const hasNodePorts = type === 'NodePort' || type === 'LoadBalancer';
  const ports = parseServicePorts(c, spec.ports, hasNodePorts);
  const { externalIPs, loadBalancerIPs, loadBalancerSourceRanges } = parseExternalFrontends(c, svc, type === 'LoadBalancer');
  const affinityTimeoutSeconds = parseAffinity(c, spec);
  const externalTrafficPolicy = parsePolicy(c, 'spec.externalTrafficPolicy', spec.externalTrafficPolicy);
  const internalTrafficPolicy = parsePolicy(c, 'spec.internalTrafficPolicy', spec.internalTrafficPolicy);
  let healthCheckNodePort: number | null = null;
  if (spec.healthCheckNodePort !== undefined && spec.healthCheckNodePort !== null && spec.healthCheckNodePort !== 0) {
    if (!isValidPort(spec.healthCheckNodePort)) c.add('spec.healthCheckNodePort', `${JSON.stringify(spec.healthCheckNodePort)} is not a port number (1-65535)`);
    else if (type === 'LoadBalancer' && externalTrafficPolicy === 'Local') healthCheckNodePort = spec.healthCheckNodePort;
  }

  if (c.issues.length > 0) return { ok: false, issues: c.issues };
  return {
    ok: true,
    value: {
      key: `${namespace}/${name}`,
      namespace,
      name,
      ports,
      clusterIPs,
      externalIPs,
      loadBalancerIPs,
      loadBalancerSourceRanges,
      affinityTimeoutSeconds,
      // Whether the external policy applies is decided per family (model/endpoints.ts: externallyAccessible).
      externalTrafficPolicy,
      internalTrafficPolicy,
      healthCheckNodePort,
    },
  };
}

type ServiceSpec = NonNullable<Service['spec']>;

/** spec.clusterIPs (or the older spec.clusterIP) by family; 'headless' for None or none. */
function parseClusterIPs(c: Collector, spec: ServiceSpec): Record<IPFamily, string[]> | 'headless' {
  const listed = Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0;
  const raw = listed ? spec.clusterIPs! : spec.clusterIP !== undefined ? [spec.clusterIP] : [];
  if (raw.length === 0 || raw[0] === 'None' || raw[0] === '') return 'headless';
  const clusterIPs = byFamily();
  if (listed) addIPs(c, 'spec.clusterIPs', raw, clusterIPs);
  else {
    const ip = checkIP(c, 'spec.clusterIP', spec.clusterIP);
    if (ip) clusterIPs[ip.family].push(ip.ip);
  }
  return clusterIPs;
}

/** spec.ports: names (required and unique when several), ports, protocols, and NodePorts where the type has them. */
function parseServicePorts(c: Collector, list: ServiceSpec['ports'], hasNodePorts: boolean): ParsedServicePort[] {
  const ports: ParsedServicePort[] = [];
  if (!Array.isArray(list) || list.length === 0) {
    c.add('spec.ports', 'has no ports');
    return ports;
  }
  const seen = new Set<string>();
  list.forEach((p, i) => {
    const f = `spec.ports[${i}]`;
    const pname = p?.name ?? '';
    if (typeof pname !== 'string' || (pname !== '' && !DNS1123_LABEL.test(pname)))
      c.add(`${f}.name`, `${JSON.stringify(pname)} is not a valid port name: at most 63 lower-case letters, digits and '-'`);
    else if (pname === '' && list.length > 1) c.add(`${f}.name`, 'is required when a service has more than one port');
    else if (seen.has(pname)) c.add(`${f}.name`, `duplicate port name ${JSON.stringify(pname)}`);
    seen.add(String(pname));
    if (!isValidPort(p?.port)) c.add(`${f}.port`, `${JSON.stringify(p?.port)} is not a port number (1-65535)`);
    const protocol = parseProtocol(c, `${f}.protocol`, p?.protocol);
    let nodePort: number | null = null;
    if (p?.nodePort !== undefined && p.nodePort !== null && p.nodePort !== 0) {
      if (!isValidPort(p.nodePort)) c.add(`${f}.nodePort`, `${JSON.stringify(p.nodePort)} is not a port number (1-65535)`);
      else if (hasNodePorts) nodePort = p.nodePort;
    }
    ports.push({ name: String(pname), protocol, port: p?.port as number, nodePort });
  });
  return ports;
}

/** externalIPs, and for a LoadBalancer its ingress IPs and source ranges, by family. */
function parseExternalFrontends(c: Collector, svc: Service, isLoadBalancer: boolean) {
  const spec = svc.spec!;
  const externalIPs = byFamily();
  addIPs(c, 'spec.externalIPs', spec.externalIPs, externalIPs);
  const loadBalancerIPs = byFamily();
  const ingress = svc.status?.loadBalancer?.ingress;
  if (isLoadBalancer && Array.isArray(ingress)) {
    ingress.forEach((ing, i) => {
      if (!ing || ing.ip === undefined || ing.ip === '') return; // hostname-only ingress: nothing to route here
      if (ing.ipMode === 'Proxy') return; // the load balancer proxies: traffic arrives addressed to the node
      addIPs(c, `status.loadBalancer.ingress[${i}].ip`, [ing.ip], loadBalancerIPs);
    });
  }
  const loadBalancerSourceRanges = byFamily();
  if (isLoadBalancer && Array.isArray(spec.loadBalancerSourceRanges)) {
    spec.loadBalancerSourceRanges.forEach((r, i) => {
      const cidr = parseCIDR(r);
      if (!cidr) c.add(`spec.loadBalancerSourceRanges[${i}]`, `${JSON.stringify(r)} is not a valid CIDR`);
      else if (!loadBalancerSourceRanges[cidr.family].includes(cidr.cidr)) loadBalancerSourceRanges[cidr.family].push(cidr.cidr);
    });
  } else if (spec.loadBalancerSourceRanges !== undefined && spec.loadBalancerSourceRanges !== null && !Array.isArray(spec.loadBalancerSourceRanges)) {
    c.add('spec.loadBalancerSourceRanges', 'is not a list');
  }
  return { externalIPs, loadBalancerIPs, loadBalancerSourceRanges };
}

/** The ClientIP affinity timeout, or null without affinity. */
function parseAffinity(c: Collector, spec: ServiceSpec): number | null {
  const affinity = spec.sessionAffinity ?? 'None';
  if (affinity === 'None') return null;
  if (affinity !== 'ClientIP') {
    c.add('spec.sessionAffinity', `${JSON.stringify(affinity)} is not None or ClientIP`);
    return null;
  }
  const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
  if (t === undefined || t === null) return DEFAULT_AFFINITY_TIMEOUT;
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > MAX_AFFINITY_TIMEOUT) {
    c.add('spec.sessionAffinityConfig.clientIP.timeoutSeconds', `${JSON.stringify(t)} is not between 1 and ${MAX_AFFINITY_TIMEOUT}`);
    return null;
  }
  return t;
}

function parsePolicy(c: Collector, field: string, v: unknown): TrafficPolicy {
  if (v === undefined || v === null || v === '' || v === 'Cluster') return 'Cluster';
  if (v === 'Local') return 'Local';
  c.add(field, `${JSON.stringify(v)} is not Cluster or Local`);
  return 'Cluster';
}

function cond(v: unknown, dflt: boolean): boolean {
  return v === undefined || v === null ? dflt : v === true;
}

/** The hints of an endpoint without any (nearly all): one shared empty list, not two new arrays per endpoint. */
const NO_HINTS: string[] = Object.freeze([]) as unknown as string[];

/** What is read of one endpoint of a slice, before it is resolved to each of the slice's ports. */
type SliceEndpoint = Omit<Endpoint, 'port' | 'id'>;

/** The slice's endpoints at `port`: one Endpoint each, sorted by id, duplicates merged (mergeById). */
function endpointsAt(endpoints: readonly SliceEndpoint[], port: number): Endpoint[] {
  return mergeById(endpoints.map((e) => makeEndpoint(e, port, hostPort(e.ip, port))));
}

/**
 * Endpoints with one entry per id (ip:port), sorted by id: of an address listed twice (in one slice, or in
 * several slices of a service), the first ready copy wins, else the first copy.
 */
export function mergeById(endpoints: readonly Endpoint[]): Endpoint[] {
  const byId = new Map<string, Endpoint>();
  for (const e of endpoints) {
    const prev = byId.get(e.id);
    if (prev && (prev.ready || !e.ready)) continue;
    byId.set(e.id, e);
  }
  return [...byId.values()].sort(compareEndpointIds);
}

/** An Endpoint, always built with its fields in this order (one object shape for V8). */
function makeEndpoint(e: SliceEndpoint, port: number, id: string): Endpoint {
  return {
    ip: e.ip,
    port,
    id,
    nodeName: e.nodeName,
    zone: e.zone,
    isLocal: e.isLocal,
    ready: e.ready,
    serving: e.serving,
    terminating: e.terminating,
    zoneHints: e.zoneHints,
    nodeHints: e.nodeHints,
  };
}

function compareEndpointIds(a: Endpoint, b: Endpoint): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function parseEndpointSliceOnce(slice: EndpointSlice, hostname: string): ParseResult<ParsedSlice> {
  const c = new Collector(describe('EndpointSlice', slice.metadata));
  const { name, namespace } = checkMeta(c, slice.metadata, true, 'dns1123-subdomain');
  const labels = slice.metadata?.labels;
  if (isLabelled(labels, SERVICE_PROXY_NAME_LABEL)) return { ok: 'skip', reason: `labelled ${SERVICE_PROXY_NAME_LABEL}` };
  if (isLabelled(labels, HEADLESS_LABEL)) return { ok: 'skip', reason: `labelled ${HEADLESS_LABEL}` };
  const svcName = labels?.[SERVICE_NAME_LABEL];
  if (typeof svcName !== 'string' || svcName === '') return { ok: 'skip', reason: `no ${SERVICE_NAME_LABEL} label` };
  if (!DNS1035_LABEL.test(svcName)) c.add(`metadata.labels["${SERVICE_NAME_LABEL}"]`, `${JSON.stringify(svcName)} is not a valid service name`);
  const at = slice.addressType;
  if (at === 'FQDN') return { ok: 'skip', reason: 'FQDN address type' };
  if (at !== 'IPv4' && at !== 'IPv6') c.add('addressType', `${JSON.stringify(at)} is not IPv4, IPv6 or FQDN`);
  const family: IPFamily = at === 'IPv6' ? 'IPv6' : 'IPv4';

  const ports: { name: string; protocol: Protocol; port: number }[] = [];
  if (slice.ports !== undefined && slice.ports !== null && !Array.isArray(slice.ports)) c.add('ports', 'is not a list');
  (Array.isArray(slice.ports) ? slice.ports : []).forEach((p, i) => {
    const protocol = parseProtocol(c, `ports[${i}].protocol`, p?.protocol);
    if (p?.port === undefined || p?.port === null) return; // "all ports": not routable by a service port
    if (!isValidPort(p.port)) {
      c.add(`ports[${i}].port`, `${JSON.stringify(p.port)} is not a port number (1-65535)`);
      return;
    }
    const pname = p.name ?? '';
    if (typeof pname !== 'string') c.add(`ports[${i}].name`, 'is not a string');
    ports.push({ name: String(pname), protocol, port: p.port });
  });

  const endpoints: SliceEndpoint[] = [];
  if (slice.endpoints !== undefined && slice.endpoints !== null && !Array.isArray(slice.endpoints)) c.add('endpoints', 'is not a list');
  (Array.isArray(slice.endpoints) ? slice.endpoints : []).forEach((e, i) => {
    const addr = e?.addresses?.[0];
    if (addr === undefined) {
      c.add(`endpoints[${i}].addresses`, 'is empty');
      return;
    }
    const ip = checkIP(c, `endpoints[${i}].addresses[0]`, addr);
    if (!ip) return;
    if (ip.family !== family) {
      c.add(`endpoints[${i}].addresses[0]`, `${addr} is not an ${family} address`);
      return;
    }
    // discovery.k8s.io/v1beta1 keeps the node and zone in a topology map; v1 (converted by the API server) in
    // nodeName and zone, with what else v1beta1 had in deprecatedTopology. Read both, as upstream's conversion maps them.
    const topology = e.topology ?? e.deprecatedTopology;
    const nodeName = e.nodeName ?? topology?.[HOSTNAME_LABEL] ?? null;
    const zone = e.zone ?? e.topology?.[ZONE_LABEL] ?? null;
    const hintNames = (field: string, list: unknown): string[] => {
      if (list === undefined || list === null) return NO_HINTS;
      if (!Array.isArray(list)) {
        c.add(`endpoints[${i}].hints.${field}`, 'is not a list');
        return [];
      }
      const names = list.map((h: { name?: unknown } | null) => h?.name).filter((n): n is string => typeof n === 'string' && n !== '');
      return names.length === 0 ? NO_HINTS : names;
    };
    // Conditions as upstream reads them: ready and serving absent mean true, terminating absent means false.
    const node = typeof nodeName === 'string' && nodeName !== '' ? nodeName : null;
    endpoints.push({
      ip: ip.ip,
      nodeName: node,
      zone: typeof zone === 'string' && zone !== '' ? zone : null,
      isLocal: node !== null && node === hostname,
      ready: cond(e.conditions?.ready, true),
      serving: cond(e.conditions?.serving, true),
      terminating: cond(e.conditions?.terminating, false),
      zoneHints: hintNames('forZones', e.hints?.forZones),
      nodeHints: hintNames('forNodes', e.hints?.forNodes),
    });
  });

  let triggerTime: number | null = null;
  const tt = slice.metadata?.annotations?.[TRIGGER_TIME_ANNOTATION];
  if (typeof tt === 'string') {
    const ms = Date.parse(tt);
    if (Number.isFinite(ms)) triggerTime = ms;
  }
  if (c.issues.length > 0) return { ok: false, issues: c.issues };
  return {
    ok: true,
    value: {
      key: `${namespace}/${name}`,
      namespace,
      name,
      serviceKey: `${namespace}/${svcName}`,
      family,
      ports: ports.map((p) => ({ ...p, endpoints: endpointsAt(endpoints, p.port) })),
      hostname,
      triggerTime,
    },
  };
}

function parseNodeOnce(node: Node): ParseResult<NodeInfo> {
  const c = new Collector(describe('Node', node.metadata));
  const { name } = checkMeta(c, node.metadata, false, 'dns1123-subdomain');
  const addresses: string[] = [];
  const rawAddresses: unknown = node.status?.addresses ?? [];
  if (!Array.isArray(rawAddresses)) c.add('status.addresses', 'is not a list');
  for (const [i, a] of (Array.isArray(rawAddresses) ? (rawAddresses as { type?: string; address?: string }[]) : []).entries()) {
    if (a?.type !== 'InternalIP' && a?.type !== 'ExternalIP') continue;
    const ip = parseIP(a.address);
    if (!ip) c.add(`status.addresses[${i}].address`, `${JSON.stringify(a.address)} is not a valid IP address`);
    else addresses.push(ip.ip);
  }
  const podCIDRs: string[] = [];
  const rawCIDRs: unknown = node.spec?.podCIDRs ?? (node.spec?.podCIDR ? [node.spec.podCIDR] : []);
  if (!Array.isArray(rawCIDRs)) c.add('spec.podCIDRs', 'is not a list');
  (Array.isArray(rawCIDRs) ? (rawCIDRs as unknown[]) : []).forEach((r, i) => {
    const cidr = parseCIDR(r);
    if (!cidr) c.add(`spec.podCIDRs[${i}]`, `${JSON.stringify(r)} is not a valid CIDR`);
    else podCIDRs.push(cidr.cidr);
  });
  if (c.issues.length > 0) return { ok: false, issues: c.issues };
  const labels: Record<string, string> = node.metadata?.labels && typeof node.metadata.labels === 'object' ? { ...node.metadata.labels } : {};
  const zone = typeof labels[ZONE_LABEL] === 'string' ? labels[ZONE_LABEL] : '';
  return { ok: true, value: { name, labels, zone, addresses, podCIDRs, deleting: Boolean(node.metadata?.deletionTimestamp) } };
}

/** The line a person reads for an issue: "left out: ..." or "warning: ...". */
export function issueLine(i: ValidationIssue): string {
  return `${i.severity === 'warning' ? 'warning' : 'left out'}: ${formatIssue(i)}`;
}

/** One line per issue; every part escaped (object names and values come from whoever wrote the object). */
export function formatIssue(i: ValidationIssue): string {
  return printable(`${i.object}: ${i.field}: ${i.message}`);
}
