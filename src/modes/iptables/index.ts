// The iptables mode: kube-proxy's iptables layout, applied with iptables-restore --noflush.
// The wrapper (Iptables, RestoreError) and the backend detection are exported for the userspace
// mode, which programs its redirect rules through the same binaries.
import type { ModeOptions, Proxier } from '../types.ts';
import { type IptablesModeOptions, IptablesProxier } from './proxier.ts';

export { detectBackend, pickBackend, resolveBackend, scoreSave } from './backend.ts';
export type { IptablesModeOptions } from './proxier.ts';
export { type Backend, binariesFor, Iptables, type IptablesBinaries, type IptablesOptions, RestoreError } from './restore.ts';

export function createProxier(opts: ModeOptions | IptablesModeOptions): Proxier {
  return new IptablesProxier(opts);
}
