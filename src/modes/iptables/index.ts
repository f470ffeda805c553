// The iptables mode: kube-proxy's iptables layout, applied with iptables-restore --noflush (ip6tables-restore
// for IPv6). The wrapper (Iptables, RestoreError) and the backend detection are exported for the userspace
// mode, which programs its redirect rules through the same binaries.
import type { IPFamily } from '../../model/types.ts';
import type { ModeDefinition, Proxier } from '../types.ts';
import { type IptablesModeOptions, IptablesProxier } from './proxier.ts';

export { detectBackend, pickBackend, resolveBackend, scoreSave } from './backend.ts';
export type { IptablesModeOptions } from './proxier.ts';
export { type Backend, binariesFor, Iptables, type IptablesBinaries, type IptablesOptions, RestoreError } from './restore.ts';

/** A proxier with the options of this mode beyond ModeOptions (a network namespace, other binaries: tests, benchmarks). */
export function createProxier(opts: IptablesModeOptions): Proxier {
  return new IptablesProxier(opts);
}

export const definition: ModeDefinition = {
  name: 'iptables',
  summary: "kube-proxy's iptables layout (KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*), applied atomically per table with iptables-restore",
  create: createProxier,
  keepsClientAddress: true,
  dryRun: {
    kind: 'restore',
    // One family per output: iptables-restore and ip6tables-restore each load their own.
    combine: null,
    // The default binaries: which backend a node uses (iptables-nft or -legacy) is only known by looking at
    // its rules, and the alternatives system points these names at the node's choice.
    loadCommand: (family: IPFamily, file: string) => [family === 'IPv6' ? 'ip6tables-restore' : 'iptables-restore', '--noflush', file],
  },
  failureMetric: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
};
