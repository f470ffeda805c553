// The nftables mode: one table per family (`ip kube-proxy-ts`, `ip6 kube-proxy-ts`), a fixed set of chains,
// and sets and maps for everything per service (docs/nftables-layout.md), applied with `nft -j -f` batches.
import type { ModeDefinition, Proxier } from '../types.ts';
import { combineBatches } from './json.ts';
import { type NftablesModeOptions, NftablesProxier } from './proxier.ts';

export type { NftablesModeOptions, NftablesStats } from './proxier.ts';
export { NftablesProxier } from './proxier.ts';
export { Planner } from './planner.ts';
export { Nft, NftError } from './nft.ts';
export { TABLE } from './names.ts';

/** A proxier with the options of this mode beyond ModeOptions (a network namespace, another nft: tests, benchmarks). */
export function createProxier(opts: NftablesModeOptions): Proxier {
  return new NftablesProxier(opts);
}

export const definition: ModeDefinition = {
  name: 'nftables',
  summary: 'one nftables table per family with a fixed set of chains; services and endpoints in sets and maps, applied atomically with nft -j -f',
  create: createProxier,
  keepsClientAddress: true,
  dryRun: {
    kind: 'nft-json',
    // Both families' tables in one batch: one `nft -j -f` loads them in one transaction.
    combine: (ipv4, ipv6) => combineBatches(ipv4, ipv6),
    loadCommand: (_family, file) => ['nft', '-j', '-f', file],
  },
  failureMetric: 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total',
};
