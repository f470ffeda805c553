// Who is the client? The proxy sees the real client address (REDIRECT rewrites only the destination),
// and, like the kernel modes, treats pod sources (--cluster-cidr) and this node's own addresses apart
// from outside sources when an external traffic policy is Local.
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { parseCIDR } from '../../model/ip.ts';

/** Strips the IPv4-mapped IPv6 prefix Node reports for IPv4 peers of dual-stack sockets. */
export function plainAddress(address: string | undefined): string {
  if (!address) return '';
  return address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
}

function addCidr(list: BlockList, cidr: string): void {
  const c = cidrParts(cidr);
  if (!c) throw new Error(`invalid CIDR ${JSON.stringify(cidr)}`);
  list.addSubnet(c.address, c.bits, c.type);
}

function familyOf(ip: string): 'ipv4' | 'ipv6' | null {
  return isIPv4(ip) ? 'ipv4' : isIPv6(ip) ? 'ipv6' : null;
}

/** Reads this node's addresses (of the network namespace the process runs in). */
export function readNodeAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) out.push(plainAddress(a.address.split('%')[0]));
  }
  return out;
}

export interface SourceClassifierOptions {
  clusterCIDRs: readonly string[];
  /** Where the node's addresses come from (default: the interfaces of this network namespace). */
  readAddresses?: () => string[];
  /** Node addresses are re-read when older than this (default 5 s). */
  refreshMs?: number;
  now?: () => number;
}

/** Classifies client addresses: pod (inside the cluster CIDRs), this node, or elsewhere. */
export class SourceClassifier {
  readonly #pods = new BlockList();
  readonly #hasPodCIDRs: boolean;
  readonly #read: () => string[];
  readonly #refreshMs: number;
  readonly #now: () => number;
  #local = new Set<string>();
  #readAt = Number.NEGATIVE_INFINITY;

  constructor(opts: SourceClassifierOptions) {
    for (const cidr of opts.clusterCIDRs) addCidr(this.#pods, cidr);
    this.#hasPodCIDRs = opts.clusterCIDRs.length > 0;
    this.#read = opts.readAddresses ?? readNodeAddresses;
    this.#refreshMs = opts.refreshMs ?? 5000;
    this.#now = opts.now ?? Date.now;
  }

  /** Whether `ip` is inside the cluster (pod) CIDRs. */
  isPod(ip: string): boolean {
    const family = familyOf(ip);
    return this.#hasPodCIDRs && family !== null && this.#pods.check(ip, family);
  }

  /** Whether `ip` is one of this node's own addresses (loopback included). */
  isNodeLocal(ip: string): boolean {
    if (ip === '::1' || (isIPv4(ip) && ip.startsWith('127.'))) return true;
    if (this.#now() - this.#readAt > this.#refreshMs) this.refresh();
    return this.#local.has(ip);
  }

  /** Re-reads the node's addresses now. */
  refresh(): void {
    this.#local = new Set(this.#read());
    this.#readAt = this.#now();
  }
}

/** A CIDR (strictly parsed by the model's parser) as BlockList arguments; null when invalid. */
export function cidrParts(cidr: string): { address: string; bits: number; type: 'ipv4' | 'ipv6' } | null {
  const c = parseCIDR(cidr);
  if (!c) return null;
  const [address, bits] = c.cidr.split('/') as [string, string];
  return { address, bits: Number(bits), type: c.family === 'IPv4' ? 'ipv4' : 'ipv6' };
}

/** Whether every address of CIDR `inner` lies in CIDR `outer`. */
export function cidrWithin(inner: string, outer: string): boolean {
  const i = cidrParts(inner);
  const o = cidrParts(outer);
  if (!i || !o || i.type !== o.type || i.bits < o.bits) return false;
  const list = new BlockList();
  list.addSubnet(o.address, o.bits, o.type);
  return list.check(i.address, i.type);
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
