// What the proxy configuration means for one IP family. Each mode renders one family; these decide, once,
// which of the configured CIDRs apply to it.
import { familyCIDR } from './addr.ts';
import type { IPFamily, ProxyConfig } from './types.ts';

/** The configured CIDRs of one family (canonical), in order, without the other family's. */
function ofFamily(cidrs: readonly string[], family: IPFamily): string[] {
  return cidrs.map((c) => familyCIDR(c, family)).filter((c): c is string => c !== null);
}

/** --cluster-cidr of this family: traffic from elsewhere to a ClusterIP is masqueraded. */
export function clusterCIDRsOf(config: ProxyConfig, family: IPFamily): string[] {
  return ofFamily(config.clusterCIDRs, family);
}

/**
 * The local addresses that accept NodePorts in this family: the family's --nodeport-addresses CIDRs, or null
 * for every local address. As upstream's NewNodePortAddresses: a family with none of its own CIDRs in the list,
 * or with a /0 among them, accepts NodePorts on every address.
 */
export function nodePortCIDRsOf(config: ProxyConfig, family: IPFamily): string[] | null {
  const own = ofFamily(config.nodePortAddresses, family);
  if (own.length === 0 || own.some((c) => c.endsWith('/0'))) return null;
  return own;
}
