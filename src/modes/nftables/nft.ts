// The thin wrapper around the nft binary. nft 1.0.6 cannot read a JSON batch from a Node pipe on stdin,
// so a batch goes through a private temporary file: `nft -j -f FILE`. A batch is one transaction: it
// applies whole or not at all. The file is written from the batch's pieces as they are made (a full table at
// 10,000 services is ~10 MB of text: never one string or one Buffer in the heap).
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from '../../exec.ts';

export interface NftOptions {
  /** Run nft inside this network namespace (`ip netns exec NS nft ...`): tests and benchmarks. */
  netns?: string;
  /** The nft binary (default `nft`); tests point it at a failing program. */
  binary?: string;
  /** Kill nft after this long (default 10 min). */
  timeoutMs?: number;
}

/**
 * Bytes of the batch gathered into one write of its file: large enough that there are few system calls (40 for a
 * 10 MB table), small enough that the buffers of the nft runs in flight cost little memory outside the heap (each
 * lives until a collection finds it). Larger than a piece of Batch.chunks (1,000 elements, about 60 KB).
 */
const WRITE_SIZE = 256 << 10;
/** UTF-8 bytes per UTF-16 code unit, at most (a surrogate pair is 4 bytes for 2 units). */
const MAX_BYTES_PER_UNIT = 3;

export class NftError extends Error {
  readonly code: number;
  readonly stderr: string;
  /** Size of the batch that failed. */
  readonly bytes: number;
  constructor(what: string, code: number, stderr: string, bytes: number) {
    const detail = stderr
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0)
      .slice(0, 6)
      .join('; ');
    super(`${what} failed (exit ${code})${detail ? `: ${detail}` : ''}`);
    this.name = 'NftError';
    this.code = code;
    this.stderr = stderr;
    this.bytes = bytes;
  }
}

export class Nft {
  private readonly opts: NftOptions;

  constructor(opts: NftOptions = {}) {
    this.opts = opts;
  }

  private argv(args: string[]): string[] {
    const nft = [this.opts.binary ?? 'nft', ...args];
    return this.opts.netns ? ['ip', 'netns', 'exec', this.opts.netns, ...nft] : nft;
  }

  /**
   * Applies one JSON batch (`nft -j -f FILE`), given as one text or its pieces in order; resolves with its size
   * in bytes, throws NftError when nft refuses it.
   */
  async apply(batch: string | Iterable<string>): Promise<number> {
    const runs = this.sideBySide();
    await runs.add(typeof batch === 'string' ? [batch] : batch);
    return runs.finish();
  }

  /**
   * Batches applied side by side as they come (SideBySide), at most `limit` nft runs at a time, none started
   * before `after` has resolved.
   */
  sideBySide(limit = Infinity, after: Promise<unknown> = Promise.resolve()): SideBySide {
    return new SideBySide((file) => this.argv(['-j', '-f', file]), this.opts.timeoutMs ?? 600_000, limit, after);
  }

  /** Runs `nft -j <args>` and parses its output; null when nft fails (e.g. the table does not exist). */
  async listJSON(args: string[]): Promise<{ nftables: Record<string, unknown>[] } | null> {
    const r = await run(this.argv(['-j', ...args]), { timeoutMs: this.opts.timeoutMs ?? 600_000 });
    if (r.code !== 0) return null;
    try {
      return JSON.parse(r.stdout) as { nftables: Record<string, unknown>[] };
    } catch {
      return null;
    }
  }

  /** Nothing to release: every batch removes its own file. Kept for the proxier's close(). */
  async close(): Promise<void> {}
}

/**
 * Independent batches applied side by side, each its own transaction (`nft -j -f FILE`): add() writes a batch's file
 * (one batch's text in memory at a time) and starts its nft as soon as `after` has resolved and fewer than `limit`
 * are running; finish() waits for every one, removes the files and throws the first failure. The files live in a
 * private directory made for these batches and removed with it (also when writing one fails), so nothing is left
 * behind by a proxier never closed.
 */
export class SideBySide {
  private readonly argv: (file: string) => string[];
  private readonly timeoutMs: number;
  /** The private directory of the files, made with the first. */
  private dir: Promise<string> | null = null;
  private readonly limit: number;
  private readonly after: Promise<unknown>;
  private readonly runs: Promise<number>[] = [];
  /** Batches written and waiting for a free run, in order. */
  private readonly waiting: (() => void)[] = [];
  private running = 0;
  private failed: { error: unknown } | null = null;
  /**
   * The files' write buffer, one for all of them (they are written one after another): with a buffer of 1 MiB each,
   * the parts of a first sync left 10 MB outside the heap until a major collection (10,000 x 10, 8 parts).
   */
  private buf: Buffer | null = null;

  constructor(argv: (file: string) => string[], timeoutMs: number, limit: number, after: Promise<unknown>) {
    this.argv = argv;
    this.timeoutMs = timeoutMs;
    this.limit = Math.max(1, limit);
    this.after = after;
    // A gate that fails is reported by the runs waiting on it (finish()), not as an unhandled rejection.
    after.catch(() => {});
  }

  /** Batches given so far. */
  get size(): number {
    return this.runs.length;
  }

  /**
   * Writes the batch's file and queues its nft run; never throws (finish() does): nothing more is started after a
   * failure. One at a time: the next add() after this one has resolved (the files share one buffer).
   */
  async add(batch: Iterable<string>): Promise<void> {
    if (this.failed) return;
    const n = this.runs.length;
    let file: string;
    let bytes: number;
    try {
      this.dir ??= mkdtemp(path.join(tmpdir(), 'kube-proxy-ts-nft-'));
      file = path.join(await this.dir, `batch-${n}.json`);
      this.buf ??= Buffer.allocUnsafe(WRITE_SIZE);
      bytes = await writePieces(file, batch, this.buf);
    } catch (error) {
      this.failed = { error };
      return;
    }
    const run = this.after.then(async () => {
      await this.turn();
      try {
        return await runNft(this.argv(file), this.timeoutMs, bytes);
      } catch (error) {
        // Before the next run is let in: a failure stops what has not started yet.
        this.failed ??= { error };
        throw error;
      } finally {
        this.release();
      }
    });
    // Seen by finish() (a failed gate too).
    run.catch((error) => (this.failed ??= { error }));
    this.runs.push(run);
  }

  /** Waits for every run, removes the files; resolves with the bytes applied, or throws the first failure. */
  async finish(): Promise<number> {
    this.buf = null;
    // The gate too: with no batch given, its failure is still this set's.
    await this.after.catch((error: unknown) => (this.failed ??= { error }));
    const ended = await Promise.allSettled(this.runs);
    const dir = await this.dir?.catch(() => null);
    if (dir) await rm(dir, { recursive: true, force: true });
    if (this.failed) throw this.failed.error;
    let total = 0;
    for (const e of ended) if (e.status === 'fulfilled') total += e.value;
    return total;
  }

  /** Resolves when this run may start (fewer than `limit` running); throws, passing its turn on, when an earlier run failed. */
  private async turn(): Promise<void> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    if (this.failed) {
      this.waiting.shift()?.();
      throw new Error('not applied: an earlier batch failed');
    }
    this.running++;
  }

  private release(): void {
    this.running--;
    this.waiting.shift()?.();
  }
}

async function runNft(argv: string[], timeoutMs: number, bytes: number): Promise<number> {
  const r = await run(argv, { timeoutMs });
  if (r.code !== 0) throw new NftError('nft -j -f', r.code, r.stderr, bytes);
  return bytes;
}

/**
 * Writes `pieces` to a new file (mode 0600) through `buf` (WRITE_SIZE bytes): a piece is copied into it
 * and the buffer written whenever the next piece may not fit; each write is awaited before the next piece is
 * made, so at most about WRITE_SIZE of the batch's text is in memory at a time. Returns the bytes written.
 */
async function writePieces(file: string, pieces: Iterable<string>, buf: Buffer): Promise<number> {
  const fh = await open(file, 'wx', 0o600);
  try {
    let used = 0;
    let bytes = 0;
    const writeAll = async (from: Buffer, length: number) => {
      for (let done = 0; done < length;) done += (await fh.write(from, done, length - done)).bytesWritten;
      bytes += length;
    };
    const flush = async () => {
      await writeAll(buf, used);
      used = 0;
    };
    for (const piece of pieces) {
      if (used + piece.length * MAX_BYTES_PER_UNIT > WRITE_SIZE) await flush();
      if (piece.length * MAX_BYTES_PER_UNIT <= WRITE_SIZE) used += buf.write(piece, used);
      // Larger than the buffer (Batch.chunks makes none): written as it is.
      else {
        const whole = Buffer.from(piece);
        await writeAll(whole, whole.length);
      }
    }
    await flush();
    return bytes;
  } finally {
    await fh.close();
  }
}
