// The sync loop: coalesces changes, runs one sync at a time, at most every minSyncPeriod, a full resync
// at least every syncPeriod, and retries failures with backoff (the next sync after a failure is full).
import { log } from '../log.ts';
import { collectGarbage } from '../memory.ts';
import { issueLine } from '../model/parse.ts';
import type { ClusterState } from '../model/store.ts';
import { type ChangeSet, type DesiredState, changeSetSize } from '../model/types.ts';
import type { Proxier, SyncResult } from '../modes/types.ts';
import { PendingChanges } from './changes.ts';

export interface SyncEvent {
  result: SyncResult;
  state: DesiredState;
  /** What changed since the previous successful sync (a full sync rewrote everything, but these still changed). */
  changes: ChangeSet;
  /** Service ports in the state after the sync. */
  servicePorts: number;
  changed: number;
  serviceChanges: number;
  endpointChanges: number;
  /** last-change-trigger-time values (ms) of the slices this sync carried to the data path. */
  triggerTimes: number[];
}

export interface SyncLoopOptions {
  proxier: Proxier;
  cluster: ClusterState;
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  /** Called after every successful sync; the next sync waits for a returned promise. */
  onSynced?: (e: SyncEvent) => void | Promise<void>;
  /** Called after every failed sync. */
  onFailed?: (err: Error, full: boolean) => void;
  now?: () => number;
}

const MAX_BACKOFF_MS = 30_000;
/**
 * A first sync of at least this many service ports starts with a full collection (collectGarbage, which keeps
 * compiled code): about 40 ms at 10,000 services, small against the sync. At 10,000 x 10 (nftables, alternating runs)
 * the peak was 147-149 MB with it, 146-148 MB with a last-resort collection in its place (which took 90-100 ms, and the
 * first plan ran slower for the code it flushed).
 */
const COLLECT_BEFORE_FIRST_SYNC_PORTS = 1000;

export class SyncLoop {
  private readonly o: SyncLoopOptions;
  private readonly pending = new PendingChanges();
  private counts = { services: 0, endpoints: 0, triggers: [] as number[] };
  private needFull = true;
  private running = false;
  private started = false;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private timerDue = Infinity;
  private lastSyncAt = -Infinity;
  private lastFullAt = -Infinity;
  private failures = 0;
  private idle: Promise<void> = Promise.resolve();
  /** Time of the oldest change not yet synced (ms), or null; health checks read it. */
  oldestPendingAt: number | null = null;
  lastSuccessAt: number | null = null;

  constructor(o: SyncLoopOptions) {
    this.o = o;
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /**
   * Call after applying objects to the cluster state: schedules a sync (coalesced). Before start() it only
   * notes the change: the source may still be listing (the API source hands over each kind as it is read), and
   * a sync of a state without every kind would remove the rules of services whose endpoints are not read yet.
   */
  request(): void {
    if (this.stopped) return;
    if (this.oldestPendingAt === null) this.oldestPendingAt = this.now();
    if (this.started) this.schedule(0);
  }

  /** Once the source has listed everything: starts periodic full resyncs and runs the first (full) sync now. */
  start(): void {
    this.started = true;
    this.request();
  }

  /** Resolves after the sync in flight (if any); no further syncs start. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.idle;
  }

  private schedule(delayHint: number): void {
    if (this.stopped || this.running) return;
    const sinceLast = this.now() - this.lastSyncAt;
    const delay = Math.max(delayHint, this.o.minSyncPeriodMs - sinceLast, 0);
    const due = this.now() + delay;
    if (this.timer) {
      if (this.timerDue <= due) return; // an earlier (or equal) sync is already scheduled
      clearTimeout(this.timer);
    }
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.runOnce();
    }, delay);
  }

  private async runOnce(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    let release!: () => void;
    this.idle = new Promise((r) => (release = r));
    try {
      await this.syncOnce();
    } finally {
      this.running = false;
      release();
      this.afterSync();
    }
  }

  private afterSync(): void {
    if (this.stopped) return;
    if (this.failures > 0) {
      const backoff = Math.min(MAX_BACKOFF_MS, Math.max(this.o.minSyncPeriodMs, 1000) * 2 ** (this.failures - 1));
      this.schedule(backoff);
    } else if (this.o.cluster.pending || this.pending.size > 0) {
      this.schedule(0);
    } else {
      // The periodic full resync.
      this.schedule(Math.max(0, this.lastFullAt + this.o.syncPeriodMs - this.now()));
    }
  }

  private async syncOnce(): Promise<void> {
    const commit = this.o.cluster.commit();
    for (const n of commit.notices) log.warn({ event: 'frontend-notice', family: this.o.proxier.family, object: n.object, field: n.field }, issueLine(n));
    this.pending.add(commit.changes);
    this.counts.services += commit.serviceChanges;
    this.counts.endpoints += commit.endpointChanges;
    this.counts.triggers.push(...commit.triggerTimes);
    const full = this.needFull || this.now() - this.lastFullAt >= this.o.syncPeriodMs;
    const changes = this.pending.take();
    if (this.lastSuccessAt === null && this.failures === 0 && commit.state.servicePorts.size >= COLLECT_BEFORE_FIRST_SYNC_PORTS) {
      // What reading the lists and building the model left (promoted, never collected yet) would otherwise stay
      // under the first sync's own burst of allocation and add to the process's peak (docs/benchmarks.md).
      collectGarbage();
    }
    const startedAt = this.now();
    this.lastSyncAt = startedAt;
    const pendingSince = this.oldestPendingAt;
    this.oldestPendingAt = null;
    try {
      const result = await this.o.proxier.sync(commit.state, full ? null : changes);
      this.failures = 0;
      this.needFull = false;
      if (result.full) this.lastFullAt = startedAt;
      this.lastSuccessAt = this.now();
      const event: SyncEvent = {
        result,
        state: commit.state,
        changes,
        servicePorts: commit.state.servicePorts.size,
        changed: changeSetSize(changes),
        serviceChanges: this.counts.services,
        endpointChanges: this.counts.endpoints,
        triggerTimes: this.counts.triggers,
      };
      this.counts = { services: 0, endpoints: 0, triggers: [] };
      log.info(
        {
          event: 'synced',
          mode: this.o.proxier.mode,
          family: this.o.proxier.family,
          full: result.full,
          durationMs: Math.round(result.durationMs * 10) / 10,
          servicePorts: event.servicePorts,
          added: changes.added.length,
          updated: changes.updated.length,
          removed: changes.removed.length,
          written: result.servicePortsWritten,
          bytes: result.bytes,
          // Network programming latency of the slowest change this sync carried (from its trigger time).
          ...(event.triggerTimes.length > 0 ? { programmingMs: Math.max(0, this.now() - event.triggerTimes.reduce((a, b) => Math.min(a, b))) } : {}),
        },
        result.full ? 'full sync done' : 'partial sync done',
      );
      try {
        await this.o.onSynced?.(event);
      } catch (err) {
        log.error({ event: 'after-sync-failed', family: this.o.proxier.family, err: (err as Error).message }, 'a post-sync task failed');
      }
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      this.failures++;
      this.needFull = true;
      // Keep what this sync was to carry: the next (full) sync covers it, and health still sees it waiting.
      this.pending.add(changes);
      this.oldestPendingAt = pendingSince ?? startedAt;
      log.error(
        { event: 'sync-failed', mode: this.o.proxier.mode, family: this.o.proxier.family, full, failures: this.failures, err: err.message },
        'sync failed; previous rules stay in place, retrying with a full sync',
      );
      this.o.onFailed?.(err, full);
    }
  }
}
