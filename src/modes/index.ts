import { createProxier as iptables } from './iptables/index.ts';
import { createProxier as nftables } from './nftables/index.ts';
import type { ModeName, ModeOptions, Proxier } from './types.ts';
import { createProxier as userspace } from './userspace/index.ts';

const factories: Record<ModeName, (opts: ModeOptions) => Proxier> = { iptables, nftables, userspace };

export function createProxier(mode: ModeName, opts: ModeOptions): Proxier {
  return factories[mode](opts);
}
