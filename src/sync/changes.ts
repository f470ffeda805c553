// Accumulates the change sets of several commits into one, for the next sync. Each key keeps the value the
// data path last had (the first `previous` seen since the last sync), as upstream's change trackers do.
import type { ChangeSet, ServicePort } from '../model/types.ts';

type Kind = 'added' | 'updated' | 'removed';

export class PendingChanges {
  private readonly byKey = new Map<string, Kind>();
  private readonly previous = new Map<string, ServicePort>();

  add(c: ChangeSet): void {
    for (const k of c.added) this.put(k, 'added', c);
    for (const k of c.updated) this.put(k, 'updated', c);
    for (const k of c.removed) this.put(k, 'removed', c);
  }

  private put(key: string, next: Kind, c: ChangeSet): void {
    const prev = this.byKey.get(key);
    // The oldest previous value is what the data path still holds.
    const before = c.previous.get(key);
    if (before !== undefined && !this.previous.has(key) && prev !== 'added') this.previous.set(key, before);
    let kind: Kind = next;
    if (prev === 'added' && next === 'removed') {
      this.byKey.delete(key); // came and went between two syncs: the data path never had it
      this.previous.delete(key);
      return;
    }
    if (prev === 'added' && next === 'updated')
      kind = 'added'; // still new to the data path
    else if (prev === 'removed' && next === 'added') kind = 'updated'; // the data path has an old version
    this.byKey.set(key, kind);
  }

  get size(): number {
    return this.byKey.size;
  }

  /** The merged change set; the accumulator is emptied. */
  take(): ChangeSet {
    const out: ChangeSet = { added: [], updated: [], removed: [], previous: new Map(this.previous) };
    for (const [k, kind] of this.byKey) out[kind].push(k);
    this.byKey.clear();
    this.previous.clear();
    return out;
  }
}
