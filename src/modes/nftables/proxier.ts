// The nftables proxier: one family's table (`ip kube-proxy-ts` for IPv4, `ip6 kube-proxy-ts` for IPv6)
// applied with nft JSON batches. The daemon runs one proxier per family.
//
// - First sync, and any sync after a failure: the table is replaced atomically
//   (add, delete, re-add and fill it in one batch). This also clears the affinity sets.
// - Later syncs with a change set: one batch with only the element differences of the changed service
//   ports, plus the few chains whose rules change when a new distinct endpoint count or affinity
//   timeout appears or the last of one goes. Its size depends on what changed, not on the cluster.
// - Periodic syncs (changes = null) after a successful sync: the kernel's table is checked and every
//   service port is compared with the record; only the differences are sent. The check lists the
//   table's chains (`nft -j list chains`, milliseconds); every `verifyRulesEvery`-th periodic sync it also
//   counts their rules, which makes nft 1.0.6 fetch every element too (about a second at 10,000
//   services). The table is replaced only if the check finds it changed behind our back, so periodic
//   resyncs keep ClientIP affinity. Element-level drift is not detected (it would mean listing every
//   element each time); a failing batch, e.g. because an element we delete was removed by someone else,
//   leads to a full replacement.
// - A first sync of 10,000 elements or more into a namespace without the table (a node's first start) goes in steps
//   (planner.ts, FullStep): the empty table, then its elements in parts (partElements), each applied by its own
//   nft run as soon as it is planned, side by side with the planning of the next and the other runs, then the hooked
//   chains that make it live at once. nft's own work on a large batch is mostly single-threaded parsing: its
//   runs use the core the planning leaves (10,000 x 10 on two cores: the IPv4 sync took 0.94-1.05 s so, against
//   1.04-1.20 s with its parts started only after the whole plan). Should any step fail, the table is replaced in
//   one batch at once.
// - On any failure: nothing changed in the kernel (a batch is atomic), the record is dropped, the error
//   is thrown and counted, and the next sync replaces the table.
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setImmediate } from 'node:timers/promises';
import { log } from '../../log.ts';
import type { ChangeSet, DesiredState, IPFamily } from '../../model/types.ts';
import type { ModeOptions, Proxier, SyncResult } from '../types.ts';
import type { Batch } from './json.ts';
import { FAMILIES, type Family } from './layout.ts';
import { KUBE_PROXY_TABLE, TABLE } from './names.ts';
import { Nft, type NftOptions, type SideBySide } from './nft.ts';
import { type Plan, Planner, type PortIssue } from './planner.ts';

export interface NftablesModeOptions extends ModeOptions {
  /** Run nft inside this network namespace (tests, benchmarks). */
  netns?: string;
  /** The nft binary (tests force failures with a failing one). */
  nftBinary?: string;
  /** Kill an nft run after this long (default 10 min). */
  nftTimeoutMs?: number;
  /** Called with every batch before it is applied (tests, debugging): its text, joined for this call alone. */
  onBatch?: (json: string, full: boolean) => void;
  /** Clock for affinity slot holding (tests). */
  now?: () => number;
  /** Count the rules of every chain on every n-th periodic sync (default 10; 1: always). */
  verifyRulesEvery?: number;
  /**
   * nft runs at a time for the element parts of a first sync into a namespace without the table (default: the
   * cores, at most MAX_PARALLEL_APPLY); 1: always one batch.
   */
  parallelApply?: number;
  /** A first sync goes in steps only when its table has at least this many elements (elementsAtLeast; default STEPS_MIN_ELEMENTS). */
  stepsMinElements?: number;
  /** Elements per part of a first sync in steps (default: about a quarter of the table, see partElements). */
  partElements?: number;
}

/** nft runs at a time, at most, however many cores: each holds its part's parsed JSON while it runs. */
const MAX_PARALLEL_APPLY = 4;
/**
 * Below this, one batch: a table of a few thousand elements applies in tens of milliseconds, about what the
 * steps' more nft runs cost (a fresh node's empty table, a small cluster).
 */
const STEPS_MIN_ELEMENTS = 10_000;
/**
 * Elements per part of a first sync in steps (partElements): about a quarter of the table, at least PART_ELEMENTS_MIN
 * and at most PART_ELEMENTS_MAX. The first nft run starts once a part is planned; each run is one more fork of a large
 * process (about 4 ms of the main thread at 140 MB resident) and one more start of nft; the last part's run is what
 * the sync waits for once the plan is made. The IPv4 sync at 10,000 x 10 (160,000 elements) on two cores, alternating
 * runs, the ports claimed and rendered in one pass: parts of 20,000 elements 0.78-0.84 s, 30,000 0.79-0.85 s, 40,000
 * 0.76-0.88 s (lower than 20,000 in each of five pairs), 60,000 0.84-0.92 s. At 2,000 x 10 (40,000 elements), parts of
 * 40,000 left one run for the whole table: bench/nftables.ts's full sync went from 1.08x to 1.31x the bare apply.
 */
const PART_ELEMENTS_MIN = 10_000;
const PART_ELEMENTS_MAX = 40_000;

/** The part size of a first sync in steps of a table of at least `elements` elements (elementsAtLeast). */
function partElements(elements: number): number {
  return Math.min(PART_ELEMENTS_MAX, Math.max(PART_ELEMENTS_MIN, Math.ceil(elements / 4)));
}
/** While planning in steps, the event loop turns at least this often (ms) for the nft runs' I/O. */
const TURN_MS = 5;

export interface NftablesStats {
  syncs: number;
  fullSyncs: number;
  /** Full syncs applied in steps, the elements in parts side by side (a namespace without the table). */
  fullSyncsInParts: number;
  failures: number;
  lastError: string | null;
}

export class NftablesProxier implements Proxier {
  readonly mode = 'nftables' as const;
  readonly family: IPFamily;
  private readonly fam: Family;
  private readonly opts: NftablesModeOptions;
  private readonly nft: Nft;
  /** The record of the installed table; null: the next sync replaces the table. */
  private planner: Planner | null = null;
  /** What the last periodic check found (see drift()); null before the first. */
  private lastDrift: string[] | null = null;
  private periodicSyncs = 0;
  readonly stats: NftablesStats = { syncs: 0, fullSyncs: 0, fullSyncsInParts: 0, failures: 0, lastError: null };

  constructor(opts: NftablesModeOptions) {
    this.opts = opts;
    this.family = opts.family;
    this.fam = FAMILIES[opts.family];
    const nftOpts: NftOptions = {};
    if (opts.netns) nftOpts.netns = opts.netns;
    if (opts.nftBinary) nftOpts.binary = opts.nftBinary;
    if (opts.nftTimeoutMs) nftOpts.timeoutMs = opts.nftTimeoutMs;
    this.nft = new Nft(nftOpts);
  }

  /** A planner with an empty record; `warn` receives what the configuration has that cannot be used. */
  private newPlanner(warn: (message: string) => void): Planner {
    const p = new Planner({ family: this.family, config: this.opts.config, ...(this.opts.now ? { now: this.opts.now } : {}) });
    for (const problem of p.configProblems) warn(`configuration value left out: ${problem}`);
    return p;
  }

  /** One proxier, one family: a state of the other family is a caller's mistake. */
  private checkFamily(state: DesiredState): void {
    if (state.family !== this.family) throw new Error(`the ${this.family} nftables proxier was handed an ${state.family} state`);
  }

  async sync(state: DesiredState, changes: ChangeSet | null): Promise<SyncResult> {
    this.checkFamily(state);
    const started = performance.now();
    let planner = this.planner;
    let plan: Plan;
    let bytes = 0;
    let parts = 0;
    try {
      if (planner && changes === null) {
        const deep = ++this.periodicSyncs % Math.max(1, this.opts.verifyRulesEvery ?? 10) === 0;
        this.lastDrift = await this.tableDrift(planner, deep);
        if (this.lastDrift.length > 0) {
          log.warn(
            { event: 'nftables-drift', table: `${this.fam.nft} ${TABLE}`, differences: this.lastDrift },
            'the table differs from what was installed; replacing it',
          );
          planner = null;
        }
      }
      if (!planner) {
        planner = this.newPlanner((message) => log.warn({ event: 'nftables-config', family: this.family }, message));
        ({ plan, bytes, parts } = await this.replaceTable(planner, state));
      } else {
        const keys =
          changes === null ? new Set([...state.servicePorts.keys(), ...planner.portKeys()]) : [...changes.added, ...changes.updated, ...changes.removed];
        plan = planner.update(state, keys);
        // The planner's record now describes the new table: drop it until the kernel has it.
        this.planner = null;
        for (const issue of plan.issues) this.logIssue(issue);
        if (plan.batch !== null) {
          this.opts.onBatch?.(plan.batch.text(), false);
          bytes = await this.nft.apply(plan.batch.chunks());
          parts = 1;
        }
      }
      this.planner = planner;
    } catch (e) {
      this.planner = null;
      this.stats.failures++;
      this.stats.lastError = e instanceof Error ? e.message : String(e);
      throw e;
    }
    this.stats.syncs++;
    const full = plan.full || changes === null;
    if (plan.full) this.stats.fullSyncs++;
    const durationMs = performance.now() - started;
    log.debug(
      {
        event: 'nftables-sync',
        family: this.family,
        replaced: plan.full,
        bytes,
        added: plan.elementsAdded,
        deleted: plan.elementsDeleted,
        chains: plan.chainsWritten,
        parts,
        durationMs,
      },
      'nftables batch applied',
    );
    return { full, durationMs, bytes, servicePortsWritten: plan.written };
  }

  /**
   * Plans the table for `state` with a fresh planner and replaces the kernel's with it. Into a namespace without
   * the table (asked of nft while the first ports are planned), a large table goes in steps (FullStep): the head,
   * then each part of elements applied as soon as it is planned, while the rest is planned, then the hooks. Else,
   * or when a step fails, the one batch. `parts`: the nft runs of its elements (1: one batch).
   */
  private async replaceTable(planner: Planner, state: DesiredState): Promise<{ plan: Plan; bytes: number; parts: number }> {
    const parallel = this.opts.parallelApply ?? Math.min(MAX_PARALLEL_APPLY, availableParallelism());
    const elements = elementsAtLeast(state);
    const large = parallel > 1 && elements >= (this.opts.stepsMinElements ?? STEPS_MIN_ELEMENTS);
    /** Whether the namespace has no table of ours (asked of nft while the plan starts); null until nft has answered. */
    let missing: boolean | null = null;
    const asked = large ? this.tableMissing().catch(() => false) : Promise.resolve(false);
    void asked.then((m) => (missing = m));
    const steps = planner.fullInSteps(state, this.opts.partElements ?? partElements(elements));
    let head: Batch | null = null;
    let headBytes = 0;
    /**
     * The parts' runs, started once the table is known to be missing, after the head; else the one batch. (Typed by
     * an assertion: it is set only inside start(), which TypeScript's narrowing does not follow.)
     */
    let runs = null as SideBySide | null;
    const start = (): SideBySide =>
      (runs ??= this.nft.sideBySide(
        parallel,
        this.nft.apply(head!.chunks()).then((b) => void (headBytes = b)),
      ));
    let r = steps.next();
    let turned = performance.now();
    try {
      for (; !r.done; r = steps.next()) {
        const step = r.value;
        if (step.kind === 'head') {
          head = step.batch;
          continue;
        }
        // The empty table goes in as soon as nft has said it is missing, while the plan goes on.
        if (missing) start();
        if (step.kind === 'progress') {
          // Answers and I/O (nft's, writing the head, starting a run, one ending) wait for the event loop: let them through.
          if (large && missing !== false && performance.now() - turned >= TURN_MS) {
            await setImmediate();
            turned = performance.now();
          }
          continue;
        }
        if (large && (missing ??= await asked)) await start().add(step.batch.chunks());
      }
    } catch (e) {
      // The plan failed: what was started ends and its files go before the error is passed on.
      await runs?.finish().catch(() => {});
      throw e;
    }
    const plan = r.value;
    // The planner's record now describes the new table: drop it until the kernel has it.
    this.planner = null;
    for (const issue of plan.issues) this.logIssue(issue);
    this.opts.onBatch?.(plan.batch.text(), true);
    if (runs) {
      const parts = runs.size;
      try {
        let bytes = (await runs.finish()) + headBytes;
        bytes += await this.nft.apply(plan.hooks.chunks());
        this.stats.fullSyncsInParts++;
        return { plan, bytes, parts };
      } catch (e) {
        // What was applied is not hooked to anything; the one batch replaces it.
        log.warn(
          { event: 'nftables-phases-failed', family: this.family, err: e instanceof Error ? e.message : String(e) },
          'applying the new table in steps failed; replacing it in one batch',
        );
      }
    }
    return { plan, bytes: await this.nft.apply(plan.batch.chunks()), parts: 1 };
  }

  /** Whether this family has no table of ours (`nft list tables`: names only, however large the table); false when nft cannot tell. */
  private async tableMissing(): Promise<boolean> {
    const listing = await this.nft.listJSON(['list', 'tables', this.fam.nft]);
    return listing !== null && !listing.nftables.some((o) => (o.table as { name?: unknown } | undefined)?.name === TABLE);
  }

  private logIssue(issue: PortIssue): void {
    const fields = { event: 'nftables-invalid', family: this.family, servicePort: issue.key, reason: issue.message };
    if (issue.leftOut) log.warn(fields, 'service port left out');
    else log.warn(fields, 'service port partly left out');
  }

  /** Whether the kernel's table has the chains (and, `deep`, the rule counts) we installed. */
  /** What the periodic check found: the kernel's table against what was installed ([] when they match). */
  drift(): string[] | null {
    return this.lastDrift;
  }

  /** How the kernel's table differs from what was installed: chains missing or added, rule counts (deep). */
  private async tableDrift(planner: Planner, deep: boolean): Promise<string[]> {
    const fam = this.fam.nft;
    const listing = await this.nft.listJSON(deep ? ['-t', 'list', 'table', fam, TABLE] : ['list', 'chains', fam]);
    if (!listing) return [`table ${fam} ${TABLE} is missing`];
    const have = new Map<string, number>();
    for (const o of listing.nftables) {
      const chain = o.chain as { name?: string; table?: string } | undefined;
      if (chain?.name && chain.table === TABLE) have.set(chain.name, have.get(chain.name) ?? 0);
      const rule = o.rule as { chain?: string } | undefined;
      if (rule?.chain) have.set(rule.chain, (have.get(rule.chain) ?? 0) + 1);
    }
    const want = planner.expectedChains();
    const out: string[] = [];
    for (const [name, n] of want) {
      if (!have.has(name)) out.push(`chain ${name} is missing`);
      else if (deep && have.get(name) !== n) out.push(`chain ${name} has ${have.get(name)} rules, ${n} installed`);
    }
    for (const name of have.keys()) if (!want.has(name)) out.push(`chain ${name} was added outside this proxy`);
    return out;
  }

  /**
   * The full batch for `state` (this family's table), as for a node without it. What is worth a warning goes
   * to stderr, one line each, never into the output (it is loaded as it is).
   */
  dryRun(state: DesiredState): string {
    return [...this.dryRunChunks(state)].join('');
  }

  *dryRunChunks(state: DesiredState): Generator<string> {
    this.checkFamily(state);
    const warn = (message: string) => process.stderr.write(`warning: nftables ${this.family}: ${message}\n`);
    // The planner (its record of every service port) is not kept: only the batch is needed from here on.
    const { batch, issues } = this.newPlanner(warn).full(state);
    for (const i of issues) warn(`service port ${JSON.stringify(i.key)}${i.leftOut ? ' left out' : ''}: ${i.message}`);
    yield* batch.chunks();
  }

  /**
   * Deletes this family's table and kube-proxy's own nftables table of this family (`kube-proxy`), in one
   * batch; a missing table is not an error (each is added before it is deleted: nft 1.0.6 has no `destroy`).
   */
  async cleanup(): Promise<void> {
    const cmds: string[] = [];
    for (const name of [TABLE, KUBE_PROXY_TABLE]) {
      const t = JSON.stringify({ family: this.fam.nft, name });
      cmds.push(`{"add":{"table":${t}}}`, `{"delete":{"table":${t}}}`);
    }
    await this.nft.apply(`{"nftables":[${cmds.join(',')}]}\n`);
    this.planner = null;
  }

  async close(): Promise<void> {
    await this.nft.close();
  }
}

/** A lower bound of the elements of a full table for `state`: a service port and each of its endpoints are one or more. */
function elementsAtLeast(state: DesiredState): number {
  let n = 0;
  for (const sp of state.servicePorts.values()) n += 1 + sp.allEndpoints.length;
  return n;
}
