// The registry of modes: each declares itself once (its index.ts exports a ModeDefinition); the rest of the
// program asks here and never checks a mode's name.
import { FAMILIES } from '../model/addr.ts';
import type { IPFamily } from '../model/types.ts';
import { definition as iptables } from './iptables/index.ts';
import { definition as nftables } from './nftables/index.ts';
import type { ModeDefinition, ModeName, ModeOptions, Proxier } from './types.ts';
import { definition as userspace } from './userspace/index.ts';

export const MODE_DEFINITIONS: Readonly<Record<ModeName, ModeDefinition>> = { iptables, nftables, userspace };

export function modeDefinition(mode: ModeName): ModeDefinition {
  return MODE_DEFINITIONS[mode];
}

export function createProxier(mode: ModeName, opts: ModeOptions): Proxier {
  return MODE_DEFINITIONS[mode].create(opts);
}

/** One proxier per family, in family order. */
export function createFamilyProxiers(mode: ModeName, opts: Omit<ModeOptions, 'family'>, families: readonly IPFamily[] = FAMILIES): Proxier[] {
  return families.map((family) => createProxier(mode, { ...opts, family }));
}
