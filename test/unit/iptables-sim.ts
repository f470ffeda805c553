// A small interpreter of the iptables-restore text the iptables mode generates, for unit tests: it loads
// restore input as iptables-restore --noflush would (tables kept between loads, each COMMIT atomic, a jump
// to a chain that does not exist refused), then follows the first packet of a connection through the
// kernel's hooks with the real rules: nat PREROUTING or OUTPUT (DNAT), filter INPUT, FORWARD or OUTPUT,
// nat POSTROUTING (masquerade). It answers with the nftables simulator's Outcome, so that one behaviour
// table (flows.ts) checks both kernel modes.
//
// It understands exactly the matches and targets the iptables mode writes, and refuses anything else at
// load time, so that new output is noticed here rather than silently ignored:
//   matches  -s/-d [!] addr|cidr, -p [!] proto, -m tcp|udp|sctp --dport, -m comment, -m addrtype
//            --src-type/--dst-type LOCAL, -m iprange [!] --dst-range, -m mark [!] --mark v/m, -m conntrack
//            [!] --ctstate, -m statistic --mode random --probability, -m recent --name --set | --rcheck
//            --seconds [--reap]
//   targets  user chains, RETURN, ACCEPT, DROP, REJECT, DNAT --to-destination, MARK --or-mark/--xor-mark/
//            --set-xmark, MASQUERADE [--random-fully]
import { addressBits, cidrContains, parseCIDR, parseHostPort, parseIP } from '../../src/model/addr.ts';
import type { Outcome, Packet } from './nftables-sim.ts';

export type { Outcome, Packet };

/** Decides one `-m statistic --mode random --probability p` match: true when the rule is taken. */
export type Decide = (probability: number) => boolean;

export interface TraceOptions {
  /** Statistic decisions; default: never taken (the last, unconditional rule of a KUBE-SVC chain decides). */
  decide?: Decide;
  /** Keep what `-m recent --set` records (a connection that really happens); default: the trace leaves no trace. */
  record?: boolean;
}

export interface Trace {
  outcome: Outcome;
  /** Every rule that matched, as "table CHAIN spec", in order: what a failing test prints. */
  rules: string[];
}

const BUILTIN_CHAINS: Record<string, readonly string[]> = {
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
};

/** The state of the packet while it crosses the hooks. */
interface PacketState {
  saddr: string;
  daddr: string;
  proto: Packet['proto'];
  dport: number;
  saddrLocal: boolean;
  daddrLocal: boolean;
  mark: number;
  /** The connection was DNATed (conntrack's virtual DNAT state). */
  dnatted: boolean;
}

/** What one trace may read and write besides the packet. */
interface TraceEnv {
  decide: Decide;
  /** The recent lists this trace sees (a copy unless it records). */
  recent: Map<string, Map<string, number>>;
  now: number;
  rules: string[];
}

type Test = (s: PacketState, env: TraceEnv) => boolean;

type Target =
  | { kind: 'jump'; chain: string }
  | { kind: 'return' }
  | { kind: 'accept' | 'drop' | 'reject' | 'masquerade' }
  | { kind: 'dnat'; addr: string; port: number }
  | { kind: 'mark'; and: number; xor: number };

interface Rule {
  /** The spec as written (after -A CHAIN), tokens joined by one space: what -D compares. */
  spec: string;
  tests: Test[];
  target: Target;
}

interface Chain {
  builtin: boolean;
  /** Built-in chains only: what a packet that falls off the end gets. */
  policy: 'ACCEPT' | 'DROP';
  rules: Rule[];
}

type Verdict = { kind: 'accept' | 'drop' | 'reject' | 'masquerade' } | { kind: 'dnat'; addr: string; port: number } | null;

export class Table {
  /** table name -> chain name -> chain. */
  private tables = new Map<string, Map<string, Chain>>();
  /** `-m recent` lists: name -> source address -> time of the last --set (seconds). */
  private recent = new Map<string, Map<string, number>>();
  /** The clock `-m recent --seconds` compares with, in seconds; tests move it. */
  now = 0;

  constructor(...restoreInputs: string[]) {
    for (const text of restoreInputs) this.apply(text);
  }

  /** Loads restore input as `iptables-restore --noflush` does: each table's part is committed whole or not at all. */
  apply(text: string): void {
    let name: string | null = null;
    let work: Map<string, Chain> | null = null;
    text.split('\n').forEach((raw, i) => {
      const line = raw.trim();
      const where = `line ${i + 1} (${JSON.stringify(line.slice(0, 80))})`;
      if (line === '' || line.startsWith('#')) return;
      try {
        if (line.startsWith('*')) {
          if (work) throw new Error(`*${line.slice(1)} before COMMIT of *${name}`);
          name = line.slice(1);
          work = copyTable(this.tables.get(name) ?? builtinTable(name));
          return;
        }
        if (!work || !name) throw new Error('a rule outside a table');
        if (line === 'COMMIT') {
          checkJumps(work);
          this.tables.set(name, work);
          work = null;
          return;
        }
        applyLine(work, line);
      } catch (e) {
        throw new Error(`iptables-restore: ${where}: ${(e as Error).message}`, { cause: e });
      }
    });
    if (work) throw new Error(`iptables-restore: *${name} without COMMIT`);
  }

  /** The rules of a chain as `-A` lines, for failing tests and inspection. */
  chain(table: string, chain: string): string[] | undefined {
    return this.tables
      .get(table)
      ?.get(chain)
      ?.rules.map((r) => `-A ${chain} ${r.spec}`);
  }

  /**
   * Follows the first packet of a new connection through the hooks it crosses: a packet from the node
   * itself (saddrLocal) takes nat OUTPUT, filter OUTPUT, then filter INPUT if it stays on the node; any
   * other takes nat PREROUTING, then filter INPUT (for the node) or FORWARD; whatever leaves the node
   * passes nat POSTROUTING, where the masquerade mark is acted on. (nat before filter in each hook: nat
   * hooks at priority -100, filter at 0.)
   */
  trace(p: Packet, opts: TraceOptions = {}): Trace {
    const env: TraceEnv = {
      decide: opts.decide ?? (() => false),
      recent: opts.record ? this.recent : copyRecent(this.recent),
      now: this.now,
      rules: [],
    };
    const s: PacketState = {
      saddr: p.saddr,
      daddr: p.daddr,
      proto: p.proto,
      dport: p.dport,
      saddrLocal: p.saddrLocal ?? false,
      daddrLocal: p.daddrLocal ?? false,
      mark: 0,
      dnatted: false,
    };
    const fromNode = s.saddrLocal;
    const nat = this.hook('nat', fromNode ? 'OUTPUT' : 'PREROUTING', s, env);
    if (nat?.kind === 'drop' || nat?.kind === 'reject') return { outcome: { verdict: nat.kind }, rules: env.rules };
    let dnat: { addr: string; port: number } | null = null;
    if (nat?.kind === 'dnat') {
      dnat = { addr: nat.addr, port: nat.port };
      // An endpoint is a pod: never one of the node's own addresses.
      Object.assign(s, { daddr: nat.addr, dport: nat.port, daddrLocal: false, dnatted: true });
    }
    const hooks = fromNode ? (s.daddrLocal ? ['OUTPUT', 'INPUT'] : ['OUTPUT']) : s.daddrLocal ? ['INPUT'] : ['FORWARD'];
    for (const hook of hooks) {
      const v = this.hook('filter', hook, s, env);
      if (v?.kind === 'drop' || v?.kind === 'reject') return { outcome: { verdict: v.kind }, rules: env.rules };
    }
    // Delivered to the node itself: it never reaches POSTROUTING.
    const leaves = !s.daddrLocal;
    const masquerade = leaves && this.hook('nat', 'POSTROUTING', s, env)?.kind === 'masquerade';
    const outcome: Outcome = dnat ? { verdict: 'dnat', ...dnat, masquerade } : { verdict: 'accept', masquerade };
    return { outcome, rules: env.rules };
  }

  /** A built-in chain: its rules, then its policy. */
  private hook(table: string, chain: string, s: PacketState, env: TraceEnv): Verdict {
    const c = this.tables.get(table)?.get(chain);
    if (!c) return null;
    const v = this.run(table, chain, s, env);
    if (v) return v;
    return c.policy === 'DROP' ? { kind: 'drop' } : null;
  }

  /** Runs a chain; a final verdict, or null when the packet returns (RETURN or the end of the chain). */
  private run(table: string, chain: string, s: PacketState, env: TraceEnv): Verdict {
    const c = this.tables.get(table)!.get(chain)!;
    for (const rule of c.rules) {
      if (!rule.tests.every((t) => t(s, env))) continue;
      env.rules.push(`${table} ${chain} ${rule.spec}`);
      const t = rule.target;
      switch (t.kind) {
        case 'jump': {
          const v = this.run(table, t.chain, s, env);
          if (v) return v;
          break;
        }
        case 'return':
          return null;
        case 'mark':
          s.mark = ((s.mark & t.and) ^ t.xor) >>> 0;
          break;
        case 'dnat':
          if (table !== 'nat') throw new Error(`DNAT in ${table}`);
          return { kind: 'dnat', addr: t.addr, port: t.port };
        case 'masquerade':
          if (table !== 'nat') throw new Error(`MASQUERADE in ${table}`);
          return { kind: 'masquerade' };
        default:
          return { kind: t.kind };
      }
    }
    return null;
  }
}

function builtinTable(name: string): Map<string, Chain> {
  const builtins = BUILTIN_CHAINS[name];
  if (!builtins) throw new Error(`unknown table ${name}`);
  return new Map(builtins.map((c) => [c, { builtin: true, policy: 'ACCEPT', rules: [] }]));
}

function copyTable(t: Map<string, Chain>): Map<string, Chain> {
  return new Map([...t].map(([n, c]) => [n, { ...c, rules: [...c.rules] }]));
}

function copyRecent(r: Map<string, Map<string, number>>): Map<string, Map<string, number>> {
  return new Map([...r].map(([n, l]) => [n, new Map(l)]));
}

/** One line of a table's part: a chain declaration or an -A/-I/-D/-F/-X/-N command. */
function applyLine(t: Map<string, Chain>, line: string): void {
  if (line.startsWith(':')) {
    const m = /^:(\S+)\s+(\S+)(\s+\[\d+:\d+\])?$/.exec(line);
    if (!m) throw new Error('bad chain declaration');
    const [, name, policy] = m as unknown as [string, string, string];
    const existing = t.get(name);
    if (existing?.builtin) {
      if (policy !== 'ACCEPT' && policy !== 'DROP') throw new Error(`bad policy ${policy}`);
      existing.policy = policy;
    } else {
      if (policy !== '-') throw new Error(`a policy on user chain ${name}`);
      // Under --noflush a declaration creates the chain, or flushes it.
      t.set(name, { builtin: false, policy: 'ACCEPT', rules: [] });
    }
    return;
  }
  const tokens = tokenize(line);
  const [cmd, chainName] = tokens;
  if (!chainName) throw new Error('no chain');
  if (cmd === '-N') {
    if (t.has(chainName)) throw new Error(`chain ${chainName} exists`);
    t.set(chainName, { builtin: false, policy: 'ACCEPT', rules: [] });
    return;
  }
  const chain = t.get(chainName);
  if (!chain) throw new Error(`no chain ${chainName}`);
  switch (cmd) {
    case '-A':
      chain.rules.push(parseRule(tokens.slice(2)));
      return;
    case '-I': {
      const hasIndex = /^\d+$/.test(tokens[2] ?? '');
      const at = hasIndex ? Number(tokens[2]) : 1;
      if (at < 1 || at > chain.rules.length + 1) throw new Error(`index ${at} out of range`);
      chain.rules.splice(at - 1, 0, parseRule(tokens.slice(hasIndex ? 3 : 2)));
      return;
    }
    case '-D': {
      const spec = parseRule(tokens.slice(2)).spec;
      const i = chain.rules.findIndex((r) => r.spec === spec);
      if (i < 0) throw new Error(`no rule "${spec}" in ${chainName}`);
      chain.rules.splice(i, 1);
      return;
    }
    case '-F':
      chain.rules = [];
      return;
    case '-X':
      if (chain.builtin) throw new Error(`cannot delete built-in chain ${chainName}`);
      if (chain.rules.length > 0) throw new Error(`chain ${chainName} is not empty`);
      for (const [n, c] of t) {
        if (c.rules.some((r) => r.target.kind === 'jump' && r.target.chain === chainName)) throw new Error(`chain ${chainName} is used by ${n}`);
      }
      t.delete(chainName);
      return;
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

/** iptables-restore refuses a table whose rules jump to a chain that does not exist. */
function checkJumps(t: Map<string, Chain>): void {
  for (const [name, c] of t) {
    for (const r of c.rules) {
      if (r.target.kind === 'jump' && !t.has(r.target.chain)) throw new Error(`${name}: jump to missing chain ${r.target.chain}`);
    }
  }
}

/** Splits a line as iptables-restore does: on blanks, a double-quoted string being one token (without its quotes). */
function tokenize(line: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) {
    if (m[2]?.includes('"')) throw new Error(`stray quote in ${m[2]}`);
    out.push(m[1] ?? m[2]!);
  }
  return out;
}

/** A rule spec's tokens into tests and a target. Any option the iptables mode does not write is an error. */
function parseRule(tokens: string[]): Rule {
  const j = tokens.indexOf('-j');
  if (j < 0) throw new Error('a rule without -j');
  return {
    spec: tokens.map((t) => (/\s/.test(t) || t === '' ? `"${t}"` : t)).join(' '),
    tests: parseMatches(tokens.slice(0, j)),
    target: parseTarget(tokens.slice(j + 1)),
  };
}

/** `-j NAME [options]`: a built-in target with exactly the options the iptables mode writes, or a user chain. */
function parseTarget([name, ...opts]: string[]): Target {
  const only = (...allowed: string[][]) => {
    if (!allowed.some((a) => a.length === opts.length && a.every((o, i) => o === '*' || o === opts[i]))) throw new Error(`-j ${name} ${opts.join(' ')}`);
  };
  switch (name) {
    case 'ACCEPT':
    case 'DROP':
    case 'REJECT':
      only([]);
      return { kind: name.toLowerCase() as 'accept' | 'drop' | 'reject' };
    case 'RETURN':
      only([]);
      return { kind: 'return' };
    case 'MASQUERADE':
      // --random-fully only changes how source ports are picked, not what is masqueraded.
      only([], ['--random-fully']);
      return { kind: 'masquerade' };
    case 'DNAT': {
      only(['--to-destination', '*']);
      const hp = parseHostPort(opts[1]!);
      if (!hp) throw new Error(`bad --to-destination ${opts[1]}`);
      return { kind: 'dnat', addr: hp.ip.ip, port: hp.port };
    }
    case 'MARK': {
      only(['--or-mark', '*'], ['--xor-mark', '*'], ['--set-xmark', '*']);
      const [value, mask] = parseMark(opts[1]!);
      if (opts[0] === '--or-mark') return { kind: 'mark', and: ~value >>> 0, xor: value };
      if (opts[0] === '--xor-mark') return { kind: 'mark', and: 0xffffffff, xor: value };
      return { kind: 'mark', and: ~mask >>> 0, xor: value };
    }
    default:
      if (!name || !/^[A-Z][A-Z0-9-]*$/.test(name)) throw new Error(`unknown target ${name}`);
      only([]);
      return { kind: 'jump', chain: name };
  }
}

const MATCH_MODULES = ['tcp', 'udp', 'sctp', 'comment', 'addrtype', 'iprange', 'mark', 'conntrack', 'statistic', 'recent'];
const CT_STATES = ['NEW', 'ESTABLISHED', 'RELATED', 'INVALID', 'DNAT', 'SNAT', 'UNTRACKED'];

/** The matches of a rule (everything before -j), in order: iptables stops at the first that fails. */
function parseMatches(tokens: string[]): Test[] {
  const tests: Test[] = [];
  let module = '';
  let negate = false;
  let i = 0;
  const arg = (opt: string): string => {
    const v = tokens[++i];
    if (v === undefined) throw new Error(`${opt} without a value`);
    return v;
  };
  const test = (t: Test) => {
    const neg = negate;
    negate = false;
    tests.push(neg ? (s, env) => !t(s, env) : t);
  };
  const noNegation = (opt: string) => {
    if (negate) throw new Error(`! before ${opt}`);
  };
  const inModule = (opt: string, ...modules: string[]) => {
    if (!modules.includes(module)) throw new Error(`${opt} outside -m ${modules.join('/')}`);
  };
  for (; i < tokens.length; i++) {
    const tok = tokens[i]!;
    switch (tok) {
      case '!':
        negate = true;
        break;
      case '-s':
      case '-d': {
        const field = tok === '-s' ? 'saddr' : 'daddr';
        const inValue = addressTest(arg(tok));
        test((s) => inValue(s[field]));
        break;
      }
      case '-p': {
        const proto = arg(tok);
        if (!['tcp', 'udp', 'sctp'].includes(proto)) throw new Error(`protocol ${proto}`);
        test((s) => s.proto === proto);
        break;
      }
      case '-m':
        noNegation(tok);
        module = arg(tok);
        if (!MATCH_MODULES.includes(module)) throw new Error(`unknown match module ${module}`);
        if (module === 'recent') parseRecent();
        break;
      case '--dport': {
        inModule(tok, 'tcp', 'udp', 'sctp');
        const proto = module;
        const [lo, hi] = arg(tok).split(':').map(Number) as [number, number | undefined];
        // -m tcp alone matches only tcp packets (iptables requires -p tcp as well; both are written).
        test((s) => s.proto === proto && s.dport >= lo && s.dport <= (hi ?? lo));
        break;
      }
      case '--comment':
        noNegation(tok);
        inModule(tok, 'comment');
        arg(tok);
        break;
      case '--src-type':
      case '--dst-type': {
        inModule(tok, 'addrtype');
        const type = arg(tok);
        if (type !== 'LOCAL') throw new Error(`addrtype ${type}`);
        const field = tok === '--src-type' ? 'saddrLocal' : 'daddrLocal';
        test((s) => s[field]);
        break;
      }
      case '--dst-range':
      case '--src-range': {
        inModule(tok, 'iprange');
        const [from, to] = arg(tok).split('-');
        const a = parseIP(from);
        const b = parseIP(to);
        if (!a || !b || a.family !== b.family) throw new Error(`bad range ${tokens[i]}`);
        const field = tok === '--src-range' ? 'saddr' : 'daddr';
        test((s) => inRange(s[field], a.ip, b.ip));
        break;
      }
      case '--mark': {
        inModule(tok, 'mark');
        const [value, mask] = parseMark(arg(tok));
        test((s) => (s.mark & mask) >>> 0 === value);
        break;
      }
      case '--ctstate': {
        inModule(tok, 'conntrack');
        const states = arg(tok).split(',');
        for (const st of states) if (!CT_STATES.includes(st)) throw new Error(`ctstate ${st}`);
        // The first packet of a connection: NEW, plus the virtual DNAT state once nat has translated it.
        test((s) => states.includes('NEW') || (s.dnatted && states.includes('DNAT')));
        break;
      }
      case '--mode':
        noNegation(tok);
        inModule(tok, 'statistic');
        if (arg(tok) !== 'random') throw new Error('only -m statistic --mode random');
        break;
      case '--probability': {
        noNegation(tok);
        inModule(tok, 'statistic');
        const p = Number(arg(tok));
        if (!(p >= 0 && p <= 1)) throw new Error(`bad probability ${tokens[i]}`);
        test((_s, env) => env.decide(p));
        break;
      }
      default:
        throw new Error(`unknown option ${tok}`);
    }
  }
  if (negate) throw new Error('! before -j');
  return tests;

  /** -m recent: --name N, then --set, or --rcheck --seconds S [--reap]. */
  function parseRecent(): void {
    let name = 'DEFAULT';
    let action: 'set' | 'rcheck' | null = null;
    let seconds: number | null = null;
    while (tokens[i + 1]?.startsWith('--') && ['--name', '--set', '--rcheck', '--seconds', '--reap'].includes(tokens[i + 1]!)) {
      const opt = tokens[++i]!;
      if (opt === '--name') name = arg(opt);
      else if (opt === '--set' || opt === '--rcheck') {
        if (action) throw new Error(`${opt} after --${action}`);
        action = opt === '--set' ? 'set' : 'rcheck';
      } else if (opt === '--seconds') seconds = Number(arg(opt));
      // --reap only forgets old entries, which --seconds ignores anyway.
    }
    if (action === 'set') {
      if (seconds !== null) throw new Error('--seconds with --set');
      test((s, env) => {
        let list = env.recent.get(name);
        if (!list) env.recent.set(name, (list = new Map()));
        list.set(s.saddr, env.now);
        return true;
      });
    } else if (action === 'rcheck') {
      if (seconds === null || !(seconds > 0)) throw new Error('--rcheck without --seconds');
      const window = seconds;
      test((s, env) => {
        const seen = env.recent.get(name)?.get(s.saddr);
        return seen !== undefined && env.now - seen <= window;
      });
    } else {
      throw new Error('-m recent without --set or --rcheck');
    }
  }
}

/** "-s"/"-d" values: an address (exact) or a CIDR (containment), in canonical form as the mode writes them. */
function addressTest(value: string): (ip: string) => boolean {
  if (value.includes('/')) {
    const c = parseCIDR(value);
    if (!c || c.cidr !== value) throw new Error(`not a canonical CIDR: ${value}`);
    return (ip) => cidrContains(c.cidr, ip);
  }
  const a = parseIP(value);
  if (!a || a.ip !== value) throw new Error(`not a canonical address: ${value}`);
  return (ip) => parseIP(ip)?.ip === a.ip;
}

/** Whether `ip` lies between `from` and `to` (same family), inclusive. */
function inRange(ip: string, from: string, to: string): boolean {
  const a = parseIP(ip);
  if (!a || a.family !== parseIP(from)!.family) return false;
  const v = addressBits(a.ip);
  return v >= addressBits(from) && v <= addressBits(to);
}

/** "value[/mask]" in hex or decimal. */
function parseMark(text: string): [number, number] {
  const [v, m] = text.split('/');
  const value = Number(v);
  const mask = m === undefined ? 0xffffffff : Number(m);
  if (!Number.isInteger(value) || !Number.isInteger(mask)) throw new Error(`bad mark ${text}`);
  return [value >>> 0, mask >>> 0];
}
