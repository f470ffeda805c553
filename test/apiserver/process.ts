// The test API server (main.ts) as a child process driven over its stdin (--control-stdin): for benchmarks that
// change objects faster than an HTTP round trip per change allows, and run the server in a network namespace.
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import type { ClientStats } from './server.ts';

const MAIN = path.join(import.meta.dirname, 'main.ts');

export interface ApiServerStats {
  resourceVersion: string;
  openWatches: number;
  /** By client address. */
  clients: Record<string, ClientStats>;
}

export interface ApiServerProcessOptions {
  /** Objects to serve from the start (a JSON or YAML List / stream). */
  objectsFile: string;
  /** Where to write a kubeconfig that points at the server. */
  kubeconfig: string;
  host?: string;
  port?: number;
  /** Send watches that allow them a BOOKMARK this often (kube-apiserver: about every minute); default none. */
  bookmarkMs?: number;
  /** Starts the command (e.g. through `ip netns exec`); default: a plain child process. */
  spawn?: (argv: string[]) => ChildProcess;
  /** How long loading the objects may take (default 120 s). */
  startTimeoutMs?: number;
}

/** Processes started here and not yet exited: killed when this process exits, whatever the reason. */
const running = new Set<ChildProcess>();
let exitHooked = false;

function track(child: ChildProcess): void {
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => {
      for (const c of running) c.kill('SIGKILL');
    });
  }
  running.add(child);
  child.once('exit', () => running.delete(child));
}

export class ApiServerProcess {
  readonly child: ChildProcess;
  readonly url: string;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(child: ChildProcess, url: string) {
    this.child = child;
    this.url = url;
  }

  static async start(o: ApiServerProcessOptions): Promise<ApiServerProcess> {
    const argv = [process.execPath, '--disable-warning=ExperimentalWarning', MAIN, '--control-stdin', '--from', o.objectsFile, '--kubeconfig', o.kubeconfig];
    if (o.host) argv.push('--host', o.host);
    if (o.port !== undefined) argv.push('--port', String(o.port));
    if (o.bookmarkMs !== undefined) argv.push('--bookmark-ms', String(o.bookmarkMs));
    const child = o.spawn ? o.spawn(argv) : spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    track(child);
    child.stderr?.setEncoding('utf8').on('data', (d: string) => process.stderr.write(d.replace(/^(?=.)/gm, 'apiserver: ')));
    let server: ApiServerProcess | null = null;
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the test API server did not start in time')), o.startTimeoutMs ?? 120_000);
      let pending = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        pending += d;
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) {
          let msg: { event?: string; url?: string; id?: number; result?: unknown; error?: string };
          try {
            msg = JSON.parse(line);
          } catch {
            process.stderr.write(`apiserver: ${line}\n`);
            continue;
          }
          if (msg.event === 'listening') {
            clearTimeout(timer);
            resolve(msg.url!);
          } else if (msg.event === 'reply') server?.answer(msg.id!, msg.result, msg.error);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const err = new Error(`the test API server exited (${signal ?? `code ${code}`})`);
        reject(err);
        for (const w of server?.waiting.values() ?? []) w.reject(err);
      });
    });
    server = new ApiServerProcess(child, url);
    return server;
  }

  /** Creates or replaces an object; not answered (the order of commands is the order of changes). */
  apply(object: object): void {
    this.child.stdin!.write(`${JSON.stringify({ op: 'apply', object })}\n`);
  }

  /** Runs a command (see main.ts) and resolves with its result. */
  command<T>(op: 'drop-watches' | 'expire-watches' | 'compact' | 'stats', timeoutMs = 30_000): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`the test API server did not answer ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.stdin!.write(`${JSON.stringify({ op, id })}\n`);
    });
  }

  stats(): Promise<ApiServerStats> {
    return this.command<ApiServerStats>('stats');
  }

  /** SIGTERM, then SIGKILL after graceMs. */
  async stop(graceMs = 3000): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.kill('SIGTERM');
    await exited;
    clearTimeout(timer);
  }

  private answer(id: number, result: unknown, error: string | undefined): void {
    const w = this.waiting.get(id);
    if (!w) return;
    this.waiting.delete(id);
    if (error !== undefined) w.reject(new Error(error));
    else w.resolve(result);
  }
}
