// Turns desired states into nft JSON batches and keeps the record of what is installed.
//
// full(): the whole table, replaced atomically (add table, delete table, add table, then everything).
// fullInSteps(): the same plan, with the same table in steps a node without it can apply as they are planned
// (FullStep: the empty table, parts of its elements, the hooks).
// update(): for the service ports that changed, the element differences, plus the few chains whose
// rules changed (a new distinct endpoint count or affinity timeout appears or disappears): those are
// flushed and refilled, new ones created, unused ones deleted, all in one batch.
//
// The planner updates its record while planning. If applying the batch fails, the caller must throw
// the planner away (the kernel still holds the previous table) and start over with full().
import { familyAddress, InvalidValueError } from '../../model/addr.ts';
import { nodePortCIDRsOf } from '../../model/config.ts';
import { localDetector } from '../../model/local-detect.ts';
import { type DesiredState, type IPFamily, masqueradeMark, type ProxyConfig } from '../../model/types.ts';
import {
  type CheckedPort,
  checkPort,
  configElems,
  type ElemList,
  type Frontend,
  familyCIDRs,
  frontendId,
  type PortRenderContext,
  renderPort,
  SHARED_SETS,
  sharedKeyJSON,
} from './elements.ts';
import { Batch } from './json.ts';
import {
  type ChainSpec,
  COUNT_GROUPS,
  chainSpecs,
  emptyNeeds,
  FAMILIES,
  type Family,
  KEY_KINDS,
  type LayoutConfig,
  type Needs,
  type SetSchema,
  setSchemas,
} from './layout.ts';
import { countsPseudoSet, isPseudoSet, timeoutsPseudoSet } from './names.ts';
import { decodeElems, encodeElems } from './record.ts';
import { SlotAllocator } from './slots.ts';
import { RefCounts } from './store.ts';

export interface PlannerOptions {
  family: IPFamily;
  config: ProxyConfig;
  /** Clock for holding freed affinity slots (tests). */
  now?: () => number;
}

export interface Plan {
  /**
   * The nft JSON batch, or null when the kernel already matches. Its text is made piece by piece as it is
   * written (Batch.chunks): a full table's is ~10 MB at 10,000 services.
   */
  batch: Batch | null;
  /** The batch as one text, joined each time it is read (tests, diagnostics), or null. */
  readonly json: string | null;
  full: boolean;
  /** Service ports whose elements were (re)written. */
  written: number;
  elementsAdded: number;
  elementsDeleted: number;
  /** Chains created, refilled or deleted. */
  chainsWritten: number;
  /** Service ports left out (a value failed the one rule of model/addr.ts) and warnings, per service port. */
  issues: PortIssue[];
}

/**
 * A first sync's table in steps, for a node that does not have it yet (Planner.fullInSteps), each step a transaction
 * applied after the one before it or side by side with the other element parts:
 * - `head`: the table, its sets (empty) and its regular chains with the rules an empty cluster gives them;
 * - `elements` parts, as the service ports are planned: each adds the elements of the ports planned since the part
 *   before it, the shared elements that appeared with them, and every chain that differs from the head's at that
 *   point (the count rules of the selection chains, the affinity chains its elements jump to), flushed and filled
 *   again: parts that run side by side each find what they refer to, whichever commits first;
 * - the last, `hooks` (FullPlan): the chains that differ from the head's, as the whole table has them, then the base
 *   chains. Only a base chain is hooked to the kernel, so nothing of the table sees a packet before this step: it
 *   becomes live at once and whole, as with the one batch.
 * nft spends most of a large batch in its own process (parsing and checking the JSON): at 10,000 x 10 one transaction
 * takes about 1.1 s. Parts that start while the rest is being planned use the second core during the plan.
 */
export type FullStep =
  | {
      kind: 'head' | 'elements';
      batch: Batch;
      /** Elements planned so far (the table's, at the last part). */
      elements: number;
    }
  /** One more service port claimed and rendered: where the caller can let other work through (the nft runs' I/O). */
  | { kind: 'progress' };

const PROGRESS: FullStep = { kind: 'progress' };

/** A full plan: its one batch (for a node with the table, or when steps fail) and the last of its steps. */
export type FullPlan = Plan & { batch: Batch; hooks: Batch };

export interface PortIssue {
  key: string;
  message: string;
  /** True: the service port is not in the table at all; false: a warning (e.g. endpoints beyond MAX_ENDPOINTS). */
  leftOut: boolean;
}

interface PortRecord {
  /** Its elements and shared elements as installed, in one string (record.ts): decoded only when the port changes. */
  elems: string;
  frontends: string[];
  slotSets: readonly string[];
}

/** A port's elements, as rendered or decoded from its record. */
interface PortElems {
  elems: ElemList;
  shared: ElemList;
}

/** The slot sets of most service ports (no affinity): one array, not one per record. */
const NO_SLOT_SETS: readonly string[] = [];

/**
 * Elements per set, in the order they were added: key and value texts side by side (value null for a key
 * alone), made into one element's JSON only when the batch is written (elemJSON): a full table's elements
 * are a couple of hundred thousand, and their keys and values are the port records' own strings.
 */
class PerSet {
  readonly map = new Map<string, (string | null)[]>();
  push(set: string, key: string, value: string | null = null): void {
    const a = this.map.get(set);
    if (a) a.push(key, value);
    else this.map.set(set, [key, value]);
  }
  get count(): number {
    let n = 0;
    for (const a of this.map.values()) n += a.length / 2;
    return n;
  }
}

const SHARED = new Set(SHARED_SETS);
const isShared = (set: string) => SHARED.has(set) || isPseudoSet(set);

const recordedElems = (rec: PortRecord): PortElems => decodeElems(rec.elems);

/** Receives the old (a function: decoding is only done when needed) and new elements of one re-rendered service port. */
type DiffSink = (old: () => PortElems, next: PortElems) => void;

const NONE: PortElems = { elems: [], shared: [] };

/**
 * Elements per group of a full batch's element commands (see elementGroups; a group closes after the port
 * record that reaches it). A group's decoded elements are alive while its text is made and written; a group
 * large enough to live through two scavenges is promoted to the old space and stays there until a major
 * collection: with groups of 200 service ports, writing the first sync's batch grew the old space by 21 MB at
 * 10,000 x 10 (3,200 elements a group) and 44 MB at 5,000 x 50 (11,000), the largest part of the sync's peak.
 * With 1,000 elements a group it grows by 1 to 4 MB, for a batch 0.5% longer (more, smaller commands).
 */
const ELEMENTS_PER_GROUP = 1000;

/**
 * The elements of a full batch, made when it is written (Batch.elementGroups), in groups of ELEMENTS_PER_GROUP
 * or a little more, per set in the order of `sets`: those of the port records, decoded from them, then the
 * shared ones (the planner's reference-counted keys as the plan found them, turned into element keys here).
 * Held as key and value texts from the plan until the batch is written, a table's elements were the largest
 * part of the first sync's memory (25 MB of heap at 10,000 x 10, beyond the record; the shared keys' texts
 * 3 MB more).
 */
function* elementGroups(
  records: readonly string[],
  shared: readonly (readonly [set: string, keys: readonly string[]])[],
  sets: readonly string[],
): Generator<Map<string, (string | null)[]>> {
  const newGroup = () => new Map(sets.map((s) => [s, [] as (string | null)[]]));
  let group = newGroup();
  let count = 0;
  for (const record of records) {
    const { elems } = decodeElems(record);
    for (let j = 0; j < elems.length; j += 3) group.get(elems[j]!)!.push(elems[j + 1]!, elems[j + 2]!);
    count += elems.length / 3;
    if (count >= ELEMENTS_PER_GROUP) {
      yield group;
      group = newGroup();
      count = 0;
    }
  }
  for (const [set, keys] of shared) {
    for (const k of keys) {
      group.get(set)!.push(sharedKeyJSON(set, k), null);
      if (++count >= ELEMENTS_PER_GROUP) {
        yield group;
        group = newGroup();
        count = 0;
      }
    }
  }
  yield group;
}

/**
 * `check` with its last answer kept: a port is checked when it is claimed and again when it is rendered, one right
 * after the other in a full plan. Only the last is kept (see Planner.checker: a whole table's checked ports, kept,
 * were promoted to the old space).
 */
function lastOneKept(check: (k: string) => CheckedPort | null): (k: string) => CheckedPort | null {
  let lastKey: string | null = null;
  let last: CheckedPort | null = null;
  return (k) => {
    if (k !== lastKey) {
      last = check(k);
      lastKey = k;
    }
    return last;
  };
}

/** A plan with its `json`: the batch's text, joined only when it is read (never kept). */
function withText<P extends Omit<Plan, 'json'>>(plan: P): P & Plan {
  return Object.defineProperty(plan as P & Plan, 'json', { get: () => plan.batch?.text() ?? null, enumerable: true });
}

export class Planner {
  readonly family: Family;
  readonly layout: LayoutConfig;
  readonly schemas: ReadonlyMap<string, SetSchema>;
  /** Problems with the configuration itself (unparsable CIDRs). */
  readonly configProblems: string[] = [];
  /** Shared and pseudo elements; every other element is in exactly one port record. */
  private readonly refs = new RefCounts();
  private readonly ports = new Map<string, PortRecord>();
  /**
   * frontend id -> service ports claiming it, sorted; the first owns it. Who owns a frontend is decided by
   * the model (model/frontends.ts: one owner per address, port and protocol), so a list has one entry except
   * within a batch that moves a frontend between service ports: this record orders those element moves.
   */
  private readonly claims = new Map<string, string[]>();
  private readonly slots: SlotAllocator;
  /** This node's addresses of the family, as the installed elements were rendered with (see allowedSources). */
  private nodeIPs: string[] = [];
  /** Installed chains: name -> spec and its rules as text (null before full()). */
  private chains: Map<string, { spec: ChainSpec; text: string }> | null = null;

  constructor(opts: PlannerOptions) {
    this.family = FAMILIES[opts.family];
    const local = localDetector(opts.config, opts.family);
    if (local.kind === 'none' && !opts.config.masqueradeAll) this.configProblems.push(local.reason);
    this.layout = {
      family: this.family,
      clusterCIDRs: local.kind === 'cidr' ? familyCIDRs(local.cidrs, this.family, this.configProblems) : [],
      localInterface: local.kind === 'interface' ? local.name : local.kind === 'prefix' ? `${local.prefix}*` : null,
      masqMark: masqueradeMark(opts.config),
      masqueradeAll: opts.config.masqueradeAll,
      // An empty list means every local address (model/config.ts decides when that is).
      nodePortAddresses: familyCIDRs(nodePortCIDRsOf(opts.config, opts.family) ?? [], this.family, this.configProblems),
    };
    this.schemas = new Map(setSchemas().map((s) => [s.name, s]));
    this.slots = new SlotAllocator(opts.now);
  }

  /** The batch that replaces the table with one for `state` (fullInSteps, its steps left unused). Only valid on a fresh planner. */
  full(state: DesiredState): FullPlan {
    const steps = this.fullInSteps(state);
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
    }
  }

  /**
   * The table for `state` in steps (FullStep): yields the head before any service port is planned, then a part of
   * elements each time the ports planned since the last part reach `partElements` elements, and the rest at the
   * end; returns the plan, with its one batch (what full() gives) and the last step, `hooks`. The caller can apply
   * each step as it comes, while the next is planned. Only valid on a fresh planner.
   */
  *fullInSteps(state: DesiredState, partElements = Infinity): Generator<FullStep, FullPlan> {
    if (this.chains !== null) throw new Error('full() on a planner that already has a record');
    this.checkFamily(state);
    this.refs.begin(false);
    this.nodeIPs = this.nodeIPsOf(state);
    const sets = [...this.schemas.keys()];
    const rulesText = (c: ChainSpec) => JSON.stringify(c.rules);
    // The regular chains as an empty cluster has them: what the head installs, and what later steps compare with.
    const empty = chainSpecs(this.layout, emptyNeeds()).filter((c) => !c.base);
    const headChains = new Map(empty.map((c) => [c.name, rulesText(c)]));
    /** The regular chains that differ from the head's with the needs planned so far, as `add`, `flush` and their rules. */
    const refill = (b: Batch, chains: readonly ChainSpec[]) => {
      for (const c of chains) {
        if (c.base || headChains.get(c.name) === rulesText(c)) continue;
        b.chain('add', c);
        b.chain('flush', c);
        for (const r of c.rules) b.rule(c.name, r);
      }
    };
    yield { kind: 'head', batch: this.tableBatch(empty), elements: 0 };

    let added = 0;
    // The next part: the records of the ports planned since the last one, the shared keys that appeared with them.
    let records: string[] = [];
    let shared = new Map<string, string[]>();
    let inPart = 0;
    const addShared = (set: string, key: string) => {
      if (!this.refs.add(set, key) || !SHARED.has(set)) return;
      const keys = shared.get(set);
      if (keys) keys.push(key);
      else shared.set(set, [key]);
      inPart++;
      added++;
    };
    const part = (): FullStep => {
      const b = new Batch(this.family, this.schemas);
      refill(b, chainSpecs(this.layout, this.needs()));
      const partRecords = records;
      const partShared = [...shared];
      b.elementGroups('add', () => elementGroups(partRecords, partShared, sets));
      records = [];
      shared = new Map();
      inPart = 0;
      return { kind: 'elements', batch: b, elements: added };
    };
    const config = configElems(this.layout.clusterCIDRs, this.layout.nodePortAddresses);
    for (let i = 0; i < config.length; i += 3) addShared(config[i]!, config[i + 1]!);
    const issues: PortIssue[] = [];
    const check = lastOneKept(this.checker(state, issues));
    const ctx = this.renderContext();
    let written = 0;
    // Each service port is claimed and rendered in one pass, in key order: a frontend belongs to the first of its
    // claimants in that order (claim()), so a port claimed later never takes a frontend from one already rendered,
    // whose elements may already be in the kernel (a part). The first part comes after the first ports, not after
    // every port's claims (about 0.1 s at 10,000 services), and each port is checked once.
    for (const k of [...state.servicePorts.keys()].sort()) {
      for (const r of this.claimPorts([k], check)) {
        if (r !== k) throw new Error(`planner: ${k} took a frontend of ${r}, rendered before it`);
      }
      const changed = this.renderPort(k, check, ctx, (_old, next) => {
        inPart += next.elems.length / 3;
        added += next.elems.length / 3;
        const sh = next.shared;
        for (let i = 0; i < sh.length; i += 3) addShared(sh[i]!, sh[i + 1]!);
      });
      yield PROGRESS;
      if (!changed) continue;
      written++;
      records.push(this.ports.get(k)!.elems);
      if (inPart >= partElements) yield part();
    }
    if (inPart > 0) yield part();

    // The ports' elements are written from their records (immutable strings: later updates replace them).
    const allRecords = [...this.ports.values()].map((r) => r.elems).filter((e) => e.length > 0);
    const allShared = SHARED_SETS.map((set) => [set, this.refs.keys(set)] as const);
    const chains = chainSpecs(this.layout, this.needs());
    const b = this.tableBatch(chains, () => elementGroups(allRecords, allShared, sets));
    const hooks = new Batch(this.family, this.schemas);
    refill(hooks, chains);
    for (const c of chains) if (c.base) hooks.chain('add', c);
    for (const c of chains) if (c.base) for (const r of c.rules) hooks.rule(c.name, r);
    this.chains = new Map(chains.map((c) => [c.name, { spec: c, text: rulesText(c) }]));
    return withText({ batch: b, hooks, full: true, written, elementsAdded: added, elementsDeleted: 0, chainsWritten: chains.length, issues });
  }

  /**
   * A batch that replaces the table, whether or not it exists, in one transaction (add, delete, add), with `chains`,
   * the sets, the elements `groups` makes when given (Batch.elementGroups), and the chains' rules.
   */
  private tableBatch(chains: readonly ChainSpec[], groups?: Parameters<Batch['elementGroups']>[1]): Batch {
    const b = new Batch(this.family, this.schemas);
    b.table('add');
    b.table('delete');
    b.table('add');
    for (const c of chains) b.chain('add', c);
    for (const s of this.schemas.values()) b.set(s);
    if (groups) b.elementGroups('add', groups);
    for (const c of chains) for (const r of c.rules) b.rule(c.name, r);
    return b;
  }

  /** The batch for the service ports `keys` (added, changed or removed) of `state`. */
  update(state: DesiredState, keys: Iterable<string>): Plan {
    if (this.chains === null) throw new Error('update() before full()');
    this.checkFamily(state);
    this.refs.begin(true);
    // The node's addresses are an input of the elements: when they change, every service port is rendered again.
    const nodeIPs = this.nodeIPsOf(state);
    if (nodeIPs.join() !== this.nodeIPs.join()) {
      this.nodeIPs = nodeIPs;
      keys = new Set([...keys, ...state.servicePorts.keys(), ...this.ports.keys()]);
    }
    const dels = new PerSet();
    const adds = new PerSet();
    const { written, issues } = this.reconcile(state, keys, (old, next) => this.diff(old(), next, dels, adds));
    for (const c of this.refs.changes()) {
      if (isPseudoSet(c.set)) continue;
      for (const k of c.deletes) dels.push(c.set, sharedKeyJSON(c.set, k));
      for (const k of c.adds) adds.push(c.set, sharedKeyJSON(c.set, k));
    }
    const chains = chainSpecs(this.layout, this.needs());
    const wanted = new Map(chains.map((c) => [c.name, { spec: c, text: JSON.stringify(c.rules) }]));
    const created = chains.filter((c) => !this.chains!.has(c.name));
    const refilled = chains.filter((c) => this.chains!.has(c.name) && this.chains!.get(c.name)!.text !== wanted.get(c.name)!.text);
    const removed = [...this.chains.values()].filter((c) => !wanted.has(c.spec.name)).map((c) => c.spec);
    this.chains = wanted;

    const b = new Batch(this.family, this.schemas);
    // New chains first (new vmap elements may jump to them); deletions before additions (a key that
    // moves from one service port to another, or changes its value, is deleted and added again).
    for (const c of created) b.chain('add', c);
    for (const [set, list] of dels.map) b.elements('delete', set, list);
    for (const [set, list] of adds.map) b.elements('add', set, list);
    for (const c of refilled) {
      b.chain('flush', c);
      for (const r of c.rules) b.rule(c.name, r);
    }
    for (const c of created) for (const r of c.rules) b.rule(c.name, r);
    for (const c of removed) b.chain('flush', c);
    for (const c of removed) b.chain('delete', c);
    const chainsWritten = created.length + refilled.length + removed.length;
    return withText({
      batch: b.size === 0 ? null : b,
      full: false,
      written,
      elementsAdded: adds.count,
      elementsDeleted: dels.count,
      chainsWritten,
      issues,
    });
  }

  /** Element differences of one service port: its own elements directly, shared ones through the reference counts. */
  private diff(oldRec: PortElems, nextRec: PortElems, dels: PerSet, adds: PerSet): void {
    for (let i = 0; i < oldRec.shared.length; i += 3) this.refs.remove(oldRec.shared[i]!, oldRec.shared[i + 1]!);
    for (let i = 0; i < nextRec.shared.length; i += 3) this.refs.add(nextRec.shared[i]!, nextRec.shared[i + 1]!);
    const old = oldRec.elems;
    const next = nextRec.elems;
    const before = new Map<string, string | null>();
    for (let i = 0; i < old.length; i += 3) before.set(`${old[i]}\u0000${old[i + 1]}`, old[i + 2]!);
    for (let i = 0; i < next.length; i += 3) {
      const set = next[i]!;
      const key = next[i + 1]!;
      const value = next[i + 2]!;
      const id = `${set}\u0000${key}`;
      if (before.has(id)) {
        const was = before.get(id)!;
        before.delete(id);
        if (was === value) continue;
        dels.push(set, key);
      }
      adds.push(set, key, value);
    }
    for (const id of before.keys()) {
      const nul = id.indexOf('\u0000');
      dels.push(id.slice(0, nul), id.slice(nul + 1));
    }
  }

  /** The installed chains and their rule counts (to check the kernel against). */
  expectedChains(): Map<string, number> {
    return new Map([...(this.chains ?? new Map()).values()].map((c) => [c.spec.name, c.spec.rules.length]));
  }

  /** Installed elements of a set as [key, value] JSON texts (tests, diagnostics). */
  elements(set: string): [string, string | null][] {
    if (isPseudoSet(set)) return this.refs.keys(set).map((k) => [k, null]);
    if (isShared(set)) return this.refs.keys(set).map((k) => [sharedKeyJSON(set, k), null]);
    const out: [string, string | null][] = [];
    for (const r of this.ports.values()) {
      const { elems } = recordedElems(r);
      for (let i = 0; i < elems.length; i += 3) if (elems[i] === set) out.push([elems[i + 1]!, elems[i + 2]!]);
    }
    return out;
  }

  elementCount(set: string): number {
    return isShared(set) ? this.refs.count(set) : this.elements(set).length;
  }

  /** Service ports in the record. */
  portKeys(): IterableIterator<string> {
    return this.ports.keys();
  }

  private nodeIPsOf(state: DesiredState): string[] {
    const ips = (state.node?.addresses ?? []).map((a) => familyAddress(a, this.family.name)).filter((a) => a !== null);
    return [...new Set(ips)].sort();
  }

  private checkFamily(state: DesiredState): void {
    if (state.family !== this.family.name) throw new Error(`planner for ${this.family.name} given a ${state.family} state`);
  }

  private needs(): Needs {
    const n = emptyNeeds();
    for (const g of COUNT_GROUPS) n.counts[g] = this.refs.keys(countsPseudoSet(g)).map(Number);
    for (const k of KEY_KINDS) n.timeouts[k] = this.refs.keys(timeoutsPseudoSet(k)).map(Number);
    return n;
  }

  /**
   * Updates frontend claims for `keys`, re-renders those service ports and the ones whose frontends
   * changed owner, and hands every changed element list to `sink`. A service port with a value that fails
   * the one rule (checkPort) is left out, as if it were gone, and reported.
   */
  private reconcile(state: DesiredState, keys: Iterable<string>, sink: DiffSink): { written: number; issues: PortIssue[] } {
    const issues: PortIssue[] = [];
    const check = this.checker(state, issues);
    const ctx = this.renderContext();
    let written = 0;
    for (const k of this.claimPorts(keys, check)) if (this.renderPort(k, check, ctx, sink)) written++;
    return { written, issues };
  }

  /**
   * checkPort for the service ports of `state`, what it finds reported once into `issues`. A port is checked when its
   * claims are updated and again when it is rendered, not kept from one to the other: kept for a whole table
   * (10,000 ports), the checked ports lived through many scavenges and were promoted, about 8 MB of old space at
   * 10,000 x 10 that only a major collection frees, for a check that costs a few tens of ms to repeat.
   */
  private checker(state: DesiredState, issues: PortIssue[]): (k: string) => CheckedPort | null {
    const reported = new Set<string>();
    return (k) => {
      const sp = state.servicePorts.get(k);
      if (!sp) return null;
      const report = !reported.has(k);
      reported.add(k);
      try {
        const c = checkPort(sp, this.family.name);
        if (report) for (const message of c.warnings) issues.push({ key: k, message, leftOut: false });
        return c;
      } catch (e) {
        if (!(e instanceof InvalidValueError)) throw e;
        if (report) issues.push({ key: k, message: e.message, leftOut: true });
        return null;
      }
    };
  }

  /**
   * Updates the frontend claims of `keys`; adds to `render` (returned) the service ports to render: those and the
   * ones whose frontends changed owner.
   */
  private claimPorts(keys: Iterable<string>, check: (k: string) => CheckedPort | null, render = new Set<string>()): Set<string> {
    for (const k of keys) {
      render.add(k);
      const rec = this.ports.get(k);
      const before = rec?.frontends ?? [];
      const c = check(k);
      const after = (c?.frontends ?? []).map(frontendId);
      if (before.length === after.length && before.every((id, i) => id === after[i])) continue;
      const afterSet = new Set(after);
      const beforeSet = new Set(before);
      for (const id of before) if (!afterSet.has(id)) this.unclaim(id, k, render);
      for (const id of after) if (!beforeSet.has(id)) this.claim(id, k, render);
      if (rec) rec.frontends = after;
      else if (c) this.ports.set(k, { elems: '', frontends: after, slotSets: NO_SLOT_SETS });
    }
    return render;
  }

  private renderContext(): PortRenderContext {
    return {
      nodeIPs: this.nodeIPs,
      owns: (spKey: string, f: Frontend) => {
        const c = this.claims.get(frontendId(f));
        return c === undefined || c[0] === spKey;
      },
      slots: (setId: string, ids: readonly string[], holdMs: number) => this.slots.assign(setId, ids, holdMs),
    };
  }

  /** Renders service port `k` into its record; hands its old and new elements to `sink` and returns true when they changed. */
  private renderPort(k: string, check: (k: string) => CheckedPort | null, ctx: PortRenderContext, sink: DiffSink): boolean {
    const c = check(k);
    const old = this.ports.get(k);
    if (!c) {
      if (!old) return false;
      sink(() => recordedElems(old), NONE);
      for (const s of old.slotSets) this.slots.release(s);
      this.ports.delete(k);
      return old.elems.length > 0;
    }
    const r = renderPort(c, ctx);
    const rec = old ?? { elems: '', frontends: c.frontends.map(frontendId), slotSets: NO_SLOT_SETS };
    for (const s of rec.slotSets) if (!r.slotSets.includes(s)) this.slots.release(s);
    // Equal texts are equal element lists (decodeElems gives back what encodeElems was given).
    const elems = encodeElems(r.elems, r.shared);
    const changed = elems !== rec.elems;
    if (changed) sink(() => recordedElems(rec), r);
    rec.elems = elems;
    rec.slotSets = r.slotSets.length === 0 ? NO_SLOT_SETS : r.slotSets;
    this.ports.set(k, rec);
    return changed;
  }

  private claim(id: string, k: string, render: Set<string>): void {
    const list = this.claims.get(id);
    if (!list) {
      this.claims.set(id, [k]);
      return;
    }
    const owner = list[0];
    list.push(k);
    list.sort();
    if (list[0] !== owner && owner !== undefined) render.add(owner);
  }

  private unclaim(id: string, k: string, render: Set<string>): void {
    const list = this.claims.get(id);
    if (!list) return;
    const owner = list[0];
    const i = list.indexOf(k);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.claims.delete(id);
    else if (list[0] !== owner) render.add(list[0]!);
  }
}
