// Reading iptables-save output: which chains exist, which rules of built-in chains (and of other
// people's chains) jump into ours, and from that the restore lines that repair our jumps and
// remove chains that are ours but no longer wanted. The nat table of a big cluster is tens of
// megabytes, so the scan walks the text once and only keeps the few lines it needs.
import { isOwnedChain } from './names.ts';
import type { Jump } from './render.ts';

export const BUILTIN_CHAINS: ReadonlySet<string> = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/** A rule as iptables-save printed it: `-A <chain> <spec>`. */
export interface SavedRule {
  chain: string;
  spec: string;
  /** The -j/-g target, null for none. */
  target: string | null;
}

export interface SavedTable {
  /** Every chain of the table, built-in ones included. */
  chains: Set<string>;
  /** Rules of built-in chains. */
  builtinRules: SavedRule[];
  /** Rules of chains that are neither built-in nor ours whose target is one of ours. */
  foreignRefs: SavedRule[];
}

const TARGET = /(?:^|\s)-[jg]\s+(\S+)/;
const QUOTED = /"(?:[^"\\]|\\.)*"/g;

/** The -j/-g target of a rule spec (quoted strings, such as comments, are skipped). */
export function ruleTarget(spec: string): string | null {
  const m = TARGET.exec(spec.replace(QUOTED, '""'));
  return m ? (m[1] ?? null) : null;
}

/** Parses the `*table` section of iptables-save output. */
export function parseSave(text: string, table: string): SavedTable {
  const out: SavedTable = { chains: new Set(), builtinRules: [], foreignRefs: [] };
  forEachLine(text, table, (line) => {
    if (line.startsWith(':')) {
      const end = line.indexOf(' ');
      out.chains.add(end < 0 ? line.slice(1) : line.slice(1, end));
      return;
    }
    if (!line.startsWith('-A ')) return;
    const end = line.indexOf(' ', 3);
    const chain = end < 0 ? line.slice(3) : line.slice(3, end);
    if (isOwnedChain(table, chain)) return; // the bulk of the text; its rules go with the chain
    const spec = end < 0 ? '' : line.slice(end + 1);
    const target = ruleTarget(spec);
    if (BUILTIN_CHAINS.has(chain)) out.builtinRules.push({ chain, spec, target });
    else if (target && isOwnedChain(table, target)) out.foreignRefs.push({ chain, spec, target });
  });
  return out;
}

/** How many rules each chain of `table` has, and which chains it declares (rules of undeclared chains count too). */
export function countRules(text: string, table: string): { declared: Set<string>; rules: Map<string, number> } {
  const declared = new Set<string>();
  const rules = new Map<string, number>();
  forEachLine(text, table, (line) => {
    if (line.startsWith(':')) {
      const end = line.indexOf(' ');
      declared.add(end < 0 ? line.slice(1) : line.slice(1, end));
    } else if (line.startsWith('-A ')) {
      const end = line.indexOf(' ', 3);
      const chain = end < 0 ? line.slice(3) : line.slice(3, end);
      rules.set(chain, (rules.get(chain) ?? 0) + 1);
    }
  });
  return { declared, rules };
}

/** The targets of the rules of `chains` (a second, rare pass). */
export function chainTargets(text: string, table: string, chains: ReadonlySet<string>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  forEachLine(text, table, (line) => {
    if (!line.startsWith('-A ')) return;
    const end = line.indexOf(' ', 3);
    if (end < 0) return;
    const chain = line.slice(3, end);
    if (!chains.has(chain)) return;
    const target = ruleTarget(line.slice(end + 1));
    if (!target) return;
    let set = out.get(chain);
    if (!set) out.set(chain, (set = new Set()));
    set.add(target);
  });
  return out;
}

/** Calls fn for every line inside `*table` ... COMMIT; lines of other tables are not materialised. */
function forEachLine(text: string, table: string, fn: (line: string) => void): void {
  const header = `*${table}`;
  let inTable = false;
  let pos = 0;
  while (pos < text.length) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    const c = text.charCodeAt(pos);
    if (c === 42 /* * */) {
      inTable = text.startsWith(header, pos) && (nl === pos + header.length || text.charCodeAt(pos + header.length) === 13);
    } else if (inTable) {
      if (c === 67 /* C */ && text.startsWith('COMMIT', pos)) inTable = false;
      else if (c === 58 /* : */ || c === 45 /* - */) fn(text.slice(pos, nl));
    }
    pos = nl + 1;
  }
}

export interface TablePlan {
  /** Existing chains of ours that are not wanted and will be removed. */
  remove: string[];
  /** Unwanted chains of ours kept because a chain that is not ours still jumps to them. */
  kept: string[];
  /** Restore lines: -D/-I of built-in chain rules (jumps to repair, references to removed chains). */
  jumpEdits: string[];
}

/**
 * Plans the repair of one table: the jumps of `jumps` (of this table) must exist exactly once in
 * their built-in chains; chains of ours that exist but are not `wanted` are removed, after the
 * built-in rules that jump to them; a chain referenced from a chain that is not ours is left
 * alone, and so is everything it reaches, since removing it would fail the whole restore.
 */
export function planTable(text: string, table: string, saved: SavedTable, wanted: (chain: string) => boolean, jumps: readonly Jump[]): TablePlan {
  let stale = new Set([...saved.chains].filter((ch) => !BUILTIN_CHAINS.has(ch) && isOwnedChain(table, ch) && !wanted(ch)));
  const kept = new Set<string>();
  const foreign = saved.foreignRefs.filter((r) => r.target !== null && stale.has(r.target));
  if (foreign.length > 0) {
    const edges = chainTargets(text, table, stale);
    const queue = foreign.map((r) => r.target as string);
    while (queue.length > 0) {
      const ch = queue.pop() as string;
      if (kept.has(ch) || !stale.has(ch)) continue;
      kept.add(ch);
      for (const t of edges.get(ch) ?? []) queue.push(t);
    }
    stale = new Set([...stale].filter((ch) => !kept.has(ch)));
  }

  const jumpEdits: string[] = [];
  const missing: Jump[] = [];
  for (const j of jumps) {
    const count = saved.builtinRules.filter((r) => r.chain === j.chain && r.spec === j.spec).length;
    if (count === 0) missing.push(j);
    for (let i = 1; i < count; i++) jumpEdits.push(`-D ${j.chain} ${j.spec}`);
  }
  for (const r of saved.builtinRules) {
    if (r.target !== null && stale.has(r.target)) jumpEdits.push(`-D ${r.chain} ${r.spec}`);
  }
  // Insert last-first at the top, so that they end up in `jumps` order.
  for (const j of missing.reverse()) jumpEdits.push(`-I ${j.chain} 1 ${j.spec}`);
  return { remove: [...stale].sort(), kept: [...kept].sort(), jumpEdits };
}

/** Restore lines removing `chains`: flush them all (declaring flushes under --noflush), then delete. */
export function removalLines(chains: readonly string[]): { flush: string[]; remove: string[] } {
  return { flush: chains.map((ch) => `:${ch} - [0:0]`), remove: chains.map((ch) => `-X ${ch}`) };
}
