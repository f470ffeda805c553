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

/** Bytes of the batch gathered into one write of its file: large enough that there are few system calls. */
const WRITE_SIZE = 1 << 20;
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
   * in bytes, throws NftError when nft refuses it. The file lives in a private directory made for this batch
   * and removed with it (also when writing it fails), so nothing is left behind by a proxier never closed.
   */
  async apply(batch: string | Iterable<string>): Promise<number> {
    return this.applySideBySide([typeof batch === 'string' ? [batch] : batch]);
  }

  /**
   * Applies independent batches side by side, each its own transaction (`nft -j -f FILE` each): the files are
   * written one after another (one batch's text in memory at a time), each nft started as soon as its file is.
   * Resolves with their total size once every nft has finished; after that, throws the first failure. The files
   * live in a private directory made for this call and removed with it (also when writing one fails).
   */
  async applySideBySide(batches: readonly Iterable<string>[]): Promise<number> {
    const dir = await mkdtemp(path.join(tmpdir(), 'kube-proxy-ts-nft-'));
    const runs: Promise<number>[] = [];
    let writeFailed: { error: unknown } | null = null;
    try {
      for (const [i, batch] of batches.entries()) {
        const file = path.join(dir, `batch-${i}.json`);
        const bytes = await writePieces(file, batch);
        runs.push(
          run(this.argv(['-j', '-f', file]), { timeoutMs: this.opts.timeoutMs ?? 600_000 }).then((r) => {
            if (r.code !== 0) throw new NftError('nft -j -f', r.code, r.stderr, bytes);
            return bytes;
          }),
        );
      }
    } catch (error) {
      writeFailed = { error };
    }
    // Every started nft has ended (and read its file) before the files go, also when writing one failed.
    const ended = await Promise.allSettled(runs);
    await rm(dir, { recursive: true, force: true });
    if (writeFailed) throw writeFailed.error;
    let total = 0;
    for (const e of ended) {
      if (e.status === 'rejected') throw e.reason;
      total += e.value;
    }
    return total;
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
 * Writes `pieces` to a new file (mode 0600) through one reused buffer of WRITE_SIZE: a piece is copied into it
 * and the buffer written whenever the next piece may not fit; each write is awaited before the next piece is
 * made, so at most about WRITE_SIZE of the batch's text is in memory at a time. Returns the bytes written.
 */
async function writePieces(file: string, pieces: Iterable<string>): Promise<number> {
  const fh = await open(file, 'wx', 0o600);
  try {
    const buf = Buffer.allocUnsafe(WRITE_SIZE);
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
