// Who is the client? The proxy sees the real client address (REDIRECT rewrites only the destination),
// and, like the kernel modes, treats pod sources (--cluster-cidr) and this node's own addresses apart
// from outside sources when an external traffic policy is Local (upstream's short circuit). One
// classifier per family: it knows only that family's pod CIDRs and node addresses.
import { networkInterfaces } from 'node:os';
import { cidrContains, familyAddress, inAnyCIDR, ofFamily, parseCIDR, plainAddress } from '../../model/addr.ts';
import { localDetector } from '../../model/local-detect.ts';
import type { IPFamily, ProxyConfig } from '../../model/types.ts';

/**
 * The pod sources as this mode can tell them (model/local-detect.ts): by address only, since the proxy sees a
 * socket's peer and the redirect rules its source, so the CIDR detectors (ClusterCIDR, NodeCIDR) apply and the
 * interface ones (BridgeInterface, InterfaceNamePrefix) leave pods undetected (said once in the log).
 */
export function podSourceCIDRs(config: ProxyConfig, family: IPFamily): string[] {
  const d = localDetector(config, family);
  return d.kind === 'cidr' ? d.cidrs : [];
}

/** The loopback range of each family: the node itself, whatever its interfaces say. */
const LOOPBACK: Readonly<Record<IPFamily, string>> = { IPv4: '127.0.0.0/8', IPv6: '::1/128' };

/** This node's addresses of one family (of the network namespace the process runs in). */
export function readNodeAddresses(family: IPFamily): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      const ip = familyAddress(plainAddress(a.address), family);
      if (ip !== null) out.push(ip);
    }
  }
  return out;
}

export interface SourceClassifierOptions {
  family: IPFamily;
  /** --cluster-cidr, both families: only `family`'s are used. */
  clusterCIDRs: readonly string[];
  /** Where the node's addresses come from (default: the interfaces of this network namespace). */
  readAddresses?: (family: IPFamily) => string[];
  /** Node addresses are re-read when older than this (default 5 s). */
  refreshMs?: number;
  now?: () => number;
}

/** Classifies client addresses of one family: pod (inside the cluster CIDRs), this node, or elsewhere. */
export class SourceClassifier {
  readonly family: IPFamily;
  readonly #podCIDRs: string[];
  readonly #read: (family: IPFamily) => string[];
  readonly #refreshMs: number;
  readonly #now: () => number;
  #local = new Set<string>();
  #readAt = Number.NEGATIVE_INFINITY;

  constructor(opts: SourceClassifierOptions) {
    this.family = opts.family;
    this.#podCIDRs = ofFamily(opts.clusterCIDRs, opts.family);
    this.#read = opts.readAddresses ?? readNodeAddresses;
    this.#refreshMs = opts.refreshMs ?? 5000;
    this.#now = opts.now ?? Date.now;
  }

  /** Whether `ip` is inside this family's cluster (pod) CIDRs. */
  isPod(ip: string): boolean {
    return this.#podCIDRs.length > 0 && inAnyCIDR(this.#podCIDRs, ip);
  }

  /** Whether `ip` is one of this node's own addresses (loopback included). */
  isNodeLocal(ip: string): boolean {
    if (cidrContains(LOOPBACK[this.family], ip)) return true;
    if (this.#now() - this.#readAt > this.#refreshMs) this.refresh();
    return this.#local.has(ip);
  }

  /** Re-reads the node's addresses now. */
  refresh(): void {
    this.#local = new Set(this.#read(this.family));
    this.#readAt = this.#now();
  }
}

/** Whether every address of CIDR `inner` lies in CIDR `outer` (false when either is invalid or their families differ). */
export function cidrWithin(inner: string, outer: string): boolean {
  const i = parseCIDR(inner);
  const o = parseCIDR(outer);
  return i !== null && o !== null && i.family === o.family && i.prefix >= o.prefix && cidrContains(o.cidr, i.network);
}

/**
 * The CIDRs holding the addresses that lie in one of `a` and in one of `b` (CIDRs are nested or
 * disjoint, so each overlap is the narrower of the pair). null in `a` stands for "any address".
 */
export function intersectCidrs(a: readonly (string | null)[], b: readonly string[]): string[] {
  const out = new Set<string>();
  for (const x of a) {
    for (const y of b) {
      if (x === null || cidrWithin(y, x)) out.add(y);
      else if (cidrWithin(x, y)) out.add(x);
    }
  }
  return [...out];
}
