// What one service port contributes to the table: set and map elements only. Keys and values are kept
// as ready-made nft JSON text, so a full sync of a large cluster does not build and take apart a
// couple of hundred thousand small objects. Pseudo-sets whose names start with '#' carry what the
// rules need (distinct endpoint counts, affinity timeouts); they are reference-counted like shared
// elements but never sent to nft.
import { classifyIP, isValidPort, parseCIDR, parseIPv4 } from '../../model/ip.ts';
import type { Endpoint, ServicePort } from '../../model/types.ts';
import { hasEndpoints } from '../../model/types.ts';
import { COUNT_BASE, type CountGroup, type Family, type KeyKind, LOCAL_BIT, MAX_ENDPOINTS, SLOT_BASE } from './layout.ts';

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
export const SHARED_SETS: readonly string[] = ['hairpin', 'cluster-cidrs', 'nodeport-addresses'];
export const isPseudoSet = (set: string) => set.charCodeAt(0) === 35; /* '#' */

/** The element key (JSON) of a shared set's plain key. */
export function sharedKeyJSON(set: string, key: string): string {
  return set === 'hairpin' ? `{"concat":["${key}","${key}"]}` : cidrJSON(key);
}

/** A verdict with an element comment: the comment (JSON string) and the verdict, separated by NUL. */
export function withComment(verdict: string, comment: string): string {
  return `${JSON.stringify(comment)}\u0000${verdict}`;
}

export const gotoChain = (chain: string) => `{"goto":{"target":${JSON.stringify(chain)}}}`;
export const jumpChain = (chain: string) => `{"jump":{"target":${JSON.stringify(chain)}}}`;
export const DROP_VERDICT = '{"drop":null}';

/** JSON fragment of a CIDR as an interval element. */
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

/** The element key of a concatenation of fields (a JSON fragment). */
const concatKey = (fields: string) => `{"concat":[${fields}]}`;

/** Identifies a frontend across service ports (two service ports claiming one frontend: the first key wins). */
export const frontendId = (f: Frontend) => `${f.kind} ${f.key}`;

export interface RenderContext {
  family: Family;
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
  /** Frontends claimed (owned or not). */
  frontends: Frontend[];
  /** Slot sets used (affinity); the planner releases those a port stops using. */
  slotSets: string[];
  /** Values left out because they are not valid for the family (the model should never let them through). */
  problems: string[];
}

const PROTO: Record<ServicePort['protocol'], string> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };
/** nft limits element comments to 128 characters. */
const COMMENT_MAX = 128;
/** Kubernetes caps sessionAffinityConfig.clientIP.timeoutSeconds at 86400. */
const MAX_AFFINITY_SECONDS = 86400;

const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** The canonical address for the family, or null if it is not one (IPv4: dotted quad without leading zeros). */
export function familyAddress(ip: string, fam: Family): string | null {
  if (fam.name === 'IPv4') return IPV4.test(ip) ? ip : null;
  const c = classifyIP(ip);
  return c?.family === 'IPv6' ? c.ip : null;
}

export function familyCIDR(cidr: string, fam: Family): string | null {
  const c = parseCIDR(cidr);
  return c?.family === fam.name ? c.cidr : null;
}

function addressBits(ip: string, fam: Family): bigint {
  if (fam.name === 'IPv4') return BigInt(parseIPv4(ip) ?? 0);
  // Canonical IPv6 (classifyIP): expand '::' and read eight 16-bit groups.
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g, 16)), 0n);
}

/**
 * Normalised CIDRs without those inside another one of the list: nft refuses overlapping intervals in a
 * set, and CIDRs either nest or are disjoint, so this leaves a list nft accepts that matches the same addresses.
 */
export function disjointCIDRs(cidrs: readonly string[], fam: Family): string[] {
  const width = fam.name === 'IPv4' ? 32n : 128n;
  const parsed = [...new Set(cidrs)].map((c) => {
    const [addr, len] = c.split('/') as [string, string];
    return { c, net: addressBits(addr, fam), len: BigInt(len) };
  });
  parsed.sort((a, b) => Number(a.len - b.len));
  const kept: typeof parsed = [];
  for (const p of parsed) {
    const covered = kept.some((k) => p.net >> (width - k.len) === k.net >> (width - k.len));
    if (!covered) kept.push(p);
  }
  return kept.map((k) => k.c).sort();
}

/** The frontends of a service port, in kube-proxy's order (ClusterIPs, externalIPs, LB IPs, NodePort), first of equal keys kept. */
export function frontendsOf(sp: ServicePort, fam: Family, problems: string[] = []): Frontend[] {
  const out: Frontend[] = [];
  const seen = new Set<string>();
  const proto = PROTO[sp.protocol];
  if (!proto || !isValidPort(sp.port)) {
    problems.push(`protocol/port ${sp.protocol}/${sp.port}`);
    return out;
  }
  const add = (f: Frontend) => {
    const id = frontendId(f);
    if (seen.has(id)) return;
    seen.add(id);
    out.push(f);
  };
  const ips = (list: readonly string[], role: Frontend['role']) => {
    for (const raw of list) {
      const ip = familyAddress(raw, fam);
      if (ip === null) problems.push(`${role} address ${JSON.stringify(raw)}`);
      else add({ kind: 'svc', key: `"${ip}","${proto}",${sp.port}`, role });
    }
  };
  ips(sp.clusterIPs, 'cluster-ip');
  ips(sp.externalIPs, 'external');
  ips(sp.loadBalancerIPs, 'load-balancer');
  if (sp.nodePort !== null) {
    if (isValidPort(sp.nodePort)) add({ kind: 'np', key: `"${proto}",${sp.nodePort}`, role: 'nodeport' });
    else problems.push(`nodePort ${sp.nodePort}`);
  }
  return out;
}

type ValidEndpoint = Pick<Endpoint, 'id' | 'ip' | 'port' | 'isLocal'>;

/** The endpoints with a valid address and port (canonical address), at most MAX_ENDPOINTS. */
function validEndpoints(eps: readonly Endpoint[], fam: Family, problems: string[]): readonly ValidEndpoint[] {
  let out: ValidEndpoint[] | null = null; // copied only when something is left out or rewritten
  for (let i = 0; i < eps.length; i++) {
    const e = eps[i]!;
    const ip = familyAddress(e.ip, fam);
    const ok = ip !== null && isValidPort(e.port);
    if (!ok) problems.push(`endpoint ${JSON.stringify(e.id)}`);
    if (!out && (!ok || ip !== e.ip)) out = eps.slice(0, i);
    if (out && ok) out.push(ip === e.ip ? e : { id: e.id, ip: ip!, port: e.port, isLocal: e.isLocal });
  }
  const list = out ?? eps;
  if (list.length > MAX_ENDPOINTS) {
    problems.push(`more than ${MAX_ENDPOINTS} endpoints: the rest are left out`);
    return list.slice(0, MAX_ENDPOINTS);
  }
  return list;
}

/** The affinity timeout of a service port in seconds, or null without ClientIP affinity. */
export function affinitySeconds(sp: ServicePort): number | null {
  const t = sp.affinityTimeoutSeconds;
  if (t === null || !Number.isFinite(t)) return null;
  return Math.min(MAX_AFFINITY_SECONDS, Math.max(1, Math.round(t)));
}

/** Renders the elements of one service port (`frontends`: frontendsOf(sp), when the caller has it). */
export function renderPort(sp: ServicePort, ctx: RenderContext, frontends?: Frontend[]): RenderedPort {
  const fam = ctx.family;
  const problems: string[] = [];
  frontends ??= frontendsOf(sp, fam, problems);
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

  const has = hasEndpoints(sp);
  const cluster = validEndpoints(sp.clusterEndpoints, fam, problems);
  const local = validEndpoints(sp.localEndpoints, fam, problems);
  const internal = sp.internalTrafficPolicy === 'Local' ? local : cluster;
  const etpLocal = sp.externalTrafficPolicy === 'Local';
  const affinity = affinitySeconds(sp);
  const valid: string[] = [];
  for (const r of sp.loadBalancerSourceRanges) {
    const c = familyCIDR(r, fam);
    if (c === null) problems.push(`source range ${JSON.stringify(r)}`);
    else valid.push(c);
  }
  const ranges = disjointCIDRs(valid, fam).map(cidrJSON);

  // Slots: dense positions without affinity; stable slots (one allocation per endpoint set) with it.
  const slotCache = new Map<string, number[]>();
  const slotsOf = (setName: 'cluster' | 'local', eps: readonly ValidEndpoint[]): number[] | null => {
    if (affinity === null) return null;
    const setId = `${sp.key}\u0000${setName}`;
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

  /** The elements that choose among `eps` for frontend `key`: its primary set, or the local set of a Local policy. */
  const endpointSet = (kind: KeyKind, key: string, eps: readonly ValidEndpoint[], setName: 'cluster' | 'local', primary: boolean, onePort: boolean) => {
    const n = eps.length;
    const base = SLOT_BASE + (primary ? 0 : LOCAL_BIT);
    const group: CountGroup = primary ? kind : (`${kind}-local` as CountGroup);
    push(primary ? `${kind}-counts` : `${kind}-local-counts`, concatKey(`${key},${COUNT_BASE + n}`));
    pushShared(`#count:${group}`, String(n));
    const slots = slotsOf(setName, eps);
    const addrSet = `${kind}-addr`;
    for (let i = 0; i < n; i++) {
      const e = eps[i]!;
      const slot = base + (slots ? slots[i]! : i);
      const slotKey = concatKey(`${key},${slot}`);
      if (slots) push(`${kind}-slots`, concatKey(`${key},${base + i}`), String(slot));
      push(addrSet, slotKey, `"${e.ip}"`);
      if (!onePort) push(`${kind}-slot-port`, slotKey, String(e.port));
    }
  };
  /** Both endpoint sets of a frontend, with the port map entry when every endpoint uses one port. */
  const endpointSets = (
    kind: KeyKind,
    key: string,
    primary: readonly ValidEndpoint[],
    primaryName: 'cluster' | 'local',
    secondary: readonly ValidEndpoint[],
  ) => {
    const port = primary[0]?.port ?? secondary[0]?.port;
    const onePort = primary.every((e) => e.port === port) && secondary.every((e) => e.port === port);
    if (onePort && port !== undefined) push(`${kind}-port`, concatKey(key), String(port));
    endpointSet(kind, key, primary, primaryName, true, onePort);
    if (secondary.length > 0) endpointSet(kind, key, secondary, 'local', false, onePort);
    if (affinity !== null) {
      push(`${kind}-affinity`, concatKey(key), jumpChain(`${kind}-affinity-${affinity}`));
      push(`${kind}-affinity-store`, concatKey(key), jumpChain(`${kind}-affinity-store-${affinity}`));
      pushShared(`#timeout:${kind}`, String(affinity));
    }
  };

  for (const f of frontends) {
    if (!ctx.owns(sp.key, f)) continue;
    const { kind, key } = f;
    const fk = concatKey(key);
    const classify = kind === 'svc' ? 'service-ips' : 'service-nodeports';
    const noEndpoints = kind === 'svc' ? 'no-endpoint-services' : 'no-endpoint-nodeports';
    if (f.role === 'cluster-ip') {
      if (!has) {
        push(noEndpoints, fk, verdict(gotoChain('reject-chain')));
      } else if (internal.length === 0) {
        // internalTrafficPolicy Local without local endpoints.
        push(classify, fk, verdict(DROP_VERDICT));
      } else {
        push(classify, fk, verdict(gotoChain('cluster-ip')));
        endpointSets(kind, key, internal, sp.internalTrafficPolicy === 'Local' ? 'local' : 'cluster', []);
      }
      continue;
    }
    const firewalled = f.role === 'load-balancer' && ranges.length > 0;
    if (firewalled) for (const r of ranges) push('firewall-allow', concatKey(`${key},${r}`));
    if (!has) {
      if (firewalled) push(classify, fk, verdict(gotoChain('firewall-only')));
      push(noEndpoints, fk, verdict(gotoChain('reject-chain')));
      continue;
    }
    const target =
      kind === 'np'
        ? etpLocal
          ? 'nodeport-local'
          : 'nodeport'
        : etpLocal
          ? firewalled
            ? 'firewall-local'
            : 'external-local'
          : firewalled
            ? 'firewall'
            : 'external';
    push(classify, fk, verdict(gotoChain(target)));
    endpointSets(kind, key, cluster, 'cluster', etpLocal ? local : []);
  }

  // Hairpin: endpoints whose own traffic can come back to them through this node: local ones, and
  // (Local policy) every endpoint reachable by pods through an external frontend without masquerade.
  const hairpin = new Set<string>();
  const podExternal = etpLocal && sp.hasExternal;
  for (const e of cluster) if (e.isLocal || podExternal) hairpin.add(e.ip);
  for (const e of local) hairpin.add(e.ip);
  for (const ip of hairpin) pushShared('hairpin', ip);

  return { elems, shared, frontends, slotSets, problems: [...new Set(problems)] };
}

/** The CIDRs of the family among `list` (others belong to the other family's table), disjoint; unparsable ones in `problems`. */
export function familyCIDRs(list: readonly string[], fam: Family, problems: string[] = []): string[] {
  const out: string[] = [];
  for (const raw of list) {
    const c = parseCIDR(raw);
    if (c === null) problems.push(`CIDR ${JSON.stringify(raw)}`);
    else if (c.family === fam.name) out.push(c.cidr);
  }
  return disjointCIDRs(out, fam);
}

/** Shared elements of the configuration: cluster CIDRs and NodePort addresses, already filtered by familyCIDRs. */
export function configElems(clusterCIDRs: readonly string[], nodePortAddresses: readonly string[]): ElemList {
  const out: ElemList = [];
  for (const c of clusterCIDRs) out.push('cluster-cidrs', c, null);
  for (const c of nodePortAddresses) out.push('nodeport-addresses', c, null);
  return out;
}
