import type { ModeOptions, Proxier } from '../types.ts';

export function createProxier(_opts: ModeOptions): Proxier {
  throw new Error('the iptables mode is not built yet');
}
