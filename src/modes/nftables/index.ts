// The nftables mode: one table per family, a fixed set of chains, and sets and maps for everything
// per service (docs/nftables-layout.md), applied with `nft -j -f` batches.
import type { ModeOptions, Proxier } from '../types.ts';
import { type NftablesModeOptions, NftablesProxier } from './proxier.ts';

export type { NftablesModeOptions, NftablesStats } from './proxier.ts';
export { NftablesProxier } from './proxier.ts';
export { Planner } from './planner.ts';
export { Nft, NftError } from './nft.ts';
export { TABLE } from './layout.ts';

export function createProxier(opts: ModeOptions | NftablesModeOptions): Proxier {
  return new NftablesProxier(opts);
}
