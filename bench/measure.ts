// What the benchmarks measure of the processes they run, and how they start them: the proxy's sync log lines,
// CPU time and resident memory from /proc, percentiles; the proxy launched as a user launches it, and the
// list/watch test API server.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';

import { binCommand } from '../src/lab/sandbox/proxy.ts';

export { binCommand, userLaunch } from '../src/lab/sandbox/proxy.ts';

const REPO = path.resolve(import.meta.dirname, '..');

/**
 * Spawns the proxy in network namespace `ns` as `npx kube-proxy-ts` would start it (userLaunch), with Node's
 * `extraNodeFlags` after bin's own; its log (the sync lines) on stderr, piped.
 */
export function spawnProxyIn(ns: string, args: string[], extraNodeFlags: readonly string[] = []): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, ...binCommand(args, extraNodeFlags)], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Starts the list/watch test API server (test/apiserver) in `ns`, serving `objectsFile` and writing a kubeconfig
 * for it to `kubeconfig`; resolves once it listens. Its stdin takes control commands (--control-stdin).
 */
export async function startTestApiServer(ns: string, kubeconfig: string, objectsFile: string): Promise<ChildProcess> {
  const api = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      '--disable-warning=ExperimentalWarning',
      path.join(REPO, 'test/apiserver/main.ts'),
      '--kubeconfig',
      kubeconfig,
      '--from',
      objectsFile,
      '--control-stdin',
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    api.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"listening"')) resolve();
    });
    api.once('exit', (c) => reject(new Error(`the API server exited (${c})`)));
  });
  return api;
}

/** The p-th percentile (nearest rank) of xs; NaN when empty. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((s.length * p) / 100) - 1))]!;
}

export function fmtMs(ms: number): string {
  if (Number.isNaN(ms)) return 'n/a';
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

export function fmtBytes(b: number): string {
  if (b >= 1 << 30) return `${(b / (1 << 30)).toFixed(1)} GiB`;
  if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(1)} MiB`;
  if (b >= 1 << 10) return `${(b / (1 << 10)).toFixed(1)} KiB`;
  return `${Math.round(b)} B`;
}

/** CPU seconds (user + system) a process has used, from /proc; NaN once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return Number.NaN;
  }
}

/** A memory figure of /proc/PID/status in MiB; NaN once the process is gone. */
function statusMB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Resident memory (VmRSS) of a process in MiB; NaN once it is gone. */
export const rssMB = (pid: number): number => statusMB(pid, 'VmRSS');

/** The peak resident memory (VmHWM) of a process in MiB; NaN once it is gone. */
export const peakRssMB = (pid: number): number => statusMB(pid, 'VmHWM');

/** The machine's CPU time so far (all cores), from the first line of /proc/stat, in clock ticks. */
function machineTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

/** How busy the machine's cores were between start() and stop(), and how much CPU given processes took. */
export class CpuMeter {
  private readonly pids: readonly number[];
  private t0 = machineTicks();
  private p0: number[];
  private w0 = performance.now();

  constructor(pids: readonly number[]) {
    this.pids = pids;
    this.p0 = pids.map(cpuSeconds);
  }

  /** Restarts the measurement now. */
  start(): void {
    this.t0 = machineTicks();
    this.p0 = this.pids.map(cpuSeconds);
    this.w0 = performance.now();
  }

  /** machineBusy: fraction of all cores busy (1 = saturated); perProcess: each pid's share of one core. */
  read(): { machineBusy: number; cores: number; perProcess: number[]; seconds: number } {
    const t = machineTicks();
    const seconds = (performance.now() - this.w0) / 1000;
    return {
      machineBusy: (t.busy - this.t0.busy) / Math.max(1, t.total - this.t0.total),
      cores: cpus().length,
      perProcess: this.pids.map((pid, i) => (cpuSeconds(pid) - this.p0[i]!) / seconds),
      seconds,
    };
  }
}

/** One `"event":"synced"` line of the proxy. */
export interface SyncLine {
  /** When the benchmark read it (performance.now()). */
  at: number;
  family: string;
  full: boolean;
  durationMs: number;
  /** From the oldest last-change-trigger-time the sync carried, to its end (the proxy's own clock). */
  programmingMs?: number;
}

/**
 * Reads a proxy's JSON log lines as they come: keeps every sync line, counts errors and warnings, lets
 * callers wait for a sync line that satisfies a predicate. Keeps reading for as long as the process runs,
 * so the proxy never blocks on a full pipe.
 */
export class ProxyLog {
  readonly syncs: SyncLine[] = [];
  /** Other events by name (relisted, source-error, sync-failed, ...), with when they were read. */
  readonly events: { at: number; event: string; line: string }[] = [];
  errors = 0;
  /** Why the process ended, once it has. */
  exited: string | null = null;
  private pending = '';
  private waiters: { pred: (s: SyncLine) => boolean; resolve: (s: SyncLine) => void; reject: (e: Error) => void }[] = [];

  constructor(child: ChildProcess) {
    // The proxy logs on stderr (stdout is only for what a command prints).
    child.stderr!.setEncoding('utf8').on('data', (d: string) => this.feed(d));
    child.once('exit', (code, signal) => {
      this.exited = signal ?? `code ${code}`;
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w.reject(new Error(`the proxy exited (${this.exited})`));
    });
  }

  /** Resolves with the first sync line read from now on that satisfies pred; rejects after timeoutMs or on exit. */
  next(pred: (s: SyncLine) => boolean, timeoutMs: number): Promise<SyncLine> {
    return new Promise((resolve, reject) => {
      if (this.exited !== null) {
        reject(new Error(`the proxy has exited (${this.exited})`));
        return;
      }
      const waiter = {
        pred,
        resolve: (s: SyncLine) => {
          clearTimeout(timer);
          resolve(s);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no matching sync within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Sync lines read in [from, to) (performance.now() times). */
  between(from: number, to = Infinity): SyncLine[] {
    return this.syncs.filter((s) => s.at >= from && s.at < to);
  }

  private feed(d: string): void {
    this.pending += d;
    const lines = this.pending.split('\n');
    this.pending = lines.pop() ?? '';
    for (const line of lines) this.line(line);
  }

  private line(line: string): void {
    if (!line.startsWith('{')) return;
    let j: { level?: number; event?: string; family?: string; full?: boolean; durationMs?: number; programmingMs?: number };
    try {
      j = JSON.parse(line);
    } catch {
      return;
    }
    const at = performance.now();
    if ((j.level ?? 0) >= 50) this.errors++;
    if (j.event !== 'synced') {
      if (j.event) this.events.push({ at, event: j.event, line: line.slice(0, 500) });
      return;
    }
    const s: SyncLine = { at, family: j.family ?? '', full: j.full === true, durationMs: j.durationMs ?? Number.NaN, programmingMs: j.programmingMs };
    this.syncs.push(s);
    const matched = this.waiters.filter((w) => w.pred(s));
    this.waiters = this.waiters.filter((w) => !matched.includes(w));
    for (const w of matched) w.resolve(s);
  }
}
