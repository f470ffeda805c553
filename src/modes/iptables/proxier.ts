// The iptables proxier: full and partial syncs with iptables-restore --noflush, and cleanup.
//
// Full sync (first sync, changes=null, after any failure, after a configuration change): reads
// iptables-save once (while rendering), writes every chain of ours, removes chains of ours that
// are not wanted any more (a previous run's, kube-proxy's) and repairs the jumps from the
// built-in chains: inserted when missing, duplicates removed. Jumps are only ever written after
// iptables-save showed them missing, never blindly appended, so resyncs and restarts cannot
// duplicate them.
//
// Partial sync: restoring a whole 2,000x10 nat table takes ~26 s on the nf_tables backend, one
// service's chains ~74 ms. So a partial sync only touches the changed service ports: their
// frontend rules in the shared KUBE-SERVICES/KUBE-NODEPORTS chains are deleted (-D with the exact
// spec that was added) or inserted (-I KUBE-SERVICES 1, keeping the NodePort jump last) one by
// one, only where they differ; their KUBE-SVC/SVL/EXT/FW chains are flushed and refilled; new
// KUBE-SEP chains are created, and chains that are gone are deleted (-X) after the rules that
// jumped to them. This needs a record of what is installed per service port (`installed`).
// The filter table is small (only service ports without endpoints, source ranges, health
// checks), so it is rewritten whole, and not at all when its text did not change.
//
// Atomicity: iptables-restore commits one table at a time. Rather than rolling back a committed
// table, the writes are ordered so that no intermediate state breaks traffic. Filter rules only
// act on traffic that nat did not DNAT (a DNATed packet no longer has the frontend as its
// destination), and every filter rule renders one state's verdict on undnated traffic. So:
//   1. filter := old rules + new rules (the union);
//   2. nat    := new;
//   3. filter := new rules.
// Between 1 and 2, the new filter rules only meet traffic the old nat does not DNAT, so a service
// that just lost its endpoints keeps working on its old DNAT until nat commits, and then REJECTs
// at once; between 2 and 3, the old rules only meet traffic the new nat does not DNAT, so a
// service that just got endpoints is never left without both its DNAT and its REJECT (which
// would make clients time out), and a firewall (source ranges) or a Local policy's DROP is
// never missing while nat already relies on it. The three writes normally go to one
// iptables-restore (it commits each table at its COMMIT, in order, and stops at the first
// failure); the line it names tells which commits happened. If nat fails, filter goes back to
// the old rules (the union was harmless anyway) and the error is thrown: the previous rules stay
// in force and the next sync is full. If the last filter write fails, nat is new and filter is
// the union, which is consistent with it; the next sync (full) finishes the job.
import { log } from '../../log.ts';
import { InvalidValueError } from '../../model/addr.ts';
import type { ChangeSet, DesiredState, IPFamily, ServicePort } from '../../model/types.ts';
import type { ModeOptions, Proxier, SyncResult } from '../types.ts';
import { resolveBackend } from './backend.ts';
import { FILTER_FIXED_CHAINS, isServiceChain, KUBE_SERVICES } from './names.ts';
import {
  declarationBytes,
  estimateNatBytes,
  filterText,
  jumpInserts,
  jumpsFor,
  natDeclarations,
  prependNatDeclarations,
  natFixedChains,
  nodePortJumps,
  type RenderContext,
  type RenderedServicePort,
  renderContext,
  renderServicePort,
  type Rule,
  servicePortRules,
  sortedPorts,
  natFixedRules,
} from './render.ts';
import { type Backend, Iptables, type IptablesBinaries, RestoreError } from './restore.ts';
import { countRules, parseSave, planTable, removalLines, type TablePlan } from './save.ts';
import { ensureSysctl, ROUTE_LOCALNET } from './sysctl.ts';
import { TextBuffer } from './text-buffer.ts';

export interface IptablesModeOptions extends ModeOptions {
  /** Run every iptables command inside this network namespace (tests, benchmarks). */
  netns?: string;
  /** Replace binaries of the selected backend (tests force failures this way). */
  binaries?: Partial<IptablesBinaries>;
  /** Called with every restore input before it runs (tests, debugging). */
  onRestore?: (input: string | Buffer) => void;
  /** Kill a restore that runs longer (default 30 min: a full nft restore of 10k services takes minutes). */
  restoreTimeoutMs?: number;
  /** A change set touching more than this fraction of the service ports is applied by a full sync (default 0.5). */
  partialSyncMaxFraction?: number;
}

/**
 * What one service port has installed: enough to compute the next partial sync. Kept compact (a
 * few flat strings per service port) since there is one per service port, for the process's life.
 */
export interface Installed {
  /** nat rules in KUBE-SERVICES / KUBE-NODEPORTS exactly as added, "<chain> <spec>" per line. */
  frontends: string;
  /** KUBE-SVC/SVL/EXT/FW chains, space-separated. */
  chains: string;
  /** KUBE-SEP chains, space-separated. */
  endpoints: string;
  /** filter rules. */
  filter: readonly Rule[];
  affinity: boolean;
  /** How many nat rules it wrote (its frontends and the rules of its chains), for the rule-count metrics. */
  natRules: number;
}

const NO_RULES: readonly Rule[] = Object.freeze([]);

/** What a full or partial sync did: bytes handed to iptables-restore, service ports written, rules written per table. */
interface WriteCounts {
  bytes: number;
  written: number;
  natWritten: number;
  filterWritten: number;
}

/** The `-A` lines (rules) of restore text. */
function countRuleLines(text: string): number {
  const t = `\n${text}`;
  let n = 0;
  for (let i = t.indexOf('\n-A '); i !== -1; i = t.indexOf('\n-A ', i + 1)) n++;
  return n;
}

export function toInstalled(r: RenderedServicePort): Installed {
  return {
    frontends: r.frontends.map((f) => `${f.chain} ${f.spec}`).join('\n'),
    chains: r.chains.map((c) => c.name).join(' '),
    endpoints: r.endpoints.map((c) => c.name).join(' '),
    filter: r.filter.length > 0 ? r.filter : NO_RULES,
    affinity: r.affinity,
    natRules: r.frontends.length + [...r.chains, ...r.endpoints].reduce((n, c) => n + c.rules.length, 0),
  };
}

/** The installed frontend rules. */
export function installedFrontends(inst: Installed | undefined): Rule[] {
  if (!inst?.frontends) return [];
  return inst.frontends.split('\n').map((line) => {
    const sp = line.indexOf(' ');
    return { chain: line.slice(0, sp), spec: line.slice(sp + 1) };
  });
}

const names = (list: string | undefined): string[] => (list ? list.split(' ') : []);

/**
 * What a full sync must repair, from iptables-save output (a function of its own, so that the
 * text, tens of megabytes in a big cluster, is not kept alive during the restore).
 */
function planRepairs(saveText: string, ctx: RenderContext, chains: readonly string[]): { natPlan: TablePlan; filterPlan: TablePlan } {
  const natSaved = parseSave(saveText, 'nat');
  const wanted = [...natSaved.chains].some(isServiceChain) ? new Set(chains) : new Set(natFixedChains(ctx));
  return {
    natPlan: planTable(saveText, 'nat', natSaved, (ch) => wanted.has(ch), jumpsFor(ctx, 'nat')),
    filterPlan: planTable(saveText, 'filter', parseSave(saveText, 'filter'), (ch) => FILTER_FIXED.has(ch), jumpsFor(ctx, 'filter')),
  };
}

/** Every nat chain a full write declares: the fixed ones and those of every service port. */
function allChains(ctx: RenderContext, installed: ReadonlyMap<string, Installed>): string[] {
  const out = natFixedChains(ctx);
  for (const inst of installed.values()) {
    if (inst.chains) out.push(...names(inst.chains));
    if (inst.endpoints) out.push(...names(inst.endpoints));
  }
  return out;
}

/** One changed service port: what it had installed (if anything) and what it wants now (if anything). */
export interface PortChange {
  old: Installed | undefined;
  next: RenderedServicePort | null;
}

const ruleKey = (r: Rule) => `${r.chain}\u0000${r.spec}`;

/**
 * The nat restore input of a partial sync, or null when nat does not change. Order: declare
 * (create or flush) every chain written or to be deleted; delete frontends that went away;
 * insert new ones; fill the written chains; delete the chains that went away.
 */
export function natPatch(changes: Iterable<PortChange>): string | null {
  const declare: string[] = [];
  const del: string[] = [];
  const ins: string[] = [];
  const fill: string[] = [];
  const remove: string[] = [];
  for (const { old, next } of changes) {
    const installed = installedFrontends(old);
    const oldFrontends = new Set(installed.map(ruleKey));
    const newFrontends = new Set((next?.frontends ?? []).map(ruleKey));
    for (const r of installed) if (!newFrontends.has(ruleKey(r))) del.push(`-D ${r.chain} ${r.spec}`);
    for (const r of next?.frontends ?? []) {
      if (oldFrontends.has(ruleKey(r))) continue;
      // KUBE-SERVICES ends with the NodePort jump, which must stay last.
      ins.push(r.chain === KUBE_SERVICES ? `-I ${KUBE_SERVICES} 1 ${r.spec}` : `-A ${r.chain} ${r.spec}`);
    }
    const keep = new Set<string>();
    for (const ch of next?.chains ?? []) {
      keep.add(ch.name);
      declare.push(`:${ch.name} - [0:0]`);
      for (const rule of ch.rules) fill.push(`-A ${ch.name} ${rule}`);
    }
    // An endpoint chain's content only depends on its name and on affinity.
    const oldEndpoints = new Set(old && next && old.affinity === next.affinity ? names(old.endpoints) : []);
    for (const ch of next?.endpoints ?? []) {
      keep.add(ch.name);
      if (oldEndpoints.has(ch.name)) continue;
      declare.push(`:${ch.name} - [0:0]`);
      for (const rule of ch.rules) fill.push(`-A ${ch.name} ${rule}`);
    }
    for (const name of [...names(old?.chains), ...names(old?.endpoints)]) {
      if (keep.has(name)) continue;
      declare.push(`:${name} - [0:0]`);
      remove.push(`-X ${name}`);
    }
  }
  if (declare.length + del.length + ins.length === 0) return null;
  return ['*nat', ...declare.sort(), ...del, ...ins, ...fill, ...remove, 'COMMIT', ''].join('\n');
}

/**
 * The filter rules of every service port, in key order: those of `after`, or with `union` the old
 * ones of `before` too (each rule once). Unchanged service ports share one Installed in both.
 */
function filterRules(before: ReadonlyMap<string, Installed>, after: ReadonlyMap<string, Installed>, union: boolean): (readonly Rule[])[] {
  const keys = new Set<string>();
  for (const [key, inst] of after) if (inst.filter.length > 0) keys.add(key);
  if (union) for (const [key, inst] of before) if (inst.filter.length > 0) keys.add(key);
  return [...keys].sort().map((key) => {
    const next = after.get(key)?.filter ?? NO_RULES;
    const old = before.get(key)?.filter ?? NO_RULES;
    if (!union || old === next) return next;
    const seen = new Set(next.map(ruleKey));
    return [...next, ...old.filter((r) => !seen.has(ruleKey(r)))];
  });
}

/** What one sync writes, in the order explained at the top of this file. */
interface Writes {
  /** filter: the union of old and new rules (null: nothing to write). */
  filterFirst: string | null;
  /** The filter body the first write leaves (for the skip test and rollback). */
  filterFirstBody: string;
  /** nat: a partial sync's patch, or a full sync's text (with headroom for filterFirst). */
  nat: string | TextBuffer | null;
  /** filter: the new rules (null when the union is already that). */
  filterLast: string | null;
  /** What the filter table holds afterwards. */
  filterBody: string;
}

/** Which write of a combined restore input failed. */
type FailedStep = 'filter-first' | 'nat' | 'filter-last' | 'unknown';

/**
 * Attributes a restore failure to a step from the line iptables-restore named: up to
 * `firstLines` it is the first filter write, then the nat table, then the last filter write.
 */
function failedStep(err: unknown, firstLines: number): FailedStep {
  if (!(err instanceof RestoreError) || err.line === null) return 'unknown';
  if (err.line <= firstLines) return 'filter-first';
  if (err.table === 'nat') return 'nat';
  return err.table === 'filter' ? 'filter-last' : 'unknown';
}

const countLines = (s: string) => s.split('\n').length - 1;

/** Leaves room in front of a full sync's nat text for a typical filter table. */
const FILTER_HEADROOM = 64 * 1024;

const BACKENDS: readonly Backend[] = ['nft', 'legacy'];

/** The first line of a dry run with localhost NodePorts (iptables-restore skips "#" lines). */
const ROUTE_LOCALNET_NOTE = `# NodePorts on 127.0.0.1 need the sysctl ${ROUTE_LOCALNET}=1 too, which restore input cannot carry`;
const FILTER_FIXED: ReadonlySet<string> = new Set(FILTER_FIXED_CHAINS);

export class IptablesProxier implements Proxier {
  readonly mode = 'iptables' as const;
  readonly family: IPFamily;
  private readonly opts: IptablesModeOptions;
  /** What each service port has installed, after the last successful nat write. */
  private installed = new Map<string, Installed>();
  /** The filter text last written (without one-off repairs), null when unknown. */
  private filterBody: string | null = null;
  private needsFull = true;
  /** Inputs besides the service ports; a change of them makes the next sync full. */
  private contextKey: string | null = null;
  /** The configuration whose warnings were logged last. */
  private warnedKey: string | null = null;
  /** route_localnet is known to be 1 (set once, as upstream's constructor does, and never reset). */
  private routeLocalnetSet = false;
  private tool: Promise<Iptables> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** Whether the route_localnet note of --dry-run went to stderr already. */
  private notedRouteLocalnet = false;

  constructor(opts: IptablesModeOptions) {
    this.opts = opts;
    this.family = opts.family;
  }

  sync(state: DesiredState, changes: ChangeSet | null): Promise<SyncResult> {
    return this.exclusive(async () => {
      this.checkFamily(state);
      const started = performance.now();
      const ctx = renderContext(state);
      const ctxKey = JSON.stringify(ctx);
      if (ctxKey !== this.warnedKey) {
        for (const w of ctx.warnings) log.warn({ event: 'iptables-config', family: this.family }, w);
        this.warnedKey = ctxKey;
      }
      const changed = changes ? [...new Set([...changes.added, ...changes.updated, ...changes.removed])] : null;
      const maxPartial = Math.max(50, (this.opts.partialSyncMaxFraction ?? 0.5) * state.servicePorts.size);
      const full = changed === null || this.needsFull || ctxKey !== this.contextKey || changed.length > maxPartial;
      // A periodic full sync of rules we installed ourselves, with nothing changed since: check first, and
      // rewrite only if the kernel no longer holds what we wrote (on nf_tables a full rewrite costs seconds).
      const verify = changed === null && !this.needsFull && ctxKey === this.contextKey;
      try {
        const ipt = await this.iptables();
        const { bytes, written, natWritten, filterWritten } = full
          ? await this.fullSync(ipt, state, ctx, verify)
          : await this.partialSync(ipt, state, ctx, changed as string[]);
        // After the write, so that the martian-packet guard is in place before route_localnet opens the way.
        if (ctx.localhostNodePorts && !this.routeLocalnetSet) await this.setRouteLocalnet();
        this.needsFull = false;
        this.contextKey = ctxKey;
        const result: SyncResult = {
          full,
          durationMs: performance.now() - started,
          bytes,
          servicePortsWritten: written,
          iptablesRules: [
            { table: 'nat', total: this.natRuleTotal(ctx), written: natWritten },
            { table: 'filter', total: countRuleLines(this.filterBody ?? ''), written: filterWritten },
          ],
        };
        log.debug({ event: 'iptables-sync', ...result }, 'iptables rules synced');
        return result;
      } catch (err) {
        this.needsFull = true;
        throw err;
      }
    });
  }

  dryRun(state: DesiredState): string {
    return [...this.dryRunChunks(state)].join('');
  }

  *dryRunChunks(state: DesiredState): Generator<string> {
    this.checkFamily(state);
    const ctx = renderContext(state);
    for (const w of ctx.warnings) log.warn({ event: 'iptables-config', family: this.family }, w);
    // Rendered twice: the chain declarations that come first are only known once every service port is
    // rendered, and holding the rules until then would hold the whole output (tens of megabytes); the second
    // pass renders each service port again as it is written. Service ports left out by the first pass
    // (a warning each) are not tried again.
    const ports = sortedPorts(state);
    const next = new Map<string, Installed>();
    for (const sp of ports) {
      const r = this.tryRender(sp, ctx);
      if (r) next.set(sp.key, toInstalled(r));
    }
    // route_localnet is a sysctl, not a rule: restore input cannot carry it. Without it the rules still load and
    // every other frontend works, but 127.0.0.1:<NodePort> does not, so the output and stderr both say so.
    if (ctx.localhostNodePorts) {
      if (!this.notedRouteLocalnet) {
        process.stderr.write(
          `note: NodePorts on 127.0.0.1 also need the sysctl ${ROUTE_LOCALNET}=1 on the node (turn them off with localhostNodePorts: false)\n`,
        );
        this.notedRouteLocalnet = true;
      }
      yield `${ROUTE_LOCALNET_NOTE}\n`;
    }
    yield* natDeclarations(allChains(ctx, next));
    const rendered = ports.filter((sp) => next.has(sp.key));
    for (const rules of this.fullNatRules(rendered, ctx, null)) yield `${rules}\n`;
    for (const line of jumpInserts(jumpsFor(ctx, 'nat'))) yield `${line}\n`;
    yield 'COMMIT\n';
    yield filterText(ctx, filterRules(new Map(), next, false), jumpInserts(jumpsFor(ctx, 'filter')));
  }

  /**
   * Removes our chains and the jumps to them (and kube-proxy's leftovers) from nat, filter and
   * mangle of this family, in both backends, wherever there are any. Other chains (kubelet's
   * KUBE-FIREWALL, with the localnet guard, KUBE-MARK-DROP, ...) and rules are left alone.
   */
  cleanup(): Promise<void> {
    return this.exclusive(async () => {
      const errors: unknown[] = [];
      const family = this.family;
      for (const backend of BACKENDS) {
        const ipt = new Iptables({ backend, family, netns: this.opts.netns, onRestore: this.opts.onRestore });
        for (const table of ['nat', 'filter', 'mangle']) {
          let text: string;
          try {
            text = await ipt.save(table);
          } catch (err) {
            log.debug({ event: 'iptables-cleanup-skip', backend, family, table, err: String(err) }, 'cannot read table');
            continue;
          }
          const plan = planTable(text, table, parseSave(text, table), () => false, []);
          if (plan.remove.length === 0 && plan.jumpEdits.length === 0) continue;
          const rm = removalLines(plan.remove);
          try {
            await ipt.restore([`*${table}`, ...plan.jumpEdits, ...rm.flush, ...rm.remove, 'COMMIT', ''].join('\n'));
            log.info({ event: 'iptables-cleanup', backend, family, table, chains: plan.remove.length, kept: plan.kept }, 'removed iptables rules');
          } catch (err) {
            errors.push(err);
          }
        }
      }
      this.installed = new Map();
      this.filterBody = null;
      this.needsFull = true;
      if (errors.length > 0) throw new AggregateError(errors, `iptables cleanup failed: ${errors.map(String).join('; ')}`);
    });
  }

  async close(): Promise<void> {
    await this.queue.catch(() => undefined);
  }

  /**
   * Our rules in nat now, as upstream counts them (natRules plus the rules of chains a partial sync skipped): the
   * fixed chains, every service port's, the NodePort jumps; not the jumps from the built-in chains.
   */
  private natRuleTotal(ctx: RenderContext): number {
    let n = natFixedRules(ctx).length + nodePortJumps(ctx).length;
    for (const inst of this.installed.values()) n += inst.natRules;
    return n;
  }

  private async fullSync(ipt: Iptables, state: DesiredState, ctx: RenderContext, verify = false): Promise<WriteCounts> {
    // What is installed now (both tables in one read), read while the rules are rendered.
    const saving = ipt.save();
    saving.catch(() => undefined); // awaited below; not an unhandled rejection if rendering throws first

    const ports = sortedPorts(state);
    // With room in front for the chain declarations and the filter table (see write()).
    const nat = new TextBuffer(estimateNatBytes(ports), FILTER_HEADROOM + declarationBytes(ports));
    const next = new Map<string, Installed>();
    for (const line of this.fullNatRules(ports, ctx, next)) nat.line(line);

    // Chains of ours that exist but are not wanted (a previous run's, kube-proxy's), and jump repairs.
    const chains = allChains(ctx, next);
    const saveText = await saving;
    const { natPlan, filterPlan } = planRepairs(saveText, ctx, chains);
    if (verify) {
      this.lastDrift = this.driftFrom(saveText, nat, chains, natPlan, filterPlan, filterText(ctx, filterRules(this.installed, next, false)));
      if (this.lastDrift.length === 0) {
        this.installed = next;
        return { bytes: 0, written: 0, natWritten: 0, filterWritten: 0 };
      }
      log.warn({ event: 'iptables-drift', family: this.family, differences: this.lastDrift }, 'the kernel lost or gained rules of ours; rewriting them');
    }
    // Stale chains are declared (flushed) with the others, and deleted after the jump repairs.
    for (const line of [...natPlan.jumpEdits, ...removalLines(natPlan.remove).remove]) nat.line(line);
    nat.line('COMMIT');
    for (const ch of natPlan.remove) chains.push(ch);
    prependNatDeclarations(nat, chains);
    for (const [table, plan] of [
      ['nat', natPlan],
      ['filter', filterPlan],
    ] as const) {
      if (plan.remove.length > 0) log.info({ event: 'iptables-stale-chains', table, chains: plan.remove.length }, 'removing stale chains');
      if (plan.kept.length > 0)
        log.warn({ event: 'iptables-stale-kept', table, chains: plan.kept }, 'stale chains are still referenced by other chains; left in place');
    }

    const filterRm = removalLines(filterPlan.remove);
    const filterTail = [...filterRm.flush, ...filterPlan.jumpEdits, ...filterRm.remove];
    const union = filterRules(this.installed, next, true);
    const unionBody = filterText(ctx, union);
    const newBody = filterText(ctx, filterRules(this.installed, next, false));
    const { bytes, filterWritten } = await this.write(
      ipt,
      {
        // A full sync always writes filter: whatever is there now may have been changed behind our back.
        filterFirst: filterText(ctx, union, filterTail),
        filterFirstBody: unionBody,
        nat,
        filterLast: newBody !== unionBody ? newBody : null,
        filterBody: newBody,
      },
      next,
    );
    let natWritten = natFixedRules(ctx).length + nodePortJumps(ctx).length;
    for (const inst of next.values()) natWritten += inst.natRules;
    return { bytes, written: next.size, natWritten, filterWritten };
  }

  /**
   * Whether the kernel still holds exactly the chains we wrote, with as many rules each as we wrote, no
   * stale chain of ours and every jump in place. Rule texts are not compared (iptables-save normalises
   * them); a rule changed in place without changing the count goes unnoticed until the next write.
   */
  /** What the last periodic check found (see drift()); null before the first. */
  private lastDrift: string[] | null = null;

  drift(): string[] | null {
    return this.lastDrift;
  }

  /** How what the kernel holds (saveText) differs from what was written: [] when it holds exactly that. */
  private driftFrom(saveText: string, nat: TextBuffer, natChains: readonly string[], natPlan: TablePlan, filterPlan: TablePlan, filterWant: string): string[] {
    const out: string[] = [];
    for (const [table, plan] of [
      ['nat', natPlan],
      ['filter', filterPlan],
    ] as const) {
      for (const ch of plan.remove) out.push(`${table}: chain ${ch} is not ours to keep (stale, or added by hand)`);
      for (const edit of plan.jumpEdits) out.push(`${table}: jump to repair: ${edit}`);
    }
    if (this.filterBody !== filterWant) out.push('filter: the rules to write differ from the ones written');
    const compare = (table: string, want: { declared: Set<string>; rules: Map<string, number> }, chains: Iterable<string>) => {
      const have = countRules(saveText, table);
      for (const ch of chains) {
        if (!have.declared.has(ch)) out.push(`${table}: chain ${ch} is missing`);
        else if ((have.rules.get(ch) ?? 0) !== (want.rules.get(ch) ?? 0))
          out.push(`${table}: chain ${ch} has ${have.rules.get(ch) ?? 0} rules, ${want.rules.get(ch) ?? 0} written`);
      }
    };
    compare('nat', countRules(`*nat\n${nat.toBuffer().toString('latin1')}\nCOMMIT\n`, 'nat'), natChains);
    const filterWantCounts = countRules(filterWant, 'filter');
    compare('filter', filterWantCounts, filterWantCounts.declared);
    return out;
  }

  private async partialSync(ipt: Iptables, state: DesiredState, ctx: RenderContext, keys: string[]): Promise<WriteCounts> {
    const changed = new Map<string, PortChange>();
    for (const key of keys) {
      const sp = state.servicePorts.get(key);
      const r = sp ? this.tryRender(sp, ctx) : null;
      const old = this.installed.get(key);
      if (r || old) changed.set(key, { old, next: r });
    }
    const next = new Map(this.installed);
    for (const [key, c] of changed) {
      if (c.next) next.set(key, toInstalled(c.next));
      else next.delete(key);
    }
    const unionBody = filterText(ctx, filterRules(this.installed, next, true));
    const newBody = filterText(ctx, filterRules(this.installed, next, false));
    const { bytes, filterWritten } = await this.write(
      ipt,
      {
        filterFirst: unionBody !== this.filterBody ? unionBody : null,
        filterFirstBody: unionBody,
        nat: natPatch(changed.values()),
        filterLast: newBody !== unionBody ? newBody : null,
        filterBody: newBody,
      },
      next,
    );
    let natWritten = 0;
    for (const c of changed.values()) if (c.next) natWritten += toInstalled(c.next).natRules;
    return { bytes, written: changed.size, natWritten, filterWritten };
  }

  /**
   * The writes, in the order explained at the top of this file. They go to one iptables-restore
   * whenever they can: it commits each table at its COMMIT, in input order, and stops at the
   * first failure, so one process keeps the same order and saves a process per sync.
   */
  private async write(ipt: Iptables, w: Writes, next: Map<string, Installed>): Promise<{ bytes: number; filterWritten: number }> {
    const previousFilter = this.filterBody;
    const first = w.filterFirst ?? '';
    const last = w.filterLast ?? '';
    let input: string | Buffer;
    if (w.nat instanceof TextBuffer) {
      w.nat.append(last);
      w.nat.prepend(first);
      input = w.nat.toBuffer();
    } else {
      input = first + (w.nat ?? '') + last;
    }
    if (input.length === 0) return { bytes: 0, filterWritten: 0 };

    this.filterBody = null; // unknown until the restore returns
    try {
      await ipt.restore(input);
    } catch (err) {
      const step = failedStep(err, countLines(first));
      if (step === 'filter-last') {
        // nat is new and filter the union, which is consistent with it.
        this.installed = next;
        this.filterBody = w.filterFirstBody;
      } else if (step === 'nat' || step === 'filter-first') {
        // nat is unchanged; filter may hold the union (harmless, but put it back as it was).
        const firstApplied = step === 'nat' && w.filterFirst !== null;
        this.filterBody = firstApplied ? w.filterFirstBody : previousFilter;
        if (firstApplied && w.filterFirst !== null && previousFilter !== null) {
          try {
            await ipt.restore(previousFilter);
            this.filterBody = previousFilter;
          } catch (rollbackErr) {
            log.warn({ event: 'iptables-rollback-failed', err: String(rollbackErr) }, 'could not put the filter table back');
          }
        }
      }
      // 'unknown' (no line named): filter stays unknown, the record stays old; the next sync is full.
      throw err;
    }
    this.installed = next;
    this.filterBody = w.filterBody;
    return { bytes: input.length, filterWritten: countRuleLines(first) + countRuleLines(last) };
  }

  /**
   * The rules of a full nat write, a line or a service port's lines at a time (without `*nat` and the chain
   * declarations, which go in front once every chain is known); `next`, when given, receives what each
   * service port then has installed.
   */
  private *fullNatRules(ports: readonly ServicePort[], ctx: RenderContext, next: Map<string, Installed> | null): Generator<string> {
    yield* natFixedRules(ctx);
    for (const sp of ports) {
      const r = this.tryRender(sp, ctx);
      if (!r) continue;
      const rules = servicePortRules(r);
      if (rules) yield rules;
      next?.set(sp.key, toInstalled(r));
    }
    yield* nodePortJumps(ctx);
  }

  private tryRender(sp: ServicePort, ctx: RenderContext): RenderedServicePort | null {
    try {
      return renderServicePort(sp, ctx);
    } catch (err) {
      if (!(err instanceof InvalidValueError)) throw err;
      log.warn({ event: 'iptables-invalid-service-port', key: sp.key, err: err.message }, 'service port left out');
      return null;
    }
  }

  /** One proxier, one family: a state of the other family is a caller's mistake. */
  private checkFamily(state: DesiredState): void {
    if (state.family !== this.family) throw new Error(`the ${this.family} iptables proxier was handed an ${state.family} state`);
  }

  /** The binaries of this family in the backend in use (detected once, on first use, for 'auto'). */
  private iptables(): Promise<Iptables> {
    this.tool ??= resolveBackend(this.opts.iptablesBackend, { netns: this.opts.netns }).then(
      (backend) =>
        new Iptables({
          backend,
          family: this.family,
          netns: this.opts.netns,
          binaries: this.opts.binaries,
          onRestore: this.opts.onRestore,
          restoreTimeoutMs: this.opts.restoreTimeoutMs,
        }),
    );
    // A failed detection is tried again at the next sync.
    this.tool.catch(() => {
      this.tool = null;
    });
    return this.tool;
  }

  /** Upstream's NewProxier: route_localnet=1 so that 127.0.0.1:<NodePort>, DNATed, may leave the node. */
  private async setRouteLocalnet(): Promise<void> {
    log.info(
      { event: 'route-localnet', family: this.family },
      `setting ${ROUTE_LOCALNET}=1 to allow NodePorts on localhost; to change this set iptables.localhostNodePorts false or leave loopback out of nodePortAddresses`,
    );
    await ensureSysctl(ROUTE_LOCALNET, '1', this.opts.netns);
    this.routeLocalnetSet = true;
  }

  /** Runs fn after every earlier call has finished: syncs and cleanups never overlap. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }
}
