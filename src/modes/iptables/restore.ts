// A thin wrapper around the iptables binaries of one backend and family: iptables-restore with
// the input on stdin, iptables-save, and iptables itself. Everything goes through src/exec.ts
// (argument arrays, no shell). A failed restore becomes a RestoreError naming the line that
// iptables-restore reported, with that line's text.
import { type RunResult, run } from '../../exec.ts';
import type { IPFamily } from '../../model/types.ts';

export type Backend = 'nft' | 'legacy';

export interface IptablesBinaries {
  restore: string;
  save: string;
  iptables: string;
}

/** The binaries of a backend: iptables-nft-restore, ip6tables-legacy-save, ... */
export function binariesFor(backend: Backend, family: IPFamily): IptablesBinaries {
  const base = family === 'IPv6' ? 'ip6tables' : 'iptables';
  return { restore: `${base}-${backend}-restore`, save: `${base}-${backend}-save`, iptables: `${base}-${backend}` };
}

export interface IptablesOptions {
  backend: Backend;
  family: IPFamily;
  /** Run every command inside this network namespace (`ip netns exec NS ...`): tests and benchmarks. */
  netns?: string;
  /** Replace some binaries (tests point `restore` at a failing program). */
  binaries?: Partial<IptablesBinaries>;
  /**
   * Seconds to wait for the xtables lock (legacy backend; default 30). The lock is one file for the
   * whole host, every network namespace included, and a big legacy restore holds it for seconds.
   */
  lockWaitSeconds?: number;
  /** Kill a restore that takes longer (a full nft restore of a big cluster takes minutes). */
  restoreTimeoutMs?: number;
  /** Called with every restore input before it runs (tests count what is written). */
  onRestore?: (input: string | Buffer) => void;
}

/** iptables-restore failed; nothing of the failing table's transaction was applied. */
export class RestoreError extends Error {
  readonly binary: string;
  readonly code: number;
  readonly stderr: string;
  /** The input line iptables-restore named (1-based), when it named one. */
  readonly line: number | null;
  readonly lineText: string | null;
  /** The table that input line belongs to. */
  readonly table: string | null;

  constructor(binary: string, result: RunResult, input: string | Buffer) {
    const line = failedLine(result.stderr);
    const at = line !== null ? lineAt(input, line) : null;
    const stderr = result.stderr.trim();
    const where = line !== null ? ` at line ${line}${at?.table ? ` (table ${at.table})` : ''}: ${at?.text ?? '(no such line)'}` : '';
    super(`${binary} exited with ${result.code}${where}${stderr ? ` -- ${stderr.split('\n').slice(0, 4).join(' | ')}` : ''}`);
    this.name = 'RestoreError';
    this.binary = binary;
    this.code = result.code;
    this.stderr = result.stderr;
    this.line = line;
    this.lineText = at?.text ?? null;
    this.table = at?.table ?? null;
  }
}

/**
 * The input line an iptables-restore error names. Both backends use one of:
 * "line 4 failed", "line 2: CHAIN_DEL failed ...", "Error occurred at line: 3", "COMMIT expected at line 4".
 */
export function failedLine(stderr: string): number | null {
  const m = /\bline:? (\d+)/.exec(stderr);
  return m ? Number(m[1]) : null;
}

/** Line `n` (1-based) of the input, and the table (`*nat`) it is in. */
export function lineAt(input: string | Buffer, n: number): { text: string; table: string | null } | null {
  const buf = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  let start = 0;
  let table: string | null = null;
  for (let i = 1; start <= buf.length; i++) {
    let end = buf.indexOf(10, start);
    if (end < 0) end = buf.length;
    if (buf[start] === 42 /* * */) table = buf.toString('utf8', start + 1, end).trim();
    if (i === n) return start < buf.length ? { text: buf.toString('utf8', start, end), table } : null;
    start = end + 1;
  }
  return null;
}

/** The iptables binaries of one backend and family. */
export class Iptables {
  readonly backend: Backend;
  readonly family: IPFamily;
  readonly binaries: IptablesBinaries;
  private readonly prefix: string[];
  private readonly wait: string;
  private readonly restoreTimeoutMs: number;
  private readonly onRestore: ((input: string | Buffer) => void) | undefined;

  constructor(opts: IptablesOptions) {
    this.backend = opts.backend;
    this.family = opts.family;
    this.binaries = { ...binariesFor(opts.backend, opts.family), ...opts.binaries };
    this.prefix = opts.netns ? ['ip', 'netns', 'exec', opts.netns] : [];
    this.wait = String(opts.lockWaitSeconds ?? 30);
    this.restoreTimeoutMs = opts.restoreTimeoutMs ?? 30 * 60_000;
    this.onRestore = opts.onRestore;
  }

  /** `iptables-restore --noflush` with `input` on stdin; throws RestoreError. */
  async restore(input: string | Buffer): Promise<void> {
    this.onRestore?.(input);
    const argv = [...this.prefix, this.binaries.restore, '-w', this.wait, '--noflush'];
    const r = await run(argv, { input, timeoutMs: this.restoreTimeoutMs });
    if (r.code !== 0) throw new RestoreError(this.binaries.restore, r, input);
  }

  /** `iptables-save [-t table]` (every table without one); an empty string when the table does not exist. */
  async save(table?: string): Promise<string> {
    const args = table ? ['-t', table] : [];
    const r = await run([...this.prefix, this.binaries.save, ...args], { timeoutMs: 5 * 60_000 });
    if (r.code !== 0) {
      // Legacy iptables-save fails when the table's module is not loaded: then it has no rules.
      if (/does not exist|Table does not exist|can't initialize|No chain\/target\/match/i.test(r.stderr)) return '';
      throw new Error(`${[this.binaries.save, ...args].join(' ')} exited with ${r.code}: ${r.stderr.trim()}`);
    }
    return r.stdout;
  }

  /** `iptables -w N <args>`, resolving with the result whatever the exit code. */
  exec(args: readonly string[]): Promise<RunResult> {
    return run([...this.prefix, this.binaries.iptables, '-w', this.wait, ...args]);
  }
}
