// Accumulates the change sets of several commits into one, for the next sync.
import type { ChangeSet } from '../model/types.ts';

type Kind = 'added' | 'updated' | 'removed';

export class PendingChanges {
  private readonly byKey = new Map<string, Kind>();

  add(c: ChangeSet): void {
    for (const k of c.added) this.put(k, 'added');
    for (const k of c.updated) this.put(k, 'updated');
    for (const k of c.removed) this.put(k, 'removed');
  }

  private put(key: string, next: Kind): void {
    const prev = this.byKey.get(key);
    let kind: Kind = next;
    if (prev === 'added' && next === 'removed') {
      this.byKey.delete(key); // came and went between two syncs: the data path never had it
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
    const out: ChangeSet = { added: [], updated: [], removed: [] };
    for (const [k, kind] of this.byKey) out[kind].push(k);
    this.byKey.clear();
    return out;
  }

  clear(): void {
    this.byKey.clear();
  }
}
