// Taking over a node from another data path without a gap: upstream kube-proxy's start-up cleanup
// (cmd/kube-proxy/app/server_linux.go platformCleanup: the nftables mode removes the iptables and ipvs rules, the
// iptables-based modes remove the nftables table `kube-proxy`), done in the order that keeps every service
// routed. Upstream cleans before its first sync, which leaves services unrouted until that sync; here nothing is
// removed before the new path is programmed: after the first successful sync of every family, both paths
// coexist (each one routes every new connection correctly, whichever NAT chain sees it first), and only then is
// the old one removed. Established connections keep their NAT in conntrack and never notice.
//
// What is removed, whatever the running mode:
// - what every other mode of this proxy installs, through that mode's own Proxier.cleanup() per family (never the
//   running mode's: its cleanup would remove the new path). The iptables mode's cleanup also removes upstream's
//   iptables KUBE-* chains (the same layout), so the nftables and userspace modes take over from upstream's
//   iptables mode through it, while the iptables mode itself overwrites them with its own first sync;
// - what upstream kube-proxy writes and no mode of this proxy writes, so no mode's cleanup or sync removes it:
//   its nftables table `kube-proxy` of each family, and its iptables canary chains (KUBE-PROXY-CANARY in mangle,
//   nat and filter, which utiliptables.Monitor creates empty to notice flushes) in both backends.
// No other mode's cleanup touches the running mode's rules: each mode owns distinct chains and tables.
import { run } from '../exec.ts';
import { log } from '../log.ts';
import type { IPFamily } from '../model/types.ts';
import { MODE_DEFINITIONS } from '../modes/index.ts';
import type { ModeDefinition, ModeName, ModeOptions } from '../modes/types.ts';

/** Upstream kube-proxy's nftables table (pkg/proxy/nftables kubeProxyTable), in `ip` and `ip6`. */
export const UPSTREAM_NFT_TABLE = 'kube-proxy';

export interface TakeoverOptions {
  /** The running mode: its rules are the new path, never removed. */
  mode: ModeName;
  /** Every family this process serves; the takeover waits for the first successful sync of each. */
  families: readonly IPFamily[];
  /** What the other modes' proxiers are created with (their cleanup uses the same binaries and backend). */
  modeOptions: Omit<ModeOptions, 'family'>;
  /** The modes to take over from (default: the registry). */
  definitions?: Readonly<Record<ModeName, ModeDefinition>>;
  /** Removes upstream's nftables table of a family; returns whether it existed (default: nft). */
  removeUpstreamTable?: (family: IPFamily) => Promise<boolean>;
  /** Removes upstream's iptables canary chains of a family; returns whether there were any (default: iptables). */
  removeUpstreamCanaries?: (family: IPFamily) => Promise<boolean>;
}

/** A summary of the takeover, once done. */
export interface TakeoverReport {
  /** What was removed: upstream's tables that existed, and every other mode's cleanup (which cannot tell whether it found anything). */
  removed: string[];
  /** What could not be removed, with the reason; it stays in place. */
  failed: string[];
}

/** The nft family of an IP family. */
const nftFamily = (family: IPFamily): 'ip' | 'ip6' => (family === 'IPv6' ? 'ip6' : 'ip');

/**
 * Deletes upstream's table of this family if it exists. `nft list` first, so that the log tells a removal from
 * nothing to do; the delete itself is add+delete in one batch, so a table gone in between is not an error.
 */
export async function removeUpstreamNftTable(family: IPFamily): Promise<boolean> {
  const table = `${nftFamily(family)} ${UPSTREAM_NFT_TABLE}`;
  const listed = await run(['nft', 'list', 'table', ...table.split(' ')]).catch(() => null);
  if (!listed || listed.code !== 0) return false;
  const r = await run(['nft', '-f', '-'], { input: `add table ${table}\ndelete table ${table}\n` });
  if (r.code !== 0) throw new Error(`nft: ${r.stderr.trim() || `exit ${r.code}`}`);
  return true;
}

/** utiliptables.Monitor's canary chain, which upstream creates in these tables. */
export const UPSTREAM_CANARY_CHAIN = 'KUBE-PROXY-CANARY';
const CANARY_TABLES = ['mangle', 'nat', 'filter'];

/**
 * Deletes upstream's canary chains of this family, in whichever backend holds them (nft, legacy). Reads with
 * *-save first: it lists only tables that exist, so a backend the node does not use is never initialised.
 */
export async function removeUpstreamCanaries(family: IPFamily): Promise<boolean> {
  const base = family === 'IPv6' ? 'ip6tables' : 'iptables';
  let removed = false;
  for (const backend of ['nft', 'legacy']) {
    const saved = await run([`${base}-${backend}-save`]).catch(() => null);
    if (!saved || saved.code !== 0) continue;
    let table = '';
    for (const line of saved.stdout.split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      if (!CANARY_TABLES.includes(table) || !line.startsWith(`:${UPSTREAM_CANARY_CHAIN} `)) continue;
      const r = await run([`${base}-${backend}`, '-w', '5', '-t', table, '-X', UPSTREAM_CANARY_CHAIN]);
      if (r.code !== 0) throw new Error(`${base}-${backend} -t ${table} -X ${UPSTREAM_CANARY_CHAIN}: ${r.stderr.trim() || `exit ${r.code}`}`);
      removed = true;
    }
  }
  return removed;
}

/**
 * Runs the takeover once every family has synced once. The daemon calls synced() after each successful sync;
 * the removal runs in the background and never delays a sync.
 */
export class Takeover {
  readonly #o: TakeoverOptions;
  readonly #synced = new Set<IPFamily>();
  #running: Promise<TakeoverReport> | null = null;

  constructor(o: TakeoverOptions) {
    this.#o = o;
  }

  /** Records a successful sync of a family; the first call that completes the set of families starts the takeover. */
  synced(family: IPFamily): void {
    this.#synced.add(family);
    if (this.#running || !this.#o.families.every((f) => this.#synced.has(f))) return;
    this.#running = this.#takeOver();
  }

  /** Resolves when the takeover (if started) has finished: with its report, or null when it never started. */
  async idle(): Promise<TakeoverReport | null> {
    return this.#running;
  }

  async #takeOver(): Promise<TakeoverReport> {
    const { mode, families } = this.#o;
    const started = performance.now();
    const report: TakeoverReport = { removed: [], failed: [] };
    log.info({ event: 'takeover-start', mode, families }, 'the new data path is programmed in every family: removing the other data paths');
    /** Runs one removal; `remove` resolves false when there was nothing to remove, anything else when it removed (or may have). */
    const attempt = async (what: string, fields: Record<string, unknown>, remove: () => Promise<boolean | void>) => {
      try {
        if ((await remove()) === false) return;
        report.removed.push(what);
        log.info({ event: 'takeover-removed', ...fields }, `removed ${what}`);
      } catch (e) {
        report.failed.push(`${what}: ${(e as Error).message}`);
        log.warn({ event: 'takeover-failed', ...fields, err: (e as Error).message }, `could not remove ${what}; it stays in place`);
      }
    };
    const removeTable = this.#o.removeUpstreamTable ?? removeUpstreamNftTable;
    const removeCanaries = this.#o.removeUpstreamCanaries ?? removeUpstreamCanaries;
    for (const family of families) {
      const what = `upstream kube-proxy's nftables table ${nftFamily(family)} ${UPSTREAM_NFT_TABLE}`;
      await attempt(what, { source: 'kube-proxy nftables', family }, () => removeTable(family));
      await attempt(`upstream kube-proxy's ${family} iptables canary chains`, { source: 'kube-proxy iptables', family }, () => removeCanaries(family));
    }
    for (const other of Object.values(this.#o.definitions ?? MODE_DEFINITIONS)) {
      if (other.name === mode) continue;
      for (const family of families) {
        await attempt(`what the ${other.name} mode leaves for ${family}`, { source: `${other.name} mode`, family }, async () => {
          const proxier = other.create({ ...this.#o.modeOptions, family });
          try {
            await proxier.cleanup();
          } finally {
            await proxier.close().catch(() => {});
          }
        });
      }
    }
    const durationMs = Math.round(performance.now() - started);
    const done = { event: 'takeover-done', mode, removed: report.removed.length, failed: report.failed.length, durationMs };
    if (report.failed.length === 0) log.info(done, 'takeover done: only this data path is left');
    else log.warn(done, 'takeover done, but some of the other data paths could not be removed (see takeover-failed)');
    return report;
  }
}
