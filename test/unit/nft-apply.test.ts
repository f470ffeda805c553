// Nft.apply writes the batch's file from its pieces (never one string or Buffer): what nft is given is the
// pieces in order, byte for byte, whatever their sizes; a refused batch throws NftError with that size; the
// temporary file goes in every case, also when making a piece fails. nft itself is a script that copies the
// file it is given (the kernel side: test/e2e/nftables-apply.test.ts).
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Nft, NftError } from '../../src/modes/nftables/nft.ts';

let dir = '';
let copy = '';
/** Nft.apply's temporary directory (os.tmpdir(), from TMPDIR): this test's own, so only its batches are there. */
let batches = '';
const savedTmpdir = process.env.TMPDIR;
/** An nft that keeps a copy of its -f file; exits 1 when told to (a file named fail next to it). */
let fakeNft = '';

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nft-apply-unit-'));
  batches = path.join(dir, 'tmp');
  await mkdir(batches);
  process.env.TMPDIR = batches;
  copy = path.join(dir, 'copy.json');
  fakeNft = path.join(dir, 'nft');
  await writeFile(fakeNft, `#!/bin/sh\ncp "$3" '${copy}'\necho "$3" > '${dir}/given'\nif [ -e '${dir}/fail' ]; then echo 'Error: refused' >&2; exit 1; fi\n`);
  await chmod(fakeNft, 0o755);
});

afterAll(async () => {
  if (savedTmpdir === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmpdir;
  await rm(dir, { recursive: true, force: true });
});

/** What Nft.apply left in its temporary directory. */
const leftovers = () => readdir(batches);

describe('Nft.apply', () => {
  it('writes the pieces in order, byte for byte: small ones gathered, ones larger than a write on their own', async () => {
    const pieces = ['{"nftables":[', 'é'.repeat(10), 'a'.repeat(700_000), 'b'.repeat(500_000), '"\u{1F600}"'.repeat(3), 'c'.repeat(3 << 20), ']}\n'];
    const bytes = await new Nft({ binary: fakeNft }).apply(pieces);
    const text = pieces.join('');
    expect(bytes).toBe(Buffer.byteLength(text));
    expect(await readFile(copy, 'utf8')).toBe(text);
    expect(await readFile(path.join(dir, 'given'), 'utf8')).toMatch(new RegExp(`^${batches}/kube-proxy-ts-nft-`));
    expect(await leftovers()).toEqual([]);
  });

  it('takes one string as the whole batch', async () => {
    expect(await new Nft({ binary: fakeNft }).apply('{"nftables":[]}\n')).toBe(16);
    expect(await readFile(copy, 'utf8')).toBe('{"nftables":[]}\n');
  });

  it('a refused batch: NftError with its size in bytes, and no file left', async () => {
    await writeFile(path.join(dir, 'fail'), '');
    try {
      const e = await new Nft({ binary: fakeNft }).apply(['{"nftables":[', '"é"', ']}\n']).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(NftError);
      expect((e as NftError).bytes).toBe(20);
      expect((e as NftError).message).toMatch(/refused/);
    } finally {
      await rm(path.join(dir, 'fail'));
    }
    expect(await leftovers()).toEqual([]);
  });

  it('a piece that cannot be made: the error, nft not run, no file left', async () => {
    await rm(copy, { force: true });
    function* pieces() {
      yield 'x'.repeat(2 << 20);
      throw new Error('no more pieces');
    }
    await expect(new Nft({ binary: fakeNft }).apply(pieces())).rejects.toThrow('no more pieces');
    await expect(readFile(copy)).rejects.toThrow(/ENOENT/);
    expect(await leftovers()).toEqual([]);
  });
});

describe('Nft.sideBySide', () => {
  /** An nft that logs when it starts and ends on its batch (named by its first line), and fails a batch that says FAIL. */
  let slowNft = '';
  let log = '';
  beforeAll(async () => {
    slowNft = path.join(dir, 'slow-nft');
    log = path.join(dir, 'runs.log');
    await writeFile(
      slowNft,
      `#!/bin/sh\nname=$(head -n1 "$3")\necho "start $name" >> '${log}'\nsleep 0.2\necho "end $name" >> '${log}'\nif grep -q FAIL "$3"; then echo 'Error: refused' >&2; exit 1; fi\n`,
    );
    await chmod(slowNft, 0o755);
  });
  const runsLog = async () => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean);

  it('starts nothing before `after`, then at most `limit` runs at a time, the first given first', async () => {
    await rm(log, { force: true });
    let open!: () => void;
    const after = new Promise<void>((resolve) => (open = resolve));
    const runs = new Nft({ binary: slowNft }).sideBySide(2, after);
    for (let i = 0; i < 5; i++) await runs.add([`b${i}\n`]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await runsLog()).toEqual([]);
    open();
    expect(await runs.finish()).toBe(15);
    const events = await runsLog();
    let running = 0;
    let most = 0;
    for (const e of events) {
      running += e.startsWith('start') ? 1 : -1;
      most = Math.max(most, running);
    }
    expect(most).toBe(2);
    // The first two given start first (runs that start close together may log in either order).
    const starts = events.filter((e) => e.startsWith('start'));
    expect(starts.slice(0, 2).sort()).toEqual(['start b0', 'start b1']);
    expect(starts.sort()).toEqual(['start b0', 'start b1', 'start b2', 'start b3', 'start b4']);
    expect(await leftovers()).toEqual([]);
  });

  it('after a failure, starts nothing more; finish() throws the failure and leaves no file', async () => {
    await rm(log, { force: true });
    const runs = new Nft({ binary: slowNft }).sideBySide(1);
    await runs.add(['b0 FAIL\n']);
    await runs.add(['b1\n']);
    await runs.add(['b2\n']);
    const e = await runs.finish().catch((err: unknown) => err);
    expect(e).toBeInstanceOf(NftError);
    expect(await runsLog()).toEqual(['start b0 FAIL', 'end b0 FAIL']);
    expect(await leftovers()).toEqual([]);
  });

  it('a gate that fails: no run starts, finish() throws its error', async () => {
    await rm(log, { force: true });
    const runs = new Nft({ binary: slowNft }).sideBySide(2, Promise.reject(new Error('head refused')));
    await runs.add(['b0\n']);
    await expect(runs.finish()).rejects.toThrow('head refused');
    expect(await runsLog()).toEqual([]);
    expect(await leftovers()).toEqual([]);
  });
});
