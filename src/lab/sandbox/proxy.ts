// Running kube-proxy-ts inside a sandbox node as a user runs it on a node, and knowing when it has synced.
// Shared by the demo, the mode comparison and the tests.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { ModeName } from '../../modes/types.ts';
import { type PodSpec, REPO_ROOT } from './scenario.ts';
import { clusterCIDRs, type Host, type Topology } from './topology.ts';

export const BIN = path.join(REPO_ROOT, 'bin', 'kube-proxy-ts.js');

/**
 * How `npx kube-proxy-ts` (and the image) starts the proxy: bin/kube-proxy-ts.js's first line,
 * `#!/usr/bin/env -S NAME=VALUE... node --flags...` (the heap and malloc settings the memory figures depend on),
 * which `node FILE` does not read.
 */
export function userLaunch(): { nodeFlags: string[]; env: Record<string, string> } {
  const words = readFileSync(BIN, 'utf8').split('\n')[0]!.split(' ');
  const env: Record<string, string> = {};
  for (const w of words) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(w);
    if (m) env[m[1]!] = m[2]!;
  }
  return { nodeFlags: words.filter((w) => w.startsWith('--')), env };
}

/**
 * The proxy's command line as bin's first line runs it, with this process's Node (not the first `node` on PATH):
 * `env NAME=VALUE... node --flags... BIN args...`, Node's `extraNodeFlags` (benchmarks: profiling, heap
 * snapshots) after bin's own. env execs Node, so the process's pid is the proxy's own.
 */
export function binCommand(args: readonly string[], extraNodeFlags: readonly string[] = []): string[] {
  const launch = userLaunch();
  const env = Object.entries(launch.env).map(([k, v]) => `${k}=${v}`);
  return ['env', ...env, process.execPath, ...launch.nodeFlags, ...extraNodeFlags, BIN, ...args];
}

/**
 * The command line a user runs on node-a (see the scenarios README). `pods`: the scenario's, which decide
 * the cluster CIDRs (the IPv6 one too when a pod has an IPv6 address); none: IPv4 only.
 */
export function proxyCommand(mode: ModeName, objectsFile: string, pods: readonly Pick<PodSpec, 'ip6'>[] = []): string[] {
  return binCommand(proxyArgs(mode, objectsFile, pods));
}

/** proxyCommand's arguments alone. */
export function proxyArgs(mode: ModeName, objectsFile: string, pods: readonly Pick<PodSpec, 'ip6'>[] = []): string[] {
  return ['--mode', mode, '--from', objectsFile, '--hostname-override', 'node-a', '--cluster-cidr', clusterCIDRs(pods).join(',')];
}

/** The last `max` characters of `text`, marked when cut. */
export function tail(text: string, max: number): string {
  return text.length <= max ? text : `…(${text.length - max} characters cut)…\n${text.slice(-max)}`;
}

/** Keeps the last `max` characters of a stream. */
export class OutputTail {
  text = '';
  readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  add(chunk: string): void {
    this.text += chunk;
    if (this.text.length > this.max * 2) this.text = this.text.slice(-this.max);
  }
  toString(): string {
    return tail(this.text, this.max);
  }
}

export interface ProxyProcess {
  child: ChildProcess;
  argv: string[];
  /** The tail of its stdout and stderr. */
  output(): string;
  /** Resolves on the next `"event":"synced"` line after the call (or rejects on exit / timeout). */
  nextSync(timeoutMs: number): Promise<void>;
  /** Number of sync lines seen so far. */
  syncs(): number;
  /** SIGTERM, then SIGKILL after timeoutMs; resolves with how it ended. */
  stop(timeoutMs: number): Promise<{ killed: boolean; code: number | null; signal: NodeJS.Signals | null }>;
}

/** A field of a JSON log line, or undefined when the line does not parse or lacks it. */
function fieldOf<T>(line: string, key: string): T | undefined {
  try {
    return (JSON.parse(line) as Record<string, unknown>)[key] as T | undefined;
  } catch {
    return undefined;
  }
}

/** Starts the proxy in a host of the topology (node-a by default) and waits for its first sync of every family. */
export async function startProxy(
  topo: Topology,
  argv: string[],
  opts: { syncTimeoutMs?: number; host?: Host; env?: NodeJS.ProcessEnv } = {},
): Promise<ProxyProcess> {
  const child = topo.spawn(opts.host ?? 'node-a', argv, opts.env ? { env: opts.env } : {});
  const stdout = new OutputTail(64_000);
  const stderr = new OutputTail(64_000);
  let syncs = 0;
  let waiters: { resolve: () => void }[] = [];
  let pending = '';
  // The proxy runs one pipeline per IP family and logs its families at start; it has synced once every
  // family has (a probe of one family must not run before that family's rules are in).
  let families: string[] | null = null;
  const familiesSynced = new Set<string>();
  const allFamiliesSynced = () => families !== null && families.every((f) => familiesSynced.has(f));
  // Keep reading both after the first sync: the proxy must never block on a full pipe. Its logs (and so the
  // sync lines) are on stderr; stdout carries only what a command prints.
  child.stdout?.setEncoding('utf8').on('data', (d: string) => stdout.add(d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr.add(d);
    pending += d;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const l of lines) {
      if (l.includes('"event":"starting"')) families = fieldOf<string[]>(l, 'families') ?? ['IPv4'];
      if (!l.includes('"event":"synced"')) continue;
      familiesSynced.add(fieldOf<string>(l, 'family') ?? 'IPv4');
      syncs++;
      const w = waiters;
      waiters = [];
      for (const x of w) x.resolve();
    }
  });
  const output = (): string => `stdout:\n${stdout.toString().trimEnd() || '(nothing)'}\nstderr:\n${stderr.toString().trimEnd() || '(nothing)'}`;
  const nextSync = (timeoutMs: number): Promise<void> =>
    new Promise((resolve, reject) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(new Error(`the proxy has exited (${child.signalCode ?? `code ${child.exitCode}`})`));
        return;
      }
      const onExit = (code: number | null, signal: string | null) => done(new Error(`it exited (${signal ?? `code ${code}`}) before logging "event":"synced"`));
      const timer = setTimeout(() => done(new Error(`no "event":"synced" line within ${timeoutMs} ms`)), timeoutMs);
      const waiter = { resolve: () => done() };
      function done(err?: Error) {
        clearTimeout(timer);
        child.removeListener('exit', onExit);
        waiters = waiters.filter((w) => w !== waiter);
        if (err) reject(err);
        else resolve();
      }
      child.once('exit', onExit);
      waiters.push(waiter);
    });
  const stop = async (timeoutMs: number) => {
    if (child.exitCode !== null || child.signalCode !== null) return { killed: false, code: child.exitCode, signal: child.signalCode };
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await exited;
    clearTimeout(timer);
    return { killed, code: child.exitCode, signal: child.signalCode };
  };
  const proc: ProxyProcess = { child, argv, output, nextSync, syncs: () => syncs, stop };
  if (opts.syncTimeoutMs !== 0) {
    try {
      const deadline = performance.now() + (opts.syncTimeoutMs ?? 20_000);
      do await nextSync(Math.max(1, deadline - performance.now()));
      while (!allFamiliesSynced());
    } catch (e) {
      await stop(2000);
      throw new Error(`the proxy did not sync: ${(e as Error).message}\ncommand: ${argv.join(' ')}\n${tail(output(), 8000)}`, { cause: e });
    }
  }
  return proc;
}
