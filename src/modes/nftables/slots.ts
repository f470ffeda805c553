// Stable slot numbers for the endpoints of service ports with ClientIP affinity.
//
// The affinity sets remember a client's choice as a slot number, not as an address. A slot keeps its
// endpoint for as long as the endpoint stays in the set, so clients of surviving endpoints keep their
// affinity when others come and go. A freed slot is held back for the affinity timeout: remembered
// choices of the removed endpoint expire before the slot can name another endpoint, so stale affinity
// never survives (a choice whose slot is empty fails its DNAT lookup and is chosen again).
import { MAX_ENDPOINTS } from './layout.ts';

interface SlotSet {
  /** endpoint id -> slot */
  bySlot: Map<string, number>;
  /** freed slot -> time (ms) from which it may be reused */
  held: Map<number, number>;
}

export class SlotAllocator {
  private readonly sets = new Map<string, SlotSet>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  /**
   * Slots for `ids` (aligned with it) in the set `setId`. Ids that were in the set keep their slot; ids
   * that left it free theirs, held for `holdMs`; new ids get the lowest slot neither used nor held (or,
   * if all are, the one held longest ago).
   */
  assign(setId: string, ids: readonly string[], holdMs: number): number[] {
    const now = this.now();
    let s = this.sets.get(setId);
    if (!s) {
      s = { bySlot: new Map(), held: new Map() };
      this.sets.set(setId, s);
    }
    const wanted = new Set(ids);
    for (const [id, slot] of s.bySlot) {
      if (!wanted.has(id)) {
        s.bySlot.delete(id);
        s.held.set(slot, now + holdMs);
      }
    }
    for (const [slot, until] of s.held) if (until <= now) s.held.delete(slot);
    const used = new Set(s.bySlot.values());
    let next = 0;
    const out: number[] = [];
    for (const id of ids) {
      let slot = s.bySlot.get(id);
      if (slot === undefined) {
        while (next < MAX_ENDPOINTS && (used.has(next) || s.held.has(next))) next++;
        if (next < MAX_ENDPOINTS) slot = next++;
        else slot = this.oldestHeld(s, used);
        s.held.delete(slot);
        s.bySlot.set(id, slot);
        used.add(slot);
      }
      out.push(slot);
    }
    return out;
  }

  /** Forgets a set: its service port is gone or lost affinity (its frontends' remembered choices are unreachable then). */
  release(setId: string): void {
    this.sets.delete(setId);
  }

  /** Sets currently tracked (tests). */
  get size(): number {
    return this.sets.size;
  }

  private oldestHeld(s: SlotSet, used: Set<number>): number {
    let best = -1;
    let bestUntil = Infinity;
    for (const [slot, until] of s.held) {
      if (!used.has(slot) && until < bestUntil) {
        best = slot;
        bestUntil = until;
      }
    }
    if (best < 0) throw new Error(`more than ${MAX_ENDPOINTS} endpoints in one set`);
    return best;
  }
}
