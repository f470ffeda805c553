// What one service port contributes to the table: set and map elements only. Keys and values are kept
// as ready-made nft JSON text, so a full sync of a large cluster does not build and take apart a
// couple of hundred thousand small objects. Pseudo-sets (names.ts) carry what the rules need (distinct
// endpoint counts, affinity timeouts); they are reference-counted like shared elements but never sent to nft.
//
// Which endpoints each kind of traffic uses is the model's one decision (ServicePort.internalEndpoints,
// externalEndpoints, clusterEndpoints, hasAnyEndpoints, ...); this file only lays it out. Every value that
// reaches an element goes through the one rule of model/addr.ts first (checkPort): a service port with a
// value that fails it is left out whole, never half of it.
import { addressBits, inAnyCIDR, InvalidValueError, parseCIDR, ruleCIDR, ruleIP, rulePort, ruleProtocol } from '../../model/addr.ts';
import type { Endpoint, IPFamily, ServicePort } from '../../model/types.ts';
import { COUNT_BASE, type CountGroup, type Family, type KeyKind, LOCAL_BIT, MAX_ENDPOINTS, SLOT_BASE } from './layout.ts';
import { CHAIN, countsPseudoSet, KIND, SET, timeoutsPseudoSet } from './names.ts';

/**
 * Elements as a flat list of triples (set, key, value): no object per element. Keys are nft JSON (a
 * concat object for multi-field keys); values are the map data as nft JSON, null for plain sets;
 * verdict map data may carry an element comment (see withComment).
 */
export type ElemList = (string | null)[];

/**
 * Sets whose keys several service ports (or the configuration) may contribute: reference-counted by
 * the planner, with plain keys (an address, a CIDR) turned into JSON by sharedKeyJSON. Every other key
 * contains a frontend, and a frontend belongs to one service port.
 */
export const SHARED_SETS: readonly string[] = [SET.hairpin, SET.clusterIPs, SET.clusterCIDRs, SET.nodePortAddresses];

/** The element key (JSON) of a shared set's plain key. */
export function sharedKeyJSON(set: string, key: string): string {
  switch (set) {
    case SET.hairpin:
      return `{"concat":["${key}","${key}"]}`;
    case SET.clusterIPs:
      return `"${key}"`;
    default:
      return cidrJSON(key);
  }
}

/** A verdict with an element comment: the comment (JSON string) and the verdict, separated by NUL. */
export function withComment(verdict: string, comment: string): string {
  return `${JSON.stringify(comment)}\u0000${verdict}`;
}

export const gotoChain = (chain: string) => `{"goto":{"target":${JSON.stringify(chain)}}}`;
export const jumpChain = (chain: string) => `{"jump":{"target":${JSON.stringify(chain)}}}`;
export const DROP_VERDICT = '{"drop":null}';

/** JSON fragment of a canonical CIDR as an interval element. */
export function cidrJSON(cidr: string): string {
  const slash = cidr.indexOf('/');
  return `{"prefix":{"addr":"${cidr.slice(0, slash)}","len":${Number(cidr.slice(slash + 1))}}}`;
}

/** A frontend of a service port: a set key of the `svc` or `np` kind. */
export interface Frontend {
  kind: KeyKind;
  /** Its fields as a JSON fragment: `"ip","proto",port` or `"proto",port`. */
  key: string;
  role: 'cluster-ip' | 'external' | 'load-balancer' | 'nodeport';
}

/**
 * The element key of a concatenation of fields (a JSON fragment). Joined, not a template: the planner's
 * record holds ~130,000 of these at 10,000 x 10, and a template leaves a tree of string pieces (V8 cons
 * strings, 32 bytes a node) where join makes one flat string (about 20 MB less).
 */
const concatKey = (fields: string) => ['{"concat":[', fields, ']}'].join('');

/**
 * Identifies a frontend across service ports (two service ports claiming one frontend: the first key wins).
 * Joined, not a template, for the same reason as concatKey: the planner keeps one per frontend.
 */
export const frontendId = (f: Frontend) => [f.kind, f.key].join(' ');

/** nft limits element comments to 128 characters. */
const COMMENT_MAX = 128;
/** Kubernetes caps sessionAffinityConfig.clientIP.timeoutSeconds at 86400. */
const MAX_AFFINITY_SECONDS = 86400;

type CheckedEndpoint = Pick<Endpoint, 'id' | 'ip' | 'port' | 'isLocal'>;

/** A service port's values as they go into elements: canonical, and checked by the one rule of model/addr.ts. */
export interface CheckedPort {
  sp: ServicePort;
  /** Its frontends, in kube-proxy's order (ClusterIPs, externalIPs, LB IPs, NodePort), the first of equal keys kept. */
  frontends: Frontend[];
  clusterIPs: string[];
  /** The model's endpoint lists (see ServicePort), each at most MAX_ENDPOINTS. */
  internal: readonly CheckedEndpoint[];
  cluster: readonly CheckedEndpoint[];
  external: readonly CheckedEndpoint[];
  loadBalancerIPs: string[];
  /** loadBalancerSourceRanges, canonical. */
  sourceRanges: string[];
  /** Things worth a warning that do not leave the port out (an endpoint list cut at MAX_ENDPOINTS). */
  warnings: string[];
}

/**
 * Checks and canonicalises every value of `sp` that may reach an element. Throws InvalidValueError (the
 * caller leaves the service port out) for any value the model should never have let through.
 */
export function checkPort(sp: ServicePort, family: IPFamily): CheckedPort {
  if (sp.family !== family) throw new InvalidValueError(`an ${sp.family} service port in the ${family} table`);
  const proto = ruleProtocol(sp.protocol);
  const port = rulePort(sp.port);
  const frontends: Frontend[] = [];
  const seen = new Set<string>();
  const add = (f: Frontend) => {
    const id = frontendId(f);
    if (seen.has(id)) return;
    seen.add(id);
    frontends.push(f);
  };
  const clusterIPs = sp.clusterIPs.map((ip) => ruleIP(ip, family));
  const externalIPs = sp.externalIPs.map((ip) => ruleIP(ip, family));
  const loadBalancerIPs = sp.loadBalancerIPs.map((ip) => ruleIP(ip, family));
  const ips = (list: readonly string[], role: Frontend['role']) => {
    for (const ip of list) add({ kind: 'svc', key: `"${ip}","${proto}",${port}`, role });
  };
  ips(clusterIPs, 'cluster-ip');
  ips(externalIPs, 'external');
  ips(loadBalancerIPs, 'load-balancer');
  if (sp.nodePort !== null) add({ kind: 'np', key: `"${proto}",${rulePort(sp.nodePort)}`, role: 'nodeport' });
  const warnings: string[] = [];
  const sourceRanges = sp.loadBalancerSourceRanges.map((c) => ruleCIDR(c, family));
  // The model's lists are often one array under several names: check each array once.
  const done = new Map<readonly Endpoint[], readonly CheckedEndpoint[]>();
  const endpoints = (eps: readonly Endpoint[]) => {
    let c = done.get(eps);
    if (!c) done.set(eps, (c = checkedEndpoints(eps, family, warnings)));
    return c;
  };
  return {
    sp,
    frontends,
    clusterIPs,
    internal: endpoints(sp.internalEndpoints),
    cluster: endpoints(sp.clusterEndpoints),
    external: endpoints(sp.externalEndpoints),
    loadBalancerIPs,
    sourceRanges,
    warnings: [...new Set(warnings)],
  };
}

/** The endpoints with canonical addresses, at most MAX_ENDPOINTS (the rest left out, with a warning). */
function checkedEndpoints(eps: readonly Endpoint[], family: IPFamily, warnings: string[]): readonly CheckedEndpoint[] {
  let out: CheckedEndpoint[] | null = null; // copied only when an address is rewritten (never, from the model)
  for (let i = 0; i < eps.length; i++) {
    const e = eps[i]!;
    const ip = ruleIP(e.ip, family);
    rulePort(e.port);
    if (!out && ip !== e.ip) out = eps.slice(0, i);
    if (out) out.push(ip === e.ip ? e : { id: e.id, ip, port: e.port, isLocal: e.isLocal });
  }
  const list = out ?? eps;
  if (list.length <= MAX_ENDPOINTS) return list;
  warnings.push(`more than ${MAX_ENDPOINTS} endpoints: the rest are left out`);
  return list.slice(0, MAX_ENDPOINTS);
}

/**
 * Canonical CIDRs without those inside another one of the list: nft refuses overlapping intervals in a
 * set, and CIDRs either nest or are disjoint, so this leaves a list nft accepts that matches the same addresses.
 */
export function disjointCIDRs(cidrs: readonly string[], family: IPFamily): string[] {
  const width = family === 'IPv4' ? 32n : 128n;
  const parsed = [...new Set(cidrs)].map((c) => {
    const { network, prefix } = parseCIDR(c)!;
    return { c, net: addressBits(network), len: BigInt(prefix) };
  });
  parsed.sort((a, b) => Number(a.len - b.len));
  const kept: typeof parsed = [];
  for (const p of parsed) {
    const covered = kept.some((k) => p.net >> (width - k.len) === k.net >> (width - k.len));
    if (!covered) kept.push(p);
  }
  return kept.map((k) => k.c).sort();
}

/** The affinity timeout of a service port in seconds, or null without ClientIP affinity. */
export function affinitySeconds(sp: ServicePort): number | null {
  const t = sp.affinityTimeoutSeconds;
  if (t === null || !Number.isFinite(t)) return null;
  return Math.min(MAX_AFFINITY_SECONDS, Math.max(1, Math.round(t)));
}

export interface PortRenderContext {
  /** This node's addresses of the family (a source range that holds one also admits the LB IPs as sources). */
  nodeIPs: readonly string[];
  /** Whether this service port owns the frontend (false when another service port claimed it first). */
  owns(spKey: string, frontend: Frontend): boolean;
  /** Stable slots for the endpoints of a set with affinity (slots.ts). */
  slots(setId: string, endpointIds: readonly string[], holdMs: number): number[];
}

export interface RenderedPort {
  /** Elements only this service port has (their keys contain a frontend it owns). */
  elems: ElemList;
  /** Shared elements (plain keys, see SHARED_SETS) and pseudo-elements, values always null. */
  shared: ElemList;
  /** Slot sets used (affinity); the planner releases those a port stops using. */
  slotSets: string[];
}

/**
 * The sources an LB IP of the port admits (empty: no loadBalancerSourceRanges, every source), disjoint. As
 * upstream: when a range holds an address of the node, the LB IPs themselves are admitted too, since a node
 * that has a VIP-like LB IP as a local address reaches it from that address.
 */
function allowedSources(port: CheckedPort, nodeIPs: readonly string[]): string[] {
  const family = port.sp.family;
  if (port.sourceRanges.length === 0) return [];
  const fromNode = nodeIPs.some((ip) => inAnyCIDR(port.sourceRanges, ip));
  const hostBits = family === 'IPv4' ? 32 : 128;
  const lbHosts = fromNode ? port.loadBalancerIPs.map((ip) => `${ip}/${hostBits}`) : [];
  return disjointCIDRs([...port.sourceRanges, ...lbHosts], family);
}

/** Where a frontend with endpoints goes (service-ips / service-nodeports), by its kind, role and policy. */
function frontendChain(f: Frontend, externalPolicyLocal: boolean, firewalled: boolean): string {
  if (f.role === 'cluster-ip') return CHAIN.clusterIP;
  if (f.kind === 'np') return externalPolicyLocal ? CHAIN.nodePortLocal : CHAIN.nodePort;
  if (firewalled) return externalPolicyLocal ? CHAIN.firewallLocal : CHAIN.firewall;
  return externalPolicyLocal ? CHAIN.externalLocal : CHAIN.external;
}

/** Which endpoint set of a frontend: its primary one, or the local one of an external Local policy (LOCAL_BIT slots). */
type SetName = 'primary' | 'local';

/** Renders the elements of one checked service port. */
export function renderPort(port: CheckedPort, ctx: PortRenderContext): RenderedPort {
  const { sp } = port;
  const elems: ElemList = [];
  const shared: ElemList = [];
  const slotSets: string[] = [];
  const push = (set: string, key: string, value: string | null = null) => {
    elems.push(set, key, value);
  };
  const pushShared = (set: string, key: string) => {
    shared.push(set, key, null);
  };
  const comment = sp.key.length > COMMENT_MAX ? sp.key.slice(0, COMMENT_MAX) : sp.key;
  const verdict = (v: string) => withComment(v, comment);
  const affinity = affinitySeconds(sp);

  // Slots: dense positions without affinity; stable slots (one allocation per endpoint list) with it.
  const slotCache = new Map<string, number[]>();
  const slotsOf = (list: string, eps: readonly CheckedEndpoint[]): number[] | null => {
    if (affinity === null) return null;
    const setId = `${sp.key}\u0000${list}`;
    let s = slotCache.get(setId);
    if (!s) {
      s = ctx.slots(
        setId,
        eps.map((e) => e.id),
        affinity * 1000,
      );
      slotCache.set(setId, s);
      slotSets.push(setId);
    }
    return s;
  };

  /** The elements that choose among `eps` (the model's list `list`) for frontend `key`, as its set `which`. */
  const endpointSet = (kind: KeyKind, key: string, eps: readonly CheckedEndpoint[], list: string, which: SetName, onePort: boolean) => {
    const n = KIND[kind];
    const count = eps.length;
    const base = SLOT_BASE + (which === 'primary' ? 0 : LOCAL_BIT);
    const group: CountGroup = which === 'primary' ? kind : `${kind}-local`;
    push(which === 'primary' ? n.counts : n.localCounts, concatKey(`${key},${COUNT_BASE + count}`));
    pushShared(countsPseudoSet(group), String(count));
    const slots = slotsOf(list, eps);
    for (let i = 0; i < count; i++) {
      const e = eps[i]!;
      const slot = base + (slots ? slots[i]! : i);
      const slotKey = concatKey(`${key},${slot}`);
      if (slots) push(n.slots, concatKey(`${key},${base + i}`), String(slot));
      push(n.addr, slotKey, `"${e.ip}"`);
      if (!onePort) push(n.slotPort, slotKey, String(e.port));
    }
  };
  /** A frontend's endpoint sets (the local one only under an external Local policy), and its port map entry when every endpoint uses one port. */
  const endpointSets = (
    kind: KeyKind,
    key: string,
    primary: { eps: readonly CheckedEndpoint[]; list: string },
    local: { eps: readonly CheckedEndpoint[]; list: string } | null,
  ) => {
    const all = local ? [...primary.eps, ...local.eps] : primary.eps;
    const port = all[0]?.port;
    const onePort = all.every((e) => e.port === port);
    if (onePort && port !== undefined) push(KIND[kind].port, concatKey(key), String(port));
    endpointSet(kind, key, primary.eps, primary.list, 'primary', onePort);
    if (local && local.eps.length > 0) endpointSet(kind, key, local.eps, local.list, 'local', onePort);
    if (affinity !== null) {
      const n = KIND[kind];
      push(n.affinity, concatKey(key), jumpChain(n.affinityChain(affinity)));
      push(n.affinityStore, concatKey(key), jumpChain(n.affinityStoreChain(affinity)));
      pushShared(timeoutsPseudoSet(kind), String(affinity));
    }
  };

  // The endpoint lists by the model's names (the name identifies a list's affinity slots).
  const internal = { eps: port.internal, list: sp.internalPolicyLocal ? 'local' : 'cluster' };
  const cluster = { eps: port.cluster, list: 'cluster' };
  const external = { eps: port.external, list: sp.externalPolicyLocal ? 'local' : 'cluster' };
  const reject = verdict(gotoChain(CHAIN.reject));
  const allowed = allowedSources(port, ctx.nodeIPs).map(cidrJSON);

  for (const ip of port.clusterIPs) pushShared(SET.clusterIPs, ip);
  for (const f of port.frontends) {
    if (!ctx.owns(sp.key, f)) continue;
    const { kind, key } = f;
    const fk = concatKey(key);
    const dispatch = kind === 'svc' ? SET.serviceIPs : SET.serviceNodePorts;
    const noEndpoints = kind === 'svc' ? SET.noEndpointServices : SET.noEndpointNodePorts;
    if (f.role === 'cluster-ip') {
      if (!sp.hasAnyEndpoints) push(noEndpoints, fk, reject);
      // internalTrafficPolicy Local without a local endpoint: DROP, in nat (see the layout's filter chains).
      else if (internal.eps.length === 0) push(dispatch, fk, verdict(DROP_VERDICT));
      else {
        push(dispatch, fk, verdict(gotoChain(CHAIN.clusterIP)));
        endpointSets(kind, key, internal, null);
      }
      continue;
    }
    const firewalled = f.role === 'load-balancer' && allowed.length > 0;
    if (firewalled) for (const r of allowed) push(SET.firewallAllow, concatKey(`${key},${r}`));
    if (!sp.hasAnyEndpoints) {
      if (firewalled) push(dispatch, fk, verdict(gotoChain(CHAIN.firewallOnly)));
      push(noEndpoints, fk, reject);
      continue;
    }
    push(dispatch, fk, verdict(gotoChain(frontendChain(f, sp.externalPolicyLocal, firewalled))));
    // Under an external Local policy, pods and the node itself use the cluster endpoints (upstream's short
    // circuit) and everyone else the external (local) ones; otherwise everyone uses the external ones.
    if (sp.externalPolicyLocal) endpointSets(kind, key, cluster, external);
    else endpointSets(kind, key, external, null);
  }

  // Hairpin: endpoints whose own traffic can come back to them through this node: the local ones among those
  // the frontends use, and (external Local policy) every cluster endpoint, which pods reach through an external
  // frontend without masquerade.
  const used = sp.externallyAccessible ? [port.internal, port.external, ...(sp.externalPolicyLocal ? [port.cluster] : [])] : [port.internal];
  const hairpin = new Set<string>();
  for (const list of used) for (const e of list) if (e.isLocal || sp.externalPolicyLocal) hairpin.add(e.ip);
  for (const ip of hairpin) pushShared(SET.hairpin, ip);

  return { elems, shared, slotSets };
}

/** The CIDRs of the family among `list` (others belong to the other family's table), disjoint; unparsable ones in `problems`. */
export function familyCIDRs(list: readonly string[], fam: Family, problems: string[] = []): string[] {
  const out: string[] = [];
  for (const raw of list) {
    const c = parseCIDR(raw);
    if (c === null) problems.push(`CIDR ${JSON.stringify(raw)}`);
    else if (c.family === fam.name) out.push(c.cidr);
  }
  return disjointCIDRs(out, fam.name);
}

/** Shared elements of the configuration: cluster CIDRs and NodePort addresses, already filtered by familyCIDRs. */
export function configElems(clusterCIDRs: readonly string[], nodePortAddresses: readonly string[]): ElemList {
  const out: ElemList = [];
  for (const c of clusterCIDRs) out.push(SET.clusterCIDRs, c, null);
  for (const c of nodePortAddresses) out.push(SET.nodePortAddresses, c, null);
  return out;
}
