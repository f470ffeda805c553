// Reference counts of the elements several service ports may contribute (hairpin pairs, configuration
// CIDRs) and of the pseudo-elements that drive the rules (distinct endpoint counts, affinity timeouts).
// While tracking (begin(true) ... changes()), it remembers which keys it touched and whether they were
// present, so a sync sends exactly the keys that appeared or disappeared.

export interface KeyChanges {
  set: string;
  deletes: string[];
  adds: string[];
}

export class RefCounts {
  /** set -> key -> references */
  private readonly sets = new Map<string, Map<string, number>>();
  /** set -> key -> present before this round; null when not tracking. */
  private touched: Map<string, Map<string, boolean>> | null = null;

  private counts(set: string): Map<string, number> {
    let m = this.sets.get(set);
    if (!m) {
      m = new Map();
      this.sets.set(set, m);
    }
    return m;
  }

  private touch(set: string, key: string, m: Map<string, number>): void {
    if (!this.touched) return;
    let t = this.touched.get(set);
    if (!t) {
      t = new Map();
      this.touched.set(set, t);
    }
    if (!t.has(key)) t.set(key, m.has(key));
  }

  /** Starts a round; with `track`, changes() reports the keys that appeared or disappeared in it. */
  begin(track: boolean): void {
    this.touched = track ? new Map() : null;
  }

  /** One more reference to `key`; true when it is the first. */
  add(set: string, key: string): boolean {
    const m = this.counts(set);
    this.touch(set, key, m);
    const n = m.get(key) ?? 0;
    m.set(key, n + 1);
    return n === 0;
  }

  remove(set: string, key: string): void {
    const m = this.counts(set);
    const n = m.get(key);
    if (n === undefined) throw new Error(`record out of step: ${set} ${key} is not installed`);
    this.touch(set, key, m);
    if (n === 1) m.delete(key);
    else m.set(key, n - 1);
  }

  /** Keys that appeared or disappeared since begin(true), per set. */
  changes(): KeyChanges[] {
    const out: KeyChanges[] = [];
    for (const [set, t] of this.touched ?? []) {
      const m = this.counts(set);
      const c: KeyChanges = { set, deletes: [], adds: [] };
      for (const [key, before] of t) {
        const after = m.has(key);
        if (before && !after) c.deletes.push(key);
        else if (!before && after) c.adds.push(key);
      }
      if (c.deletes.length > 0 || c.adds.length > 0) out.push(c);
    }
    return out;
  }

  keys(set: string): string[] {
    return [...this.counts(set).keys()];
  }

  count(set: string): number {
    return this.sets.get(set)?.size ?? 0;
  }
}
