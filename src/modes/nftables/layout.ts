// The nftables layout: one table per family, a fixed set of chains and sets, and rules that depend
// only on the configuration, the distinct endpoint counts and the distinct affinity timeouts of the
// cluster, never on the number of services. docs/nftables-layout.md explains every piece.
//
// Everything a service port contributes is a set or map element (see elements.ts). nft 1.0.6's JSON
// input shapes the design:
//  - a named map's data is one named type (no `ipv4_addr . inet_service` data), so DNAT takes the
//    address and the port from two maps with the same key;
//  - `numgen` has type integer, which no named set type matches, so the random index cannot be part of
//    a named map's key directly: it is written into a scratch register, `meta priority` (skb->priority),
//    and the key uses that. Values we write there have majors 0x7e56/0x7e57 and are reset to 0 in nat
//    postrouting; forwarding resets skb->priority anyway. See SCRATCH_* below;
//  - JSON has no map statement (`update @map { k : v }`), so ClientIP affinity is kept in timeout sets,
//    one per bit of the chosen slot;
//  - constants cannot appear in a concatenation on the left of a lookup, hence one set per bit and the
//    scratch register holding N for the per-count lookups.
import type { IPFamily } from '../../model/types.ts';
import { CHAIN, KIND, SET, TABLE } from './names.ts';

export { TABLE };

/** Slot values (endpoint positions) in the scratch register: 0x7e57_0000 + slot. */
export const SLOT_BASE = 0x7e570000;
/** Set in a slot value that indexes the local endpoint set of a frontend that has two sets (Local policy). */
export const LOCAL_BIT = 0x8000;
/** Endpoint counts in the scratch register, for the per-count lookups: 0x7e56_0000 + N. */
export const COUNT_BASE = 0x7e560000;
/** "No endpoint chosen": never a slot value. */
export const SENTINEL = 0x7e56ffff;
/** Matches every value we put in the scratch register (majors 0x7e56 and 0x7e57). */
export const SCRATCH_MASK = 0xfffe0000;
export const SCRATCH_MATCH = 0x7e560000;
/** Endpoints per set: slot numbers use the low 15 bits. */
export const MAX_ENDPOINTS = 0x7fff;
/** Bits of a slot value stored in the affinity sets (15 slot bits and LOCAL_BIT). */
export const AFFINITY_BITS = 16;
/** Maximum elements of each affinity set (clients x frontends with affinity); beyond it affinity is not recorded. */
export const AFFINITY_SET_SIZE = 131072;

/**
 * kube-proxy's priorities: nat at dstnat/srcnat; filter at dstnat - 10 (before DNAT in output), and the
 * output chain that must see the result of DNAT at dstnat + 10.
 */
export const PRIO_DSTNAT = -100;
export const PRIO_SRCNAT = 100;
export const PRIO_FILTER = -110;
export const PRIO_FILTER_POST_DNAT = -90;

export interface Family {
  name: IPFamily;
  /** Table family and the payload protocol of addresses. */
  nft: 'ip' | 'ip6';
  addrType: 'ipv4_addr' | 'ipv6_addr';
  loopback: { addr: string; len: number };
  rejectType: 'icmp' | 'icmpv6';
}

export const FAMILIES: Record<IPFamily, Family> = {
  IPv4: { name: 'IPv4', nft: 'ip', addrType: 'ipv4_addr', loopback: { addr: '127.0.0.0', len: 8 }, rejectType: 'icmp' },
  IPv6: { name: 'IPv6', nft: 'ip6', addrType: 'ipv6_addr', loopback: { addr: '::1', len: 128 }, rejectType: 'icmpv6' },
};

/** The two kinds of frontend keys: `svc` = daddr . l4proto . dport (ClusterIPs, externalIPs, LB IPs); `np` = l4proto . dport (NodePorts). */
export type KeyKind = 'svc' | 'np';
export const KEY_KINDS: readonly KeyKind[] = ['svc', 'np'];

/** Per-count rule groups: a key kind and which endpoint set (the frontend's primary set, or the local set of a Local policy). */
export type CountGroup = 'svc' | 'svc-local' | 'np' | 'np-local';
export const COUNT_GROUPS: readonly CountGroup[] = ['svc', 'svc-local', 'np', 'np-local'];

/** What element keys and values are made of (elements.ts encodes them as space-separated strings). */
export type Field = 'addr' | 'proto' | 'port' | 'num' | 'cidr';
export type ValueKind = 'verdict' | 'addr' | 'port' | 'num';

export interface SetSchema {
  name: string;
  key: Field[];
  value?: ValueKind;
  /** interval / timeout */
  flags?: ('interval' | 'timeout')[];
  size?: number;
}

const KEY_FIELDS: Record<KeyKind, Field[]> = { svc: ['addr', 'proto', 'port'], np: ['proto', 'port'] };

/** Every set and map of the table, with the shape of its elements. Fixed: depends on nothing. */
export function setSchemas(): SetSchema[] {
  const s: SetSchema[] = [
    { name: SET.clusterCIDRs, key: ['cidr'], flags: ['interval'] },
    { name: SET.nodePortAddresses, key: ['cidr'], flags: ['interval'] },
    { name: SET.clusterIPs, key: ['addr'] },
    { name: SET.serviceIPs, key: KEY_FIELDS.svc, value: 'verdict' },
    { name: SET.serviceNodePorts, key: KEY_FIELDS.np, value: 'verdict' },
    { name: SET.noEndpointServices, key: KEY_FIELDS.svc, value: 'verdict' },
    { name: SET.noEndpointNodePorts, key: KEY_FIELDS.np, value: 'verdict' },
    { name: SET.firewallAllow, key: [...KEY_FIELDS.svc, 'cidr'], flags: ['interval'] },
    { name: SET.hairpin, key: ['addr', 'addr'] },
  ];
  for (const kind of KEY_KINDS) {
    const k = KEY_FIELDS[kind];
    const n = KIND[kind];
    const affinity: Pick<SetSchema, 'flags' | 'size'> = { flags: ['timeout'], size: AFFINITY_SET_SIZE };
    s.push(
      { name: n.counts, key: [...k, 'num'] },
      { name: n.localCounts, key: [...k, 'num'] },
      { name: n.slots, key: [...k, 'num'], value: 'num' },
      { name: n.addr, key: [...k, 'num'], value: 'addr' },
      { name: n.port, key: k, value: 'port' },
      { name: n.slotPort, key: [...k, 'num'], value: 'port' },
      { name: n.affinity, key: k, value: 'verdict' },
      { name: n.affinityStore, key: k, value: 'verdict' },
      { name: n.affinityPresent, key: ['addr', ...k], ...affinity },
    );
    for (let b = 0; b < AFFINITY_BITS; b++) s.push({ name: n.affinityBit(b), key: ['addr', ...k], ...affinity });
  }
  return s;
}

/** nft type names of a schema's key fields. */
export function fieldType(f: Field, fam: Family): string {
  switch (f) {
    case 'addr':
    case 'cidr':
      return fam.addrType;
    case 'proto':
      return 'inet_proto';
    case 'port':
      return 'inet_service';
    case 'num':
      return 'classid';
  }
}

export function valueType(v: ValueKind, fam: Family): string {
  switch (v) {
    case 'verdict':
      return 'verdict';
    case 'addr':
      return fam.addrType;
    case 'port':
      return 'inet_service';
    case 'num':
      return 'classid';
  }
}

// ---- structure: chains and rules ----

export interface LayoutConfig {
  family: Family;
  /** The local-traffic detector's CIDRs (ClusterCIDR, NodeCIDR), the elements of the cluster-cidrs set. */
  clusterCIDRs: readonly string[];
  /**
   * The local-traffic detector's input interface (BridgeInterface: a name; InterfaceNamePrefix: "prefix*", nft's
   * wildcard), already checked by model/addr.ts ruleInterfaceName; null with a CIDR detector or none.
   */
  localInterface: string | null;
  /** The masquerade mark (1 << masqueradeBit). */
  masqMark: number;
  masqueradeAll: boolean;
  nodePortAddresses: readonly string[];
}

/** The cluster-dependent inputs of the rules: distinct endpoint counts and affinity timeouts. */
export interface Needs {
  counts: Record<CountGroup, number[]>;
  timeouts: Record<KeyKind, number[]>;
}

export function emptyNeeds(): Needs {
  return { counts: { svc: [], 'svc-local': [], np: [], 'np-local': [] }, timeouts: { svc: [], np: [] } };
}

export interface BaseHook {
  type: 'nat' | 'filter';
  hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
  prio: number;
}

export interface ChainSpec {
  name: string;
  base?: BaseHook;
  /** Rule expressions (the `expr` arrays of nft JSON). */
  rules: unknown[][];
}

// Expression builders (nft JSON).
type X = unknown;
const payload = (protocol: string, field: string): X => ({ payload: { protocol, field } });
const meta = (key: string): X => ({ meta: { key } });
const concat = (parts: X[]): X => (parts.length === 1 ? parts[0] : { concat: parts });
const match = (left: X, right: X, op = '=='): X => ({ match: { op, left, right } });
const inSet = (left: X, set: string, op = '=='): X => match(left, `@${set}`, op);
const vmap = (key: X, map: string): X => ({ vmap: { key, data: `@${map}` } });
const lookup = (key: X, map: string): X => ({ map: { key, data: `@${map}` } });
const setPriority = (value: X): X => ({ mangle: { key: meta('priority'), value } });
const setMark = (value: X): X => ({ mangle: { key: meta('mark'), value } });
const jump = (target: string): X => ({ jump: { target } });
const goto = (target: string): X => ({ goto: { target } });
const RETURN: X = { return: null };
const DROP: X = { drop: null };
const ctState = (state: string): X => match({ ct: { key: 'state' } }, state, 'in');
const NEW: X = ctState('new');
const fibLocal = (which: 'saddr' | 'daddr'): X => match({ fib: { result: 'type', flags: [which] } }, 'local');
const L4PROTOS: X = match(meta('l4proto'), { set: ['tcp', 'udp', 'sctp'] });
/** ICMP (ICMPv6 for ip6) port unreachable: what a client sees as "connection refused", as upstream's plain `reject`. */
const reject = (fam: Family): X => ({ reject: { type: fam.rejectType, expr: 'port-unreachable' } });

function keyParts(kind: KeyKind, fam: Family): X[] {
  const l4 = [meta('l4proto'), payload('th', 'dport')];
  return kind === 'svc' ? [payload(fam.nft, 'daddr'), ...l4] : l4;
}

const sorted = (xs: Iterable<number>) => [...new Set(xs)].sort((a, b) => a - b);

/**
 * The DNAT of a chosen slot: the address from a map keyed by frontend . slot; the port from a map keyed by
 * the frontend when all its endpoints use one port (the usual case: one element instead of one per
 * endpoint), else keyed by frontend . slot.
 */
function dnatRules(kind: KeyKind, fam: Family): X[][] {
  const n = KIND[kind];
  const frontend = concat(keyParts(kind, fam));
  const key = concat([...keyParts(kind, fam), meta('priority')]);
  const addr = lookup(key, n.addr);
  return [
    [L4PROTOS, { dnat: { family: fam.nft, addr, port: lookup(frontend, n.port) } }],
    [L4PROTOS, { dnat: { family: fam.nft, addr, port: lookup(key, n.slotPort) } }],
  ];
}

/** Chains of one key kind: endpoint choice, DNAT and ClientIP affinity. */
function selectionChains(kind: KeyKind, fam: Family, needs: Needs): ChainSpec[] {
  const n = KIND[kind];
  const key = keyParts(kind, fam);
  const chains: ChainSpec[] = [];
  const select = (name: string, group: CountGroup, counts: string, offset: number): ChainSpec => ({
    name,
    rules: [
      [setPriority(SENTINEL)],
      [vmap(concat(key), n.affinity)],
      // One rule per distinct endpoint count N: "does this frontend have N endpoints?", then a random
      // position below N and on to the DNAT. A rule that does not match leaves only its N in the
      // scratch register, which the next rule overwrites.
      ...sorted(needs.counts[group]).map((count) => [
        setPriority(COUNT_BASE + count),
        inSet(concat([...key, meta('priority')]), counts),
        setPriority({ numgen: { mode: 'random', mod: count, offset } }),
        goto(n.dnat),
      ]),
      // No endpoint set: an external Local policy without local endpoints, for sources other than pods and the node.
      [DROP],
    ],
  });
  chains.push(select(n.select, kind, n.counts, SLOT_BASE));
  chains.push(select(n.selectLocal, `${kind}-local` as CountGroup, n.localCounts, SLOT_BASE + LOCAL_BIT));
  chains.push({
    name: n.dnat,
    rules: [
      // Frontends with affinity have sparse, stable slots: random position -> slot.
      [setPriority(lookup(concat([...key, meta('priority')]), n.slots))],
      [vmap(concat(key), n.affinityStore)],
      ...dnatRules(kind, fam),
      // A frontend we handle never leaves without DNAT.
      [DROP],
    ],
  });
  const client = payload(fam.nft, 'saddr');
  const affKey = concat([client, ...key]);
  for (const t of sorted(needs.timeouts[kind])) {
    const probe: X[][] = [];
    for (let b = 0; b < AFFINITY_BITS; b++) {
      probe.push([inSet(affKey, n.affinityBit(b)), setPriority({ '|': [meta('priority'), 1 << b] })]);
    }
    chains.push({
      name: n.affinityChain(t),
      rules: [
        [inSet(affKey, n.affinityPresent, '!='), RETURN],
        [setPriority(SLOT_BASE)],
        ...probe,
        // Refresh the remembered choice, then use it if the slot still holds an endpoint.
        [jump(n.affinityStoreChain(t))],
        ...dnatRules(kind, fam),
        [setPriority(SENTINEL)],
      ],
    });
    const store: X[][] = [];
    for (let b = 0; b < AFFINITY_BITS; b++) {
      const bit = { '&': [meta('priority'), 1 << b] };
      const set = `@${n.affinityBit(b)}`;
      store.push([match(bit, 0, '!='), { set: { op: 'update', elem: { elem: { val: affKey, timeout: t } }, set } }]);
      store.push([match(bit, 0, '=='), { set: { op: 'delete', elem: affKey, set } }]);
    }
    store.push([{ set: { op: 'update', elem: { elem: { val: affKey, timeout: t } }, set: `@${n.affinityPresent}` } }]);
    chains.push({ name: n.affinityStoreChain(t), rules: store });
  }
  return chains;
}

/** Every chain with its rules. */
export function chainSpecs(cfg: LayoutConfig, needs: Needs): ChainSpec[] {
  const fam = cfg.family;
  const svcKey = concat(keyParts('svc', fam));
  const npKey = concat(keyParts('np', fam));
  const saddr = payload(fam.nft, 'saddr');
  const daddr = payload(fam.nft, 'daddr');
  // The detector's IfLocal / IfNotLocal (upstream's IfLocalNFT / IfNotLocalNFT); null without a detector.
  const ifLocal = (op: '==' | '!='): X | null =>
    cfg.localInterface !== null ? match(meta('iifname'), cfg.localInterface, op) : cfg.clusterCIDRs.length > 0 ? inSet(saddr, SET.clusterCIDRs, op) : null;
  const local = ifLocal('==');
  const notLocal = ifLocal('!=');
  // NodePorts: local destination addresses, optionally only within --nodeport-addresses; never loopback (as
  // upstream's nftables mode, which leaves loopback addresses out of --nodeport-addresses too).
  const nodePortDest: X[] = [
    fibLocal('daddr'),
    match(daddr, { prefix: fam.loopback }, '!='),
    ...(cfg.nodePortAddresses.length > 0 ? [inSet(daddr, SET.nodePortAddresses)] : []),
  ];
  const markMasq: X[] = [jump(CHAIN.markForMasquerade)];
  // A Local policy: pods and the node itself use every endpoint (the node masqueraded), others the local ones.
  const localPolicy = (select: string, selectLocal: string): X[][] => [
    ...(local !== null ? [[local, goto(select)]] : []),
    [fibLocal('saddr'), ...markMasq],
    [fibLocal('saddr'), goto(select)],
    [goto(selectLocal)],
  ];
  const clusterIPMasq: X[][] = cfg.masqueradeAll ? [markMasq] : notLocal !== null ? [[notLocal, ...markMasq]] : [];
  const firewall: X[] = [inSet(concat([...keyParts('svc', fam), saddr]), SET.firewallAllow, '!='), DROP];
  // New connections to frontends of service ports without endpoints: REJECT (reject-chain).
  const noEndpoints: X[] = [NEW, vmap(svcKey, SET.noEndpointServices)];
  // Upstream's cluster-ips-check, where it looks after DNAT (forward; output after nat): a ClusterIP that is still
  // the destination was translated by nothing, so no service port serves that port and protocol. REJECT at once
  // rather than let the connection hang. Frontends without endpoints were rejected before this; dropped ones
  // (internalTrafficPolicy Local without local endpoints) never get here.
  const clusterIPsCheck: X[] = [NEW, jump(CHAIN.clusterIPsCheck)];
  const svc = KIND.svc;
  const np = KIND.np;
  return [
    {
      name: CHAIN.filterInput,
      base: { type: 'filter', hook: 'input', prio: PRIO_FILTER },
      rules: [noEndpoints, [NEW, ...nodePortDest, vmap(npKey, SET.noEndpointNodePorts)]],
    },
    {
      name: CHAIN.filterForward,
      base: { type: 'filter', hook: 'forward', prio: PRIO_FILTER },
      rules: [[ctState('invalid'), DROP], noEndpoints, clusterIPsCheck],
    },
    { name: CHAIN.filterOutput, base: { type: 'filter', hook: 'output', prio: PRIO_FILTER }, rules: [noEndpoints] },
    { name: CHAIN.filterOutputPostDNAT, base: { type: 'filter', hook: 'output', prio: PRIO_FILTER_POST_DNAT }, rules: [clusterIPsCheck] },
    { name: CHAIN.natPrerouting, base: { type: 'nat', hook: 'prerouting', prio: PRIO_DSTNAT }, rules: [[jump(CHAIN.services)]] },
    { name: CHAIN.natOutput, base: { type: 'nat', hook: 'output', prio: PRIO_DSTNAT }, rules: [[jump(CHAIN.services)]] },
    { name: CHAIN.natPostrouting, base: { type: 'nat', hook: 'postrouting', prio: PRIO_SRCNAT }, rules: [[jump(CHAIN.masquerading)]] },
    { name: CHAIN.reject, rules: [[reject(fam)]] },
    { name: CHAIN.clusterIPsCheck, rules: [[inSet(daddr, SET.clusterIPs), reject(fam)]] },
    {
      name: CHAIN.services,
      rules: [[vmap(svcKey, SET.serviceIPs)], [...nodePortDest, vmap(npKey, SET.serviceNodePorts)]],
    },
    { name: CHAIN.markForMasquerade, rules: [[setMark({ '|': [meta('mark'), cfg.masqMark] })]] },
    {
      name: CHAIN.masquerading,
      rules: [
        // Reset the scratch register (locally generated packets keep skb->priority to the qdisc).
        [match({ '&': [meta('priority'), SCRATCH_MASK] }, SCRATCH_MATCH), setPriority(0)],
        // Hairpin: an endpoint reaching itself through a service.
        [match({ ct: { key: 'status' } }, 'dnat', 'in'), inSet(concat([saddr, daddr]), SET.hairpin), setMark({ '|': [meta('mark'), cfg.masqMark] })],
        [match({ '&': [meta('mark'), cfg.masqMark] }, 0), RETURN],
        [setMark({ '^': [meta('mark'), cfg.masqMark] })],
        [{ masquerade: { flags: ['fully-random'] } }],
      ],
    },
    { name: CHAIN.clusterIP, rules: [...clusterIPMasq, [goto(svc.select)]] },
    { name: CHAIN.external, rules: [markMasq, [goto(svc.select)]] },
    { name: CHAIN.externalLocal, rules: localPolicy(svc.select, svc.selectLocal) },
    { name: CHAIN.firewall, rules: [firewall, [goto(CHAIN.external)]] },
    { name: CHAIN.firewallLocal, rules: [firewall, [goto(CHAIN.externalLocal)]] },
    { name: CHAIN.firewallOnly, rules: [firewall] },
    { name: CHAIN.nodePort, rules: [markMasq, [goto(np.select)]] },
    { name: CHAIN.nodePortLocal, rules: localPolicy(np.select, np.selectLocal) },
    ...selectionChains('svc', fam, needs),
    ...selectionChains('np', fam, needs),
  ];
}
