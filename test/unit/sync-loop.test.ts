import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ClusterState } from '../../src/model/store.ts';
import type { ChangeSet, DesiredState } from '../../src/model/types.ts';
import type { Proxier, SyncResult } from '../../src/modes/types.ts';
import { PendingChanges } from '../../src/sync/changes.ts';
import { SyncLoop } from '../../src/sync/loop.ts';
import { CONFIG, ep, slice, svc } from './model-helpers.ts';

class RecordingProxier implements Proxier {
  readonly mode = 'iptables' as const;
  readonly family = 'IPv4' as const;
  calls: (ChangeSet | null)[] = [];
  failNext = 0;
  async sync(_state: DesiredState, changes: ChangeSet | null): Promise<SyncResult> {
    this.calls.push(changes);
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('restore failed');
    }
    return { full: changes === null, durationMs: 1, bytes: 0, servicePortsWritten: 0 };
  }
  dryRun(): string {
    return '';
  }
  dryRunChunks(): string[] {
    return [];
  }
  async cleanup(): Promise<void> {}
  async close(): Promise<void> {}
}

// Fake timers: the loop's timers and its clock (Date.now) advance only when the test says so.
const sleep = (ms: number) => vi.advanceTimersByTimeAsync(ms);
const none = new Map();

describe('PendingChanges', () => {
  it('merges change sets so the data path sees each key once, correctly classified', () => {
    const p = new PendingChanges();
    p.add({ added: ['a', 'b'], updated: ['c'], removed: ['d'], previous: none });
    p.add({ added: ['d'], updated: ['a'], removed: ['b', 'c'], previous: none });
    const c = p.take();
    expect(c.added).toEqual(['a']); // added then updated: still new
    expect(c.removed.sort()).toEqual(['c']); // b came and went: nothing to do
    expect(c.updated).toEqual(['d']); // removed then re-added: the data path has an old copy
    expect(p.size).toBe(0);
  });
});

describe('SyncLoop', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function setup() {
    const cluster = new ClusterState(CONFIG);
    const proxier = new RecordingProxier();
    const synced: number[] = [];
    const loop = new SyncLoop({
      proxier,
      cluster,
      minSyncPeriodMs: 50,
      syncPeriodMs: 60_000,
      onSynced: (e) => {
        synced.push(e.changed);
      },
    });
    return { cluster, proxier, loop, synced };
  }

  it('starts with a full sync, then syncs partially with coalesced changes', async () => {
    const { cluster, proxier, loop } = setup();
    cluster.upsert(svc('web', { clusterIP: '198.18.100.10', ports: [{ name: 'http', port: 80 }] }));
    loop.start();
    await sleep(20);
    expect(proxier.calls).toEqual([null]);
    cluster.upsert(slice('web-1', 'web', [{ name: 'http', port: 8080 }], [ep('198.19.1.11', 'node-a')]));
    loop.request();
    cluster.upsert(slice('web-1', 'web', [{ name: 'http', port: 8080 }], [ep('198.19.1.12', 'node-a')]));
    loop.request();
    await sleep(120);
    expect(proxier.calls).toHaveLength(2);
    expect(proxier.calls[1]).toMatchObject({ added: [], updated: ['shop/web:http'], removed: [] });
    // The update carries what the data path had before it: the service port without endpoints.
    expect(proxier.calls[1]!.previous.get('shop/web:http')!.allEndpoints).toEqual([]);
    await loop.stop();
  });

  it('does not sync before start(), however many changes are requested (the source may still be listing)', async () => {
    const { cluster, proxier, loop } = setup();
    cluster.upsert(svc('web', { clusterIP: '198.18.100.10', ports: [{ name: 'http', port: 80 }] }));
    loop.request();
    await sleep(200);
    expect(proxier.calls).toEqual([]);
    expect(loop.oldestPendingAt).not.toBeNull();
    loop.start();
    await sleep(20);
    expect(proxier.calls).toEqual([null]);
    await loop.stop();
  });

  it('respects the minimum sync period', async () => {
    const { cluster, proxier, loop } = setup();
    loop.start();
    await sleep(10);
    const t0 = Date.now();
    cluster.upsert(svc('a', { clusterIP: '198.18.100.1', ports: [{ port: 80 }] }));
    loop.request();
    while (proxier.calls.length < 2 && Date.now() - t0 < 1000) await sleep(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(35);
    await loop.stop();
  });

  it('after a failure retries with a full sync that carries the failed changes', async () => {
    const { cluster, proxier, loop } = setup();
    loop.start();
    await sleep(10);
    proxier.failNext = 1;
    cluster.upsert(svc('a', { clusterIP: '198.18.100.1', ports: [{ port: 80 }] }));
    loop.request();
    await sleep(100);
    expect(proxier.calls[1]).toMatchObject({ added: ['shop/a:'], updated: [], removed: [] });
    expect(loop.oldestPendingAt).not.toBeNull();
    // Backoff is at least a second.
    await sleep(1100);
    expect(proxier.calls).toHaveLength(3);
    expect(proxier.calls[2]).toBeNull();
    expect(loop.oldestPendingAt).toBeNull();
    await loop.stop();
  });
});

describe('PendingChanges and previous values', () => {
  it('keeps the oldest previous value of a key across commits, and none for a key that was added', () => {
    const cluster = new ClusterState(CONFIG);
    const p = new PendingChanges();
    cluster.upsert(svc('web', { clusterIP: '198.18.100.10', ports: [{ name: 'http', port: 80 }] }));
    p.add(cluster.commit().changes);
    const applied = p.take();
    expect(applied.previous.size).toBe(0);
    const original = cluster.current.servicePorts.get('shop/web:http');
    cluster.upsert(slice('web-1', 'web', [{ name: 'http', port: 8080 }], [ep('198.19.1.11', 'node-a')]));
    p.add(cluster.commit().changes);
    cluster.upsert(slice('web-1', 'web', [{ name: 'http', port: 8080 }], [ep('198.19.1.12', 'node-a')]));
    p.add(cluster.commit().changes);
    const c = p.take();
    expect(c.updated).toEqual(['shop/web:http']);
    expect(c.previous.get('shop/web:http')).toBe(original);
  });
});
