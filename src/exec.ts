// The one place that starts external programs: always an argument array, never a shell.
import { spawn } from 'node:child_process';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the child's stdin, which is then closed. */
  input?: string | Buffer;
  /** Kill the child after this long (default 120 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export class ExecError extends Error {
  readonly command: string;
  readonly result: RunResult;
  constructor(command: string, result: RunResult, detail?: string) {
    super(`${command} exited with ${result.code}${detail ? `: ${detail}` : result.stderr ? `: ${result.stderr.trim()}` : ''}`);
    this.name = 'ExecError';
    this.command = command;
    this.result = result;
  }
}

/** Runs argv[0] with the remaining arguments; resolves with its exit code and output (never rejects on a non-zero exit). */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    if (!cmd) {
      reject(new Error('run: empty command'));
      return;
    }
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, shell: false });
    } catch (e) {
      reject(e as Error);
      return;
    }
    // The error listener first: a spawn that fails (EMFILE, ENOENT, EAGAIN) emits 'error' and may leave the
    // stdio streams null; an unheard 'error' would crash the process. A failed spawn is a failed run, never a crash.
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (!child.stdout || !child.stderr || !child.stdin) return; // 'error' follows and rejects
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (signal ? `\n(killed by ${signal})` : ''),
      });
    });
    child.stdin.on('error', () => {
      /* the child may exit before reading all input; its exit code tells */
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Like run, but rejects with an ExecError on a non-zero exit. */
export async function runOk(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new ExecError(argv.join(' '), r);
  return r;
}
