// UDP conntrack cleanup after each sync. UDP has no connection end, so a client that keeps sending from the
// same port (a DNS resolver) would stick to a dead endpoint through its conntrack entry: delete the entries
// whose NAT target left the service port, and entries created while a port had no endpoints (REJECTed).
//
// What went away comes from the sync's change set (each changed key carries the value the data path had:
// ChangeSet.previous), not from a copy of the model. The deletions of one sync go to ONE `conntrack -R`
// process (its batch mode reads `-D ...` lines), run off the sync's critical path: the sync loop never waits
// for it, batches run one at a time, and a batch is bounded in size and time.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from '../exec.ts';
import { log } from '../log.ts';
import type { ChangeSet, DesiredState, Endpoint, IPFamily, ServicePort } from '../model/types.ts';

/** One conntrack deletion: the filters after `conntrack -D -f <family> -p udp`. */
export type ConntrackFilter = string[];

/** At most this many deletions in one batch; more are dropped with a warning (they expire by themselves). */
export const MAX_BATCH = 20_000;
const BATCH_TIMEOUT_MS = 30_000;

const usableIPs = (sp: ServicePort | undefined): Set<string> =>
  new Set(sp && sp.protocol === 'UDP' ? [...sp.clusterEndpoints, ...sp.localEndpoints].map((e: Endpoint) => e.ip) : []);
const frontendIPs = (sp: ServicePort) => [...sp.clusterIPs, ...sp.externalIPs, ...sp.loadBalancerIPs];

/** The deletions needed when a UDP service port goes from `prev` to `next` (pure, for tests). */
export function staleFlows(prev: ServicePort | undefined, next: ServicePort | undefined): ConntrackFilter[] {
  const out: ConntrackFilter[] = [];
  if (prev && prev.protocol === 'UDP') {
    const now = usableIPs(next);
    for (const ep of usableIPs(prev)) {
      if (now.has(ep)) continue;
      for (const ip of frontendIPs(prev)) out.push(['--orig-dst', ip, '--orig-port-dst', String(prev.port), '--dst-nat', ep]);
      if (prev.nodePort !== null) out.push(['--orig-port-dst', String(prev.nodePort), '--dst-nat', ep]);
    }
  }
  // From no endpoints to some: entries made while traffic was rejected would keep failing.
  if (next && next.protocol === 'UDP' && usableIPs(prev).size === 0 && usableIPs(next).size > 0 && prev !== undefined) {
    for (const ip of frontendIPs(next)) out.push(['--orig-dst', ip, '--orig-port-dst', String(next.port)]);
    if (next.nodePort !== null) out.push(['--orig-port-dst', String(next.nodePort)]);
  }
  return out;
}

/** Every deletion a sync's changes call for. */
export function changeFlows(state: DesiredState, changes: ChangeSet): ConntrackFilter[] {
  const out: ConntrackFilter[] = [];
  for (const key of [...changes.updated, ...changes.removed]) out.push(...staleFlows(changes.previous.get(key), state.servicePorts.get(key)));
  return out;
}

/** The batch file's text: one `-D` line per filter, for `conntrack -R`. */
export function batchText(family: IPFamily, filters: readonly ConntrackFilter[]): string {
  const f = family === 'IPv6' ? 'ipv6' : 'ipv4';
  return filters.map((x) => `-D -f ${f} -p udp ${x.join(' ')}\n`).join('');
}

export class ConntrackCleaner {
  private readonly family: IPFamily;
  private readonly binary: string;
  private queue: ConntrackFilter[] = [];
  private running: Promise<void> | null = null;
  failures = 0;
  /** Deletions dropped because a batch was full. */
  dropped = 0;

  /** Called after each batch that ran: how long it took and how many flows it deleted (for metrics). */
  private readonly onBatch: ((seconds: number, deleted: number) => void) | null;

  constructor(family: IPFamily, binary = 'conntrack', onBatch: ((seconds: number, deleted: number) => void) | null = null) {
    this.family = family;
    this.binary = binary;
    this.onBatch = onBatch;
  }

  /** Call after each successful sync with the changes it carried. Returns at once; the cleanup runs behind. */
  afterSync(state: DesiredState, changes: ChangeSet): void {
    const filters = changeFlows(state, changes);
    if (filters.length === 0) return;
    const room = MAX_BATCH - this.queue.length;
    if (filters.length > room) {
      this.dropped += filters.length - Math.max(room, 0);
      log.warn(
        { event: 'conntrack-dropped', family: this.family, dropped: filters.length - Math.max(room, 0) },
        'too many stale UDP flows at once; the rest expire by themselves',
      );
    }
    this.queue.push(...filters.slice(0, Math.max(room, 0)));
    this.running ??= this.drain();
  }

  /** Resolves when every queued deletion has run (for shutdown and tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        await this.runBatch(batch);
      }
    } finally {
      this.running = null;
    }
  }

  private async runBatch(filters: ConntrackFilter[]): Promise<void> {
    const dir = await mkdtemp(path.join(tmpdir(), 'kpt-conntrack-'));
    const file = path.join(dir, 'batch');
    const started = performance.now();
    try {
      await writeFile(file, batchText(this.family, filters));
      const r = await run([this.binary, '-R', file], { timeoutMs: BATCH_TIMEOUT_MS });
      if (r.code !== 0) throw new Error(r.stderr.trim().split('\n')[0] || `exit ${r.code}`);
      // In batch mode conntrack prints each flow it deleted, one line each ("udp 17 49 src=...").
      const deleted = r.stdout.split('\n').filter((l) => /^\w+\s+\d+\s+\d+\s+src=/.test(l)).length;
      this.onBatch?.((performance.now() - started) / 1000, deleted);
      log.debug(
        { event: 'conntrack-cleanup', family: this.family, filters: filters.length, ms: Math.round(performance.now() - started) },
        'deleted stale UDP conntrack entries',
      );
    } catch (err) {
      this.failures++;
      log.warn(
        { event: 'conntrack-failed', family: this.family, filters: filters.length, err: (err as Error).message },
        'could not delete stale UDP conntrack entries',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
