// Chain names: the fixed chains, and kube-proxy's stable per-service-port and per-endpoint hashes
// ("KUBE-SVC-" + the first 16 characters of base32(sha256(servicePortName + protocol))), so a node
// moved from kube-proxy to this proxy keeps the very same chain names. Every name fits iptables'
// 28-character limit (the longest, "KUBE-SVC-"/"KUBE-SEP-" + 16, is 25).
import { hash } from 'node:crypto';
import type { ServicePort } from '../../model/types.ts';

/** Fixed chains. */
export const KUBE_SERVICES = 'KUBE-SERVICES';
export const KUBE_NODEPORTS = 'KUBE-NODEPORTS';
export const KUBE_POSTROUTING = 'KUBE-POSTROUTING';
export const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ';
export const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
export const KUBE_FORWARD = 'KUBE-FORWARD';
export const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
/** Ours, only with more than one cluster CIDR: marks traffic whose source is in none of them. */
export const KUBE_MASQ_NON_POD = 'KUBE-MASQ-NON-POD';
/** kube-proxy's canary chain (it creates one per table to notice flushes); removed by cleanup. */
export const KUBE_PROXY_CANARY = 'KUBE-PROXY-CANARY';
/**
 * Kubelet's filter chain, which kube-proxy also writes when it serves NodePorts on localhost: the guard
 * against martian packets that route_localnet lets in. Not ours: never removed, not even by cleanup, since
 * route_localnet stays set (as upstream, whose CleanupLeftovers leaves it too).
 */
export const KUBELET_FIREWALL = 'KUBE-FIREWALL';

export const NAT_FIXED_CHAINS = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ] as const;
export const FILTER_FIXED_CHAINS = [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL] as const;

/** Prefixes of per-service-port and per-endpoint chains (KUBE-XLB- is kube-proxy's old name of KUBE-SVL-). */
const SERVICE_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-', 'KUBE-XLB-'];

const OWNED_FIXED: Record<string, ReadonlySet<string>> = {
  nat: new Set<string>([...NAT_FIXED_CHAINS, KUBE_MASQ_NON_POD, KUBE_PROXY_CANARY]),
  filter: new Set<string>([...FILTER_FIXED_CHAINS, KUBE_PROXY_CANARY]),
  mangle: new Set<string>([KUBE_PROXY_CANARY]),
};

/**
 * Whether a chain of `table` belongs to this proxy (or to kube-proxy, whose leftovers it takes over).
 * Other KUBE-* chains (kubelet's KUBE-FIREWALL, KUBE-MARK-DROP, KUBE-KUBELET-CANARY,
 * KUBE-IPTABLES-HINT) are never touched.
 */
export function isOwnedChain(table: string, chain: string): boolean {
  if (OWNED_FIXED[table]?.has(chain)) return true;
  return table === 'nat' && isServiceChain(chain);
}

export function isServiceChain(chain: string): boolean {
  return SERVICE_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const codes = new Array<number>(16);

/** First 16 characters of the RFC 4648 base32 encoding of sha256(s), as kube-proxy. */
export function hash16(s: string): string {
  const d = hash('sha256', s, 'buffer');
  // 16 characters x 5 bits = exactly the first 10 bytes.
  let acc = 0;
  let bits = 0;
  let n = 0;
  for (let i = 0; i < 10; i++) {
    acc = (acc << 8) | (d[i] as number);
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      codes[n++] = BASE32.charCodeAt((acc >>> bits) & 31);
    }
    acc &= (1 << bits) - 1;
  }
  return String.fromCharCode(...codes);
}

/** kube-proxy's ServicePortName string: "namespace/name:portName", or "namespace/name" for an unnamed port. */
export function servicePortName(sp: ServicePort): string {
  return sp.portName ? `${sp.namespace}/${sp.name}:${sp.portName}` : `${sp.namespace}/${sp.name}`;
}

export interface ServiceChains {
  svc: string;
  svl: string;
  ext: string;
  fw: string;
}

/** The per-service-port chains; `protocol` is the lower-case iptables name. */
export function serviceChains(spName: string, protocol: string): ServiceChains {
  const h = hash16(spName + protocol);
  return { svc: `KUBE-SVC-${h}`, svl: `KUBE-SVL-${h}`, ext: `KUBE-EXT-${h}`, fw: `KUBE-FW-${h}` };
}

/** The chain of one endpoint of a service port; `endpoint` is "ip:port" ("[ip]:port" for IPv6). */
export function endpointChain(spName: string, protocol: string, endpoint: string): string {
  return `KUBE-SEP-${hash16(spName + protocol + endpoint)}`;
}
