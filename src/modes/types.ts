// The contract between the daemon and a mode. A mode declares itself once (ModeDefinition, in its
// index.ts); a Proxier programs ONE IP family. The daemon builds one pipeline per family and composes
// them (src/daemon/run.ts), as upstream's meta-proxier does, so no mode handles two families at once.
import type { ChangeSet, DesiredState, IPFamily, ProxyConfig } from '../model/types.ts';

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
  /**
   * The iptables mode's rule counts per table (upstream's kubeproxy_sync_proxy_rules_iptables_total and _last):
   * the rules of ours in the table after this sync, and how many this sync wrote.
   */
  iptablesRules?: { table: 'nat' | 'filter'; total: number; written: number }[];
}

export interface Proxier {
  readonly mode: ModeName;
  /** The one family this proxier programs. */
  readonly family: IPFamily;
  /**
   * Makes the data path match `state`.
   * `changes` lists what changed since the last successful sync; null asks for a full sync
   * (first sync, periodic resync, after a failure). A proxier may always choose a full sync.
   * On failure it throws, leaves the previous rules in force, and its next sync is full
   * whatever `changes` says.
   */
  sync(state: DesiredState, changes: ChangeSet | null): Promise<SyncResult>;
  /** The complete input for a node that has no rules yet, for this family: what --dry-run prints. Warnings go to the log, never into it. */
  dryRun(state: DesiredState): string;
  /**
   * dryRun's text in pieces, produced as they are iterated (dryRun is their concatenation): --dry-run writes
   * each piece as it comes, so a large cluster's rules never exist as one string.
   */
  dryRunChunks(state: DesiredState): Iterable<string>;
  /** Removes everything this mode installs for this family (and kube-proxy's own leftovers), nothing else. */
  cleanup(): Promise<void>;
  /** Releases resources (sockets, timers) without touching the rules. */
  close(): Promise<void>;
  /**
   * What the last periodic check found in the kernel that differs from what this proxier applied (a rule
   * deleted, a chain added by hand), one line each; [] when nothing; null before the first check. Optional:
   * a mode without checks does not report drift.
   */
  drift?(): string[] | null;
}

export type IptablesBackend = 'auto' | 'nft' | 'legacy';

export interface ModeOptions {
  config: ProxyConfig;
  /** The family the proxier programs: IPv4 with iptables / table ip, IPv6 with ip6tables / table ip6. */
  family: IPFamily;
  /** iptables and userspace modes: which iptables binaries to use; auto detects what the host uses. */
  iptablesBackend: IptablesBackend;
}

/** What `--dry-run` prints in a mode, and how a user loads it. */
export interface DryRunFormat {
  /** 'restore': iptables-restore text (one family per output); 'nft-json': an `nft -j -f` batch. */
  kind: 'restore' | 'nft-json';
  /**
   * Joins the outputs of both families (each as dryRunChunks gives it, or one string) into one loadable
   * output, piece by piece as they are iterated; null when a mode's output holds one family only (then plain
   * --dry-run prints IPv4 and says on stderr how to get IPv6).
   */
  combine: ((ipv4: Iterable<string>, ipv6: Iterable<string>) => Iterable<string>) | null;
  /** The command that loads a family's output from `file` into a node, e.g. ['ip6tables-restore', '--noflush', file]. */
  loadCommand(family: IPFamily, file: string): string[];
}

/** Everything the rest of the program knows about a mode, declared once in the mode's index.ts. */
export interface ModeDefinition {
  name: ModeName;
  /** One line for --help. */
  summary: string;
  create(opts: ModeOptions): Proxier;
  /** Whether a backend sees the client's own address (false: the proxy opens its own connection). */
  keepsClientAddress: boolean;
  dryRun: DryRunFormat;
  /** The kubeproxy_* counter of failed applies in this mode (upstream's name). */
  failureMetric: string;
}
