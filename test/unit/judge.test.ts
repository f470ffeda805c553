import { describe, expect, it } from 'vitest';
import type { ProbeTry } from '../../src/lab/sandbox/probe.ts';
import { judge } from '../../src/lab/sandbox/judge.ts';

const ans = (pod: string, sourceIP = '198.19.1.12'): ProbeTry => ({ answer: { pod, sourceIP } });
const times = (n: number, t: ProbeTry): ProbeTry[] => Array.from({ length: n }, () => t);

describe('judge: backends', () => {
  it('passes when every try is answered and the answering set is exactly the expected set', () => {
    const v = judge([...times(14, ans('a1')), ...times(16, ans('b1'))], { backends: ['a1', 'b1'] });
    expect(v).toEqual({ ok: true, reasons: [], skipped: [], summary: '30 tries: 30 answered: 14 by a1 (source 198.19.1.12), 16 by b1 (source 198.19.1.12)' });
  });

  it('fails when an expected backend never answered', () => {
    const v = judge(times(30, ans('a1')), { backends: ['a1', 'b1'] });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual(['backends: expected answers from exactly {a1, b1}, got {a1}: never answered: b1']);
  });

  it('fails when an unexpected pod answered', () => {
    const v = judge([ans('a1'), ans('a3')], { backends: ['a1'] });
    expect(v.ok).toBe(false);
    expect(v.reasons[0]).toContain('unexpected answers from a3');
  });

  it('fails when some tries got no answer, even if the set matches, and says how they failed', () => {
    const v = judge([ans('a1'), ans('b1'), 'timeout', 'refused', 'EHOSTUNREACH'], { backends: ['a1', 'b1'] });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual([
      'backends: expected answers from exactly {a1, b1}, got {a1, b1}: 3 of 5 tries got no answer (1 refused, 1 timed out, 1 EHOSTUNREACH)',
    ]);
    expect(v.summary).toBe('5 tries: 2 answered: 1 by a1 (source 198.19.1.12), 1 by b1 (source 198.19.1.12); 1 refused, 1 timed out, 1 EHOSTUNREACH');
  });

  it('fails when nothing answered', () => {
    const v = judge(times(3, 'timeout'), { backends: ['a1'] });
    expect(v.ok).toBe(false);
    expect(v.reasons[0]).toBe('backends: expected answers from exactly {a1}, got {}: 3 of 3 tries got no answer (3 timed out); never answered: a1');
    expect(v.summary).toBe('3 tries: 3 timed out');
  });
});

describe('judge: oneOf', () => {
  it('passes when every answer comes from the set, even from one pod only', () => {
    expect(judge(times(5, ans('b1')), { oneOf: ['a1', 'b1'] }).ok).toBe(true);
  });

  it('fails on an answer from outside the set', () => {
    const v = judge([ans('a1'), ans('c1')], { oneOf: ['a1', 'b1'] });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual(['oneOf: expected every try answered by one of {a1, b1}: answered by c1, not in the set']);
  });

  it('fails when a try got no answer', () => {
    const v = judge([ans('a1'), 'refused'], { oneOf: ['a1'] });
    expect(v.ok).toBe(false);
    expect(v.reasons[0]).toContain('1 of 2 tries got no answer (1 refused)');
  });
});

describe('judge: sticky', () => {
  it('passes when every try is answered by the same pod', () => {
    expect(judge(times(30, ans('b1')), { sticky: true }).ok).toBe(true);
  });

  it('fails when answers come from two pods, showing the split', () => {
    const v = judge([ans('a1'), ans('b1'), ans('b1')], { sticky: true });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual([
      'sticky: expected every try answered by the same pod: answers came from 2 pods: 1 by a1 (source 198.19.1.12), 2 by b1 (source 198.19.1.12)',
    ]);
  });

  it('fails when a try got no answer', () => {
    const v = judge([ans('a1'), 'timeout'], { sticky: true });
    expect(v.ok).toBe(false);
    expect(v.reasons[0]).toContain('1 of 2 tries got no answer (1 timed out)');
  });
});

describe('judge: sourceIP', () => {
  it('passes when every answering pod saw the source', () => {
    expect(judge([ans('a1', '198.19.1.12'), ans('b1', '198.19.1.12')], { sourceIP: '198.19.1.12' }).ok).toBe(true);
  });

  it('fails when an answer saw another (SNATed) source', () => {
    const v = judge([ans('a1', '198.19.1.12'), ans('b1', '198.18.0.1'), ans('b1', '198.18.0.1')], { sourceIP: '198.19.1.12' });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual(['sourceIP: expected the pods to see source 198.19.1.12 (no SNAT), but 2 answers saw 198.18.0.1 x2']);
    expect(v.summary).toBe('3 tries: 3 answered: 1 by a1 (source 198.19.1.12), 2 by b1 (source 198.18.0.1)');
  });

  it('fails when nothing answered: there is no source to check', () => {
    const v = judge(['timeout', 'timeout'], { sourceIP: '198.19.1.12' });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual(['sourceIP: no try was answered, so no source address to check (2 timed out)']);
  });
});

describe('judge: sourceNot', () => {
  it('passes when no answering pod saw the address', () => {
    expect(judge([ans('a1', '198.18.0.1'), ans('b1', '198.18.0.1')], { sourceNot: '198.18.0.100' }).ok).toBe(true);
  });

  it('fails when a pod saw the original source', () => {
    const v = judge([ans('a1', '198.19.1.1'), ans('b1', '198.18.0.100')], { sourceNot: '198.18.0.100' });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual(['sourceNot: expected the source to be masqueraded, but 1 answer saw the original source 198.18.0.100']);
    expect(v.summary).toContain('1 by a1 (source 198.19.1.1), 1 by b1 (source 198.18.0.100)');
  });

  it('fails when nothing answered', () => {
    expect(judge(['refused'], { sourceNot: '198.18.0.100' }).ok).toBe(false);
  });
});

describe('judge: refused', () => {
  it('passes when every try was refused', () => {
    const v = judge(times(3, 'refused'), { refused: true });
    expect(v).toEqual({ ok: true, reasons: [], skipped: [], summary: '3 tries: 3 refused' });
  });

  it('fails when tries timed out instead (dropped is not refused)', () => {
    const v = judge(['refused', 'timeout', 'timeout'], { refused: true });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual(['refused: expected every try refused at once (ICMP reject / RST), but 2 of 3 were not: 2 timed out']);
  });

  it('fails when tries were answered, naming who answered', () => {
    const v = judge([ans('a1'), 'refused'], { refused: true });
    expect(v.ok).toBe(false);
    expect(v.reasons[0]).toContain('1 of 2 were not: 1 answered (1 by a1 (source 198.19.1.12))');
  });
});

describe('judge: dropped', () => {
  it('passes when every try timed out', () => {
    expect(judge(times(3, 'timeout'), { dropped: true }).ok).toBe(true);
  });

  it('fails when tries were refused instead', () => {
    const v = judge(['timeout', 'refused', 'refused'], { dropped: true });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual(['dropped: expected every try to time out (traffic dropped), but 2 of 3 did not: 2 refused']);
  });

  it('fails when a connection was accepted but not answered', () => {
    const v = judge(['timeout', 'connected, no answer in 1000 ms'], { dropped: true });
    expect(v.ok).toBe(false);
    expect(v.reasons[0]).toContain('1 connected, no answer in 1000 ms');
  });

  it('fails when tries were answered', () => {
    expect(judge([ans('a1'), 'timeout'], { dropped: true }).ok).toBe(false);
  });
});

describe('judge: combinations and options', () => {
  it('requires every given key: one failing key fails the verdict and is the only reason', () => {
    const tries = [...times(10, ans('a1', '198.18.0.1')), ...times(10, ans('b1', '198.18.0.1'))];
    const v = judge(tries, { backends: ['a1', 'b1'], sourceIP: '198.19.1.12' });
    expect(v.ok).toBe(false);
    expect(v.reasons).toHaveLength(1);
    expect(v.reasons[0]).toMatch(/^sourceIP: /);
  });

  it('reports every failing key', () => {
    const v = judge([ans('a1', '198.18.0.100'), ans('b1', '198.18.0.100')], { sticky: true, oneOf: ['a1'], sourceNot: '198.18.0.100' });
    expect(v.reasons.map((r) => r.split(':')[0])).toEqual(['oneOf', 'sticky', 'sourceNot']);
  });

  it('leaves ignored keys unchecked and lists them as skipped', () => {
    const tries = [ans('a1', '198.19.1.1'), ans('b1', '198.19.1.1')];
    const v = judge(tries, { backends: ['a1', 'b1'], sourceIP: '198.19.1.12', sourceNot: '198.19.1.1' }, { ignore: ['sourceIP', 'sourceNot'] });
    expect(v).toMatchObject({ ok: true, reasons: [], skipped: ['sourceIP', 'sourceNot'] });
  });

  it('does not list ignored keys the expectation does not use', () => {
    expect(judge([ans('a1')], { backends: ['a1'] }, { ignore: ['sourceIP'] }).skipped).toEqual([]);
  });

  it('summarises several source addresses of one pod', () => {
    const v = judge([ans('a1', '198.18.0.1'), ans('a1', '198.19.1.12'), ans('a1', '198.19.1.12')], { backends: ['a1'] });
    expect(v.summary).toBe('3 tries: 3 answered: 3 by a1 (sources 198.18.0.1 x1, 198.19.1.12 x2)');
  });

  it('fails a probe that made no tries', () => {
    const v = judge([], { dropped: true });
    expect(v.ok).toBe(false);
    expect(v.reasons).toContain('the probe made no tries');
  });
});

describe('judge: IPv6 sources', () => {
  const v6 = (pod: string, sourceIP: string): ProbeTry => ({ answer: { pod, sourceIP } });

  it('compares addresses canonically, whichever way the pod or the scenario spelt them', () => {
    const tries = [v6('a1', '2001:2:0:11::12'), v6('b1', '2001:0002:0000:0011:0000:0000:0000:0012')];
    const v = judge(tries, { backends: ['a1', 'b1'], sourceIP: '2001:2:0:11:0:0:0:12' });
    expect(v.ok).toBe(true);
    expect(v.summary).toBe('2 tries: 2 answered: 1 by a1 (source 2001:2:0:11::12), 1 by b1 (source 2001:2:0:11::12)');
  });

  it('sees an IPv6 client address that was not masqueraded, however written', () => {
    const v = judge([v6('a1', '2001:2::100'), v6('a1', '2001:2::1')], { sourceNot: '2001:0002::0100' });
    expect(v.ok).toBe(false);
    expect(v.reasons).toEqual(['sourceNot: expected the source to be masqueraded, but 1 answer saw the original source 2001:2::100']);
  });

  it('tells an IPv6 source apart from another', () => {
    const v = judge([v6('a1', '2001:2::1')], { sourceIP: '2001:2:0:11::12' });
    expect(v.reasons).toEqual(['sourceIP: expected the pods to see source 2001:2:0:11::12 (no SNAT), but 1 answer saw 2001:2::1 x1']);
  });
});
