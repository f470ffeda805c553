// The contract between the sync loop and a mode.
import type { ChangeSet, DesiredState, ProxyConfig } from '../model/types.ts';

export type ModeName = 'iptables' | 'nftables' | 'userspace';
export const MODES: readonly ModeName[] = ['iptables', 'nftables', 'userspace'];

export interface SyncResult {
  /** True when everything was rewritten, false for a partial sync. */
  full: boolean;
  durationMs: number;
  /** Size of what was handed to the kernel tool (bytes of restore text / JSON), for tests and logs. */
  bytes: number;
  /** Service ports whose rules were (re)written in this sync. */
  servicePortsWritten: number;
}

export interface Proxier {
  readonly mode: ModeName;
  /**
   * Makes the data path match `state`.
   * `changes` lists what changed since the last successful sync; null asks for a full sync
   * (first sync, periodic resync, after a failure). A proxier may always choose a full sync.
   * On failure it throws, leaves the previous rules in force, and its next sync is full
   * whatever `changes` says.
   */
  sync(state: DesiredState, changes: ChangeSet | null): Promise<SyncResult>;
  /** The complete input for a node that has no rules yet: what --dry-run prints. */
  dryRun(state: DesiredState): string;
  /** Removes everything this mode installs (and kube-proxy's own leftovers), nothing else. */
  cleanup(): Promise<void>;
  /** Releases resources (sockets, timers) without touching the rules. */
  close(): Promise<void>;
}

export type IptablesBackend = 'auto' | 'nft' | 'legacy';

export interface ModeOptions {
  config: ProxyConfig;
  /** iptables and userspace modes: which iptables binaries to use; auto detects what the host uses. */
  iptablesBackend: IptablesBackend;
}
