// src/memory.ts: the last-resort collection the daemon asks for after a burst of allocation.
import { afterEach, describe, expect, it } from 'vitest';
import { releaseGarbage } from '../../src/memory.ts';

const g = globalThis as { gc?: unknown };
const original = g.gc;
afterEach(() => {
  g.gc = original;
});

describe('releaseGarbage', () => {
  it('asks V8 for its last-resort collection (the one that returns pooled pages), synchronously', () => {
    const asked: unknown[] = [];
    g.gc = (options: unknown) => asked.push(options);
    expect(releaseGarbage()).toBeGreaterThanOrEqual(0);
    expect(asked).toEqual([{ type: 'major', execution: 'sync', flavor: 'last-resort' }]);
  });

  it('does nothing without --expose-gc', () => {
    g.gc = undefined;
    expect(releaseGarbage()).toBeNull();
  });
});
