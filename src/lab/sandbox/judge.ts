// Judges the tries of one probe against its `expect` (see test/scenarios/README.md). Pure. Addresses
// are compared in canonical form, so "2001:2:0:11::12" and "2001:0002:0:11:0:0:0:12" are the same source.
import { parseIP } from '../../model/addr.ts';
import type { ProbeTry } from './probe.ts';
import type { ExpectKey, Expectation } from './scenario.ts';

export interface Verdict {
  /** Every checked key holds. */
  ok: boolean;
  /** One line per key that does not hold, saying what happened instead. */
  reasons: string[];
  /** What the tries did, e.g. "30 tries: 14 answered by a1 (source 198.19.1.12), 16 by b1 (...)". */
  summary: string;
  /** Keys of `expect` that were not checked (the `ignore` option). */
  skipped: ExpectKey[];
}

export interface JudgeOptions {
  /** Expectation keys to leave unchecked, e.g. sourceIP/sourceNot for a proxy that cannot keep the source. */
  ignore?: readonly ExpectKey[];
}

interface Tally {
  total: number;
  answered: number;
  /** pod -> (source ip -> count) */
  byPod: Map<string, Map<string, number>>;
  refused: number;
  timeout: number;
  /** failure text -> count */
  failures: Map<string, number>;
}

/** The canonical form of an address; anything else (a pod server's '?') as it is. */
function canonical(address: string): string {
  return parseIP(address)?.ip ?? address;
}

function tally(tries: readonly ProbeTry[]): Tally {
  const t: Tally = { total: tries.length, answered: 0, byPod: new Map(), refused: 0, timeout: 0, failures: new Map() };
  for (const x of tries) {
    if (typeof x === 'object') {
      t.answered++;
      const sources = t.byPod.get(x.answer.pod) ?? new Map<string, number>();
      const source = canonical(x.answer.sourceIP);
      sources.set(source, (sources.get(source) ?? 0) + 1);
      t.byPod.set(x.answer.pod, sources);
    } else if (x === 'refused') t.refused++;
    else if (x === 'timeout') t.timeout++;
    else t.failures.set(x, (t.failures.get(x) ?? 0) + 1);
  }
  return t;
}

function sum(m: Map<string, number>): number {
  let n = 0;
  for (const v of m.values()) n += v;
  return n;
}

function plural(n: number, word: 'try' | 'answer'): string {
  if (n === 1) return `1 ${word}`;
  return `${n} ${word === 'try' ? 'tries' : 'answers'}`;
}

/** "14 by a1 (source 198.19.1.12), 16 by b1 (sources 198.18.0.1 x3, 198.19.1.12 x13)" */
function describeAnswers(t: Tally): string {
  return [...t.byPod.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([pod, sources]) => {
      const src = sources.size === 1 ? `source ${[...sources.keys()][0]}` : `sources ${[...sources.entries()].map(([ip, n]) => `${ip} x${n}`).join(', ')}`;
      return `${sum(sources)} by ${pod} (${src})`;
    })
    .join(', ');
}

/** What did not get an answer: "3 refused, 2 timed out, 1 EHOSTUNREACH". */
function describeFailures(t: Tally): string {
  const parts: string[] = [];
  if (t.refused) parts.push(`${t.refused} refused`);
  if (t.timeout) parts.push(`${t.timeout} timed out`);
  for (const [text, n] of t.failures) parts.push(`${n} ${text}`);
  return parts.join(', ');
}

function summarise(t: Tally): string {
  const parts: string[] = [];
  if (t.answered) parts.push(`${t.answered} answered: ${describeAnswers(t)}`);
  const failed = describeFailures(t);
  if (failed) parts.push(failed);
  return `${plural(t.total, 'try')}: ${parts.join('; ') || 'nothing'}`;
}

/** Why not every try was answered, or null if all were. */
function unanswered(t: Tally): string | null {
  if (t.answered === t.total) return null;
  return `${t.total - t.answered} of ${t.total} tries got no answer (${describeFailures(t)})`;
}

function setText(names: Iterable<string>): string {
  const list = [...names].sort();
  return list.length ? `{${list.join(', ')}}` : '{}';
}

/** Judges a probe's tries against `expect`: every given key (not ignored) must hold. */
export function judge(tries: readonly ProbeTry[], expect: Expectation, opts: JudgeOptions = {}): Verdict {
  const t = tally(tries);
  const reasons: string[] = [];
  const skipped: ExpectKey[] = [];
  const check = (key: ExpectKey): boolean => {
    if (expect[key] === undefined) return false;
    if (opts.ignore?.includes(key)) {
      skipped.push(key);
      return false;
    }
    return true;
  };
  const answeredPods = new Set(t.byPod.keys());

  if (t.total === 0) reasons.push('the probe made no tries');

  if (check('backends')) {
    const want = new Set(expect.backends);
    const why: string[] = [];
    const missing = [...want].filter((p) => !answeredPods.has(p));
    const extra = [...answeredPods].filter((p) => !want.has(p));
    const noAnswer = unanswered(t);
    if (noAnswer) why.push(noAnswer);
    if (missing.length) why.push(`never answered: ${missing.sort().join(', ')}`);
    if (extra.length) why.push(`unexpected answers from ${extra.sort().join(', ')}`);
    if (why.length) reasons.push(`backends: expected answers from exactly ${setText(want)}, got ${setText(answeredPods)}: ${why.join('; ')}`);
  }

  if (check('oneOf')) {
    const allowed = new Set(expect.oneOf);
    const why: string[] = [];
    const noAnswer = unanswered(t);
    if (noAnswer) why.push(noAnswer);
    const extra = [...answeredPods].filter((p) => !allowed.has(p));
    if (extra.length) why.push(`answered by ${extra.sort().join(', ')}, not in the set`);
    if (why.length) reasons.push(`oneOf: expected every try answered by one of ${setText(allowed)}: ${why.join('; ')}`);
  }

  if (check('sticky')) {
    const why: string[] = [];
    const noAnswer = unanswered(t);
    if (noAnswer) why.push(noAnswer);
    if (answeredPods.size > 1) why.push(`answers came from ${answeredPods.size} pods: ${describeAnswers(t)}`);
    if (why.length) reasons.push(`sticky: expected every try answered by the same pod: ${why.join('; ')}`);
  }

  for (const key of ['sourceIP', 'sourceNot'] as const) {
    if (!check(key)) continue;
    const ip = canonical(expect[key] as string);
    if (t.answered === 0) {
      reasons.push(`${key}: no try was answered, so no source address to check (${describeFailures(t)})`);
      continue;
    }
    const seen = new Map<string, number>();
    for (const sources of t.byPod.values()) for (const [src, n] of sources) seen.set(src, (seen.get(src) ?? 0) + n);
    if (key === 'sourceIP') {
      const other = [...seen.entries()].filter(([src]) => src !== ip);
      if (other.length) {
        reasons.push(
          `sourceIP: expected the pods to see source ${ip} (no SNAT), but ${plural(sum(new Map(other)), 'answer')} saw ${other.map(([s, n]) => `${s} x${n}`).join(', ')}`,
        );
      }
    } else if (seen.has(ip)) {
      reasons.push(`sourceNot: expected the source to be masqueraded, but ${plural(seen.get(ip) ?? 0, 'answer')} saw the original source ${ip}`);
    }
  }

  if (check('refused') && t.refused !== t.total) {
    const others = t.answered ? `${t.answered} answered (${describeAnswers(t)})` : '';
    const failed = describeFailures({ ...t, refused: 0 });
    reasons.push(
      `refused: expected every try refused at once (ICMP reject / RST), but ${t.total - t.refused} of ${t.total} were not: ${[others, failed].filter(Boolean).join('; ')}`,
    );
  }

  if (check('dropped') && t.timeout !== t.total) {
    const others = t.answered ? `${t.answered} answered (${describeAnswers(t)})` : '';
    const failed = describeFailures({ ...t, timeout: 0 });
    reasons.push(
      `dropped: expected every try to time out (traffic dropped), but ${t.total - t.timeout} of ${t.total} did not: ${[others, failed].filter(Boolean).join('; ')}`,
    );
  }

  return { ok: reasons.length === 0, reasons, summary: summarise(t), skipped };
}
