// The thin wrapper around the nft binary. nft 1.0.6 cannot read a JSON batch from a Node pipe on stdin,
// so a batch goes through a private temporary file: `nft -j -f FILE`. A batch is one transaction: it
// applies whole or not at all.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
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
   * Applies one JSON batch (`nft -j -f FILE`); throws NftError when nft refuses it. The file lives in a private
   * directory made for this batch and removed with it, so nothing is left behind by a proxier never closed.
   */
  async apply(json: string): Promise<void> {
    const dir = await mkdtemp(path.join(tmpdir(), 'kube-proxy-ts-nft-'));
    try {
      const file = path.join(dir, 'batch.json');
      await writeFile(file, json, { mode: 0o600 });
      const r = await run(this.argv(['-j', '-f', file]), { timeoutMs: this.opts.timeoutMs ?? 600_000 });
      if (r.code !== 0) throw new NftError('nft -j -f', r.code, r.stderr, Buffer.byteLength(json));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
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
