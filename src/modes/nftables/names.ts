// Every table, chain, set and map name of the nftables mode, in one place: the layout, the elements and
// the proxier refer to these and never spell a name themselves. docs/nftables-layout.md explains each.
// Upstream's names are kept where upstream has the same piece (filter-*, nat-*, services, service-ips,
// service-nodeports, no-endpoint-*, reject-chain, cluster-ips, cluster-ips-check, mark-for-masquerade,
// masquerading).
import type { CountGroup, KeyKind } from './layout.ts';

/** Our table (one per family: `ip kube-proxy-ts`, `ip6 kube-proxy-ts`). */
export const TABLE = 'kube-proxy-ts';
/** The table of kube-proxy's own nftables mode: removed by cleanup, as its leftovers. */
export const KUBE_PROXY_TABLE = 'kube-proxy';

/** The fixed chains. */
export const CHAIN = {
  // Base chains, named after their type and hook as upstream's.
  filterInput: 'filter-input',
  filterForward: 'filter-forward',
  filterOutput: 'filter-output',
  /** Output after DNAT: sees the endpoint, or the ClusterIP when nothing translated it. */
  filterOutputPostDNAT: 'filter-output-post-dnat',
  natPrerouting: 'nat-prerouting',
  natOutput: 'nat-output',
  natPostrouting: 'nat-postrouting',
  // Regular chains.
  reject: 'reject-chain',
  clusterIPsCheck: 'cluster-ips-check',
  services: 'services',
  markForMasquerade: 'mark-for-masquerade',
  masquerading: 'masquerading',
  // What a frontend's verdict sends it to (service-ips / service-nodeports).
  clusterIP: 'cluster-ip',
  external: 'external',
  externalLocal: 'external-local',
  firewall: 'firewall',
  firewallLocal: 'firewall-local',
  firewallOnly: 'firewall-only',
  nodePort: 'nodeport',
  nodePortLocal: 'nodeport-local',
} as const;

/** The fixed sets and maps that do not depend on the key kind. */
export const SET = {
  clusterCIDRs: 'cluster-cidrs',
  nodePortAddresses: 'nodeport-addresses',
  /** Every ClusterIP of the family (upstream's cluster-ips): traffic to one that nothing translated is rejected. */
  clusterIPs: 'cluster-ips',
  serviceIPs: 'service-ips',
  serviceNodePorts: 'service-nodeports',
  noEndpointServices: 'no-endpoint-services',
  noEndpointNodePorts: 'no-endpoint-nodeports',
  firewallAllow: 'firewall-allow',
  hairpin: 'hairpin',
} as const;

/** The chains and sets of one key kind (see KeyKind): endpoint choice, DNAT and ClientIP affinity. */
export interface KindNames {
  /** Chooses among the frontend's (cluster) endpoint set. */
  select: string;
  /** Chooses among the local endpoint set of a frontend under externalTrafficPolicy Local. */
  selectLocal: string;
  dnat: string;
  /** frontend . count: the size of the frontend's endpoint set. */
  counts: string;
  /** frontend . count: the size of its local endpoint set (Local policy). */
  localCounts: string;
  /** frontend . position -> stable slot (affinity). */
  slots: string;
  /** frontend . slot -> endpoint address. */
  addr: string;
  /** frontend -> endpoint port, when all its endpoints use one. */
  port: string;
  /** frontend . slot -> endpoint port, otherwise. */
  slotPort: string;
  /** frontend -> jump to the affinity probe chain of its timeout. */
  affinity: string;
  /** frontend -> jump to the affinity store chain of its timeout. */
  affinityStore: string;
  /** client . frontend: a choice is remembered. */
  affinityPresent: string;
  affinityBit(bit: number): string;
  affinityChain(timeoutSeconds: number): string;
  affinityStoreChain(timeoutSeconds: number): string;
}

function kindNames(kind: KeyKind): KindNames {
  return {
    select: `${kind}-select`,
    selectLocal: `${kind}-select-local`,
    dnat: `${kind}-dnat`,
    counts: `${kind}-counts`,
    localCounts: `${kind}-local-counts`,
    slots: `${kind}-slots`,
    addr: `${kind}-addr`,
    port: `${kind}-port`,
    slotPort: `${kind}-slot-port`,
    affinity: `${kind}-affinity`,
    affinityStore: `${kind}-affinity-store`,
    affinityPresent: `${kind}-aff-present`,
    affinityBit: (bit) => `${kind}-aff-b${bit}`,
    affinityChain: (t) => `${kind}-affinity-${t}`,
    affinityStoreChain: (t) => `${kind}-affinity-store-${t}`,
  };
}

export const KIND: Readonly<Record<KeyKind, KindNames>> = { svc: kindNames('svc'), np: kindNames('np') };

// Pseudo-sets: reference-counted like shared elements, never sent to nft (their names start with '#'). They
// carry what the rules need to know about the cluster.

// Spelt out, not built per call: every service port names one or two, and a constant string is hashed
// once for the planner's maps.
const COUNT_SETS: Readonly<Record<CountGroup, string>> = { svc: '#count:svc', 'svc-local': '#count:svc-local', np: '#count:np', 'np-local': '#count:np-local' };
const TIMEOUT_SETS: Readonly<Record<KeyKind, string>> = { svc: '#timeout:svc', np: '#timeout:np' };

/** The distinct endpoint counts of a count group (one select rule each). */
export const countsPseudoSet = (group: CountGroup) => COUNT_SETS[group];
/** The distinct affinity timeouts of a key kind (one pair of affinity chains each). */
export const timeoutsPseudoSet = (kind: KeyKind) => TIMEOUT_SETS[kind];
export const isPseudoSet = (set: string) => set.charCodeAt(0) === 35; /* '#' */
