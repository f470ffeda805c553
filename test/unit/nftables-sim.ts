// A small interpreter of the nft JSON the nftables mode generates, for unit tests: it follows the first
// packet of a connection through the nat chains (and the filter chains) of a full batch, with its real
// rules and elements, so that tests check behaviour (which endpoint, masquerade or not, drop, reject)
// rather than the shape of the text. It understands exactly the expressions layout.ts uses.
import { cidrContains } from '../../src/model/addr.ts';
import { commands } from './nftables-fixtures.ts';

export interface Packet {
  saddr: string;
  daddr: string;
  proto: 'tcp' | 'udp' | 'sctp';
  dport: number;
  /** fib daddr type local: the destination is one of the node's addresses. */
  daddrLocal?: boolean;
  /** fib saddr type local: the packet comes from the node itself. */
  saddrLocal?: boolean;
  /** ct state (filter chains). */
  ctState?: 'new' | 'established' | 'invalid';
}

export type Outcome =
  | { verdict: 'dnat'; addr: string; port: number; masquerade: boolean }
  | { verdict: 'accept'; masquerade: boolean }
  | { verdict: 'drop' }
  | { verdict: 'reject' };

/** The filter base chains, by hook (`output-post-dnat`: the output chain after nat's DNAT). */
export type FilterHook = 'input' | 'forward' | 'output' | 'output-post-dnat';

type Value = string | number;
type Elem = { key: unknown[]; value: unknown };

interface Rule {
  expr: Record<string, unknown>[];
}

class Fail extends Error {}
class Verdict extends Error {
  readonly kind: 'drop' | 'accept' | 'reject' | 'return' | 'dnat';
  readonly dnat: { addr: string; port: number } | undefined;
  constructor(kind: Verdict['kind'], dnat?: { addr: string; port: number }) {
    super(kind);
    this.kind = kind;
    this.dnat = dnat;
  }
}

/** Whether `ip` lies in an nft prefix (either family; false across families). */
function inPrefix(ip: string, p: { addr: string; len: number }): boolean {
  return cidrContains(`${p.addr}/${p.len}`, ip);
}

export class Table {
  readonly chains = new Map<string, Rule[]>();
  readonly sets = new Map<string, Elem[]>();
  /** Dynamic sets written from the packet path (affinity): set -> keys. */
  readonly dynamic = new Map<string, Set<string>>();

  constructor(batch?: string) {
    if (batch) this.apply(batch);
  }

  /** Applies a batch the way the kernel would (the commands the planner emits). */
  apply(batch: string): void {
    for (const [verb, kind, body] of commands(batch)) {
      const name = body.name as string;
      if (kind === 'table') {
        if (verb === 'delete') {
          this.chains.clear();
          this.sets.clear();
          this.dynamic.clear();
        }
      } else if (kind === 'chain') {
        if (verb === 'add' && !this.chains.has(name)) this.chains.set(name, []);
        if (verb === 'flush') this.chains.set(name, []);
        if (verb === 'delete') this.chains.delete(name);
      } else if (kind === 'set' || kind === 'map') {
        if (!this.sets.has(name)) this.sets.set(name, []);
      } else if (kind === 'rule') {
        this.chains.get(body.chain as string)!.push({ expr: body.expr as Record<string, unknown>[] });
      } else if (kind === 'element') {
        const list = this.sets.get(name)!;
        for (const e of body.elem as unknown[]) {
          const [k, v] = verb === 'add' && Array.isArray(e) ? e : [e, null];
          const val = (k as { elem?: { val: unknown } }).elem ? (k as { elem: { val: unknown } }).elem.val : k;
          const key = typeof val === 'object' && val !== null && 'concat' in val ? (val as { concat: unknown[] }).concat : [val];
          const i = list.findIndex((x) => JSON.stringify(x.key) === JSON.stringify(key));
          if (verb === 'delete') {
            if (i < 0) throw new Error(`delete of a missing element ${JSON.stringify(key)} from ${name}`);
            list.splice(i, 1);
          } else {
            if (i >= 0) throw new Error(`add of an existing element ${JSON.stringify(key)} to ${name}`);
            list.push({ key, value: v });
          }
        }
      }
    }
  }

  private lookup(set: string, key: Value[]): Elem | undefined {
    if (this.dynamic.get(set)?.has(JSON.stringify(key))) return { key, value: null };
    return this.sets
      .get(set)
      ?.find(
        (e) =>
          e.key.length === key.length &&
          e.key.every((k, i) =>
            typeof k === 'object' && k && 'prefix' in k ? inPrefix(String(key[i]), (k as { prefix: { addr: string; len: number } }).prefix) : k === key[i],
          ),
      );
  }

  /** Follows `p` through nat prerouting (or output, with saddrLocal) and returns what happens; `random(mod)` gives numgen's values. */
  nat(p: Packet, random: (mod: number) => number = () => 0): Outcome {
    const st = { priority: 0, mark: 0 };
    const base = p.saddrLocal ? 'nat-output' : 'nat-prerouting';
    try {
      this.run(base, p, st, random);
      return { verdict: 'accept', masquerade: this.masquerades(p, st, null) };
    } catch (e) {
      if (!(e instanceof Verdict)) throw e;
      if (e.kind === 'dnat') return { verdict: 'dnat', ...e.dnat!, masquerade: this.masquerades(p, st, e.dnat!.addr) };
      if (e.kind === 'drop') return { verdict: 'drop' };
      if (e.kind === 'reject') return { verdict: 'reject' };
      return { verdict: 'accept', masquerade: this.masquerades(p, st, null) };
    }
  }

  /**
   * The filter chain of a hook for `p`: `output` before DNAT, `output-post-dnat` after it; `input` and `forward`
   * after prerouting's DNAT (pass the translated packet).
   */
  filter(hook: FilterHook, p: Packet): 'accept' | 'drop' | 'reject' {
    try {
      this.run(`filter-${hook}`, { ctState: 'new', ...p }, { priority: 0, mark: 0 }, () => 0);
      return 'accept';
    } catch (e) {
      if (!(e instanceof Verdict)) throw e;
      return e.kind === 'drop' ? 'drop' : e.kind === 'reject' ? 'reject' : 'accept';
    }
  }

  /**
   * The first packet of a connection through every hook it meets, in the kernel's order: from the node itself
   * filter output, nat output, filter output-post-dnat (then filter input when it stays on the node); from
   * elsewhere nat prerouting, then filter input (for the node) or forward. Masquerade (nat postrouting) comes
   * with the DNAT outcome; traffic delivered to the node itself is never masqueraded.
   */
  connect(p: Packet, random: (mod: number) => number = () => 0): Outcome {
    const filter = (hook: FilterHook, q: Packet): Outcome | null => {
      if (!this.chains.has(`filter-${hook}`)) return null;
      const v = this.filter(hook, q);
      return v === 'accept' ? null : { verdict: v };
    };
    const fromNode = p.saddrLocal ?? false;
    if (fromNode) {
      const stop = filter('output', p);
      if (stop) return stop;
    }
    const nat = this.nat(p, random);
    if (nat.verdict === 'drop' || nat.verdict === 'reject') return nat;
    const q: Packet = nat.verdict === 'dnat' ? { ...p, daddr: nat.addr, dport: nat.port, daddrLocal: false } : p;
    const hooks: FilterHook[] = fromNode ? ['output-post-dnat', ...(q.daddrLocal ? ['input' as const] : [])] : [q.daddrLocal ? 'input' : 'forward'];
    for (const hook of hooks) {
      const stop = filter(hook, q);
      if (stop) return stop;
    }
    return nat.verdict === 'accept' && q.daddrLocal ? { verdict: 'accept', masquerade: false } : nat;
  }

  private masquerades(p: Packet, st: { priority: number; mark: number }, dnatTo: string | null): boolean {
    const q: Packet = { ...p, ...(dnatTo ? { daddr: dnatTo } : {}) };
    const s = { ...st };
    try {
      this.run('nat-postrouting', q, s, () => 0, dnatTo !== null);
    } catch (e) {
      if (!(e instanceof Verdict)) throw e;
      return e.kind === 'accept';
    }
    return false;
  }

  private run(chain: string, p: Packet, st: { priority: number; mark: number }, random: (mod: number) => number, dnatted = false): void {
    const rules = this.chains.get(chain);
    if (!rules) throw new Error(`no chain ${chain}`);
    for (const r of rules) {
      try {
        for (const stmt of r.expr) this.stmt(stmt, p, st, random, dnatted);
      } catch (e) {
        if (e instanceof Fail) continue;
        if (e instanceof Verdict && e.kind === 'return') return;
        throw e;
      }
    }
  }

  private value(x: unknown, p: Packet, st: { priority: number; mark: number }, random: (mod: number) => number): Value | Value[] {
    if (typeof x === 'string' || typeof x === 'number') return x;
    const o = x as Record<string, any>;
    if (o.payload) {
      const f = o.payload.field;
      return f === 'saddr' ? p.saddr : f === 'daddr' ? p.daddr : p.dport;
    }
    if (o.meta) return o.meta.key === 'l4proto' ? p.proto : o.meta.key === 'priority' ? st.priority : st.mark;
    if (o.concat) return (o.concat as unknown[]).map((c) => this.value(c, p, st, random) as Value);
    if (o.fib) return (o.fib.flags[0] === 'daddr' ? p.daddrLocal : p.saddrLocal) ? 'local' : 'unicast';
    if (o.ct) return o.ct.key === 'state' ? (p.ctState ?? 'new') : 'none';
    if (o.numgen) return random(o.numgen.mod) + o.numgen.offset;
    if (o.map) {
      const k = this.value(o.map.key, p, st, random);
      const e = this.lookup(String(o.map.data).slice(1), Array.isArray(k) ? k : [k]);
      if (!e) throw new Fail();
      return e.value as Value;
    }
    for (const op of ['|', '&', '^'] as const) {
      if (o[op]) {
        const [a, b] = (o[op] as unknown[]).map((v) => Number(this.value(v, p, st, random)));
        return (op === '|' ? a! | b! : op === '&' ? a! & b! : a! ^ b!) >>> 0;
      }
    }
    throw new Error(`unsupported expression ${JSON.stringify(x)}`);
  }

  private stmt(s: Record<string, any>, p: Packet, st: { priority: number; mark: number }, random: (mod: number) => number, dnatted: boolean): void {
    if (s.match) {
      const { op, left, right } = s.match;
      const l = this.value(left, p, st, random);
      let hit: boolean;
      if (typeof right === 'string' && right.startsWith('@')) hit = this.lookup(right.slice(1), Array.isArray(l) ? l : [l]) !== undefined;
      else if (right?.set) hit = (right.set as Value[]).includes(l as Value);
      else if (right?.prefix) hit = inPrefix(String(l), right.prefix);
      else if (left?.ct?.key === 'status') hit = dnatted && right === 'dnat';
      else hit = l === right;
      if ((op === '!=') === hit) throw new Fail();
      return;
    }
    if (s.mangle) {
      const v = Number(this.value(s.mangle.value, p, st, random));
      if (s.mangle.key.meta.key === 'priority') st.priority = v >>> 0;
      else st.mark = v >>> 0;
      return;
    }
    if (s.vmap) {
      const k = this.value(s.vmap.key, p, st, random);
      const e = this.lookup(String(s.vmap.data).slice(1), Array.isArray(k) ? k : [k]);
      if (!e) throw new Fail();
      this.stmt(e.value as Record<string, any>, p, st, random, dnatted);
      return;
    }
    if (s.jump) {
      this.run(s.jump.target, p, st, random, dnatted);
      return;
    }
    if (s.goto) {
      this.run(s.goto.target, p, st, random, dnatted);
      throw new Verdict('return');
    }
    if ('drop' in s) throw new Verdict('drop');
    if ('accept' in s) throw new Verdict('accept');
    if ('return' in s) throw new Verdict('return');
    if (s.reject) throw new Verdict('reject');
    if (s.masquerade) throw new Verdict('accept');
    if (s.dnat) {
      const addr = this.value(s.dnat.addr, p, st, random) as string;
      const port = this.value(s.dnat.port, p, st, random) as number;
      throw new Verdict('dnat', { addr, port });
    }
    if (s.set) {
      const elem = s.set.elem.elem ? s.set.elem.elem.val : s.set.elem;
      const k = JSON.stringify(this.value(elem, p, st, random));
      const name = String(s.set.set).slice(1);
      const d = this.dynamic.get(name) ?? new Set<string>();
      this.dynamic.set(name, d);
      if (s.set.op === 'delete') d.delete(k);
      else d.add(k);
      return;
    }
    throw new Error(`unsupported statement ${JSON.stringify(s)}`);
  }
}
