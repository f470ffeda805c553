// --dry-run and `state` write their output as it is produced (src/one-shot.ts writeChunks), through a writer
// that may push back. What they write must stay byte for byte what they printed when the output was built as
// one string: test/golden/dry-run/ holds that output for the dual-stack scenario (every mode, each family and
// the mode's default), and the digests below that of a 600 x 10 dump as kubectl prints it (large enough for
// element lists and rule texts of many pieces), both taken from the implementation before streaming.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { dumpObjects, dumpText } from '../../bench/from-dump.ts';
import { main } from '../../src/cli.ts';
import { type RunOptions, resolveRunOptions } from '../../src/config.ts';
import { dryRun } from '../../src/daemon/run.ts';
import { MODES } from '../../src/modes/types.ts';
import { readObjectsFile } from '../../src/watch/file.ts';
import { type ApiObject, TestApiServer } from '../apiserver/server.ts';

const GOLDEN = path.resolve(import.meta.dirname, '..', 'golden', 'dry-run');
const SCENARIO = path.resolve(import.meta.dirname, '..', 'scenarios', 'dual-stack-services.yaml');
const SCENARIO_FLAGS = ['--hostname-override', 'node-a', '--cluster-cidr', '198.19.0.0/16,2001:2:0:10::/60'];
const DUMP_FLAGS = ['--hostname-override', 'node-a', '--cluster-cidr', '198.19.0.0/16'];

/**
 * sha256 of what the implementation before streaming printed for the 600 x 10 dump (default family). nftables:
 * since a full batch's elements are made in groups as it is written (planner.ts elementGroups), its element
 * commands are split per group; the digest was last taken when groups became 1,000 elements instead of 200 service
 * ports, the shared elements grouped too, after checking the output against the one before (digest a0a4ba1d...):
 * the same other commands in the same order, the same elements. Taken again when a full plan came to render its
 * service ports in key order (the elements in another order; checked the same way against 91ba9621...).
 */
const DUMP_DIGESTS: Record<string, string> = {
  iptables: '106a44a96b939b62ef78e557b65c8a99123f0a2e70c95a668886a617bb2dd324',
  nftables: '950b45558e1027282283e8f0486fd826f08ee76adfbb092ab1af28d1f8b5d78c',
  userspace: 'd7e833084ff8a86e4b7bb9a271dcb7010fdaf8271bf25f7cccabdc6094fbd815',
  'state table': '2a925031bf9aca44ae3e943f0cf6b8c06b510226f3b70f61654ac0ffe381c1f5',
  'state json': '77c373112c5b4abb4e0fcad9b0af37ca3c570b442c1bc02822999a32da8d337e',
};

const dir = mkdtempSync(path.join(tmpdir(), 'kpt-stream-'));
const dump = path.join(dir, 'dump.json');
beforeAll(() => writeFileSync(dump, dumpText(dumpObjects(600, 10), 'json')));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(() => {
  // Notes and warnings (route_localnet, left-out values) are not the output.
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
});
afterEach(() => vi.clearAllMocks());
afterAll(() => vi.restoreAllMocks());

/** A writer slower than the producer, with a small buffer: it says "full" often, and drains later. */
function slowWriter(): { out: Writable; text: () => string; drains: () => number } {
  const parts: string[] = [];
  let drains = 0;
  const out = new Writable({
    highWaterMark: 4096,
    write(chunk, _enc, cb) {
      parts.push(String(chunk));
      setImmediate(cb);
    },
  });
  out.on('drain', () => drains++);
  return { out, text: () => parts.join(''), drains: () => drains };
}

async function dryRunText(args: string[]): Promise<{ text: string; drains: number }> {
  const opts = (await resolveRunOptions(['--dry-run', ...args])) as RunOptions;
  const w = slowWriter();
  expect(await dryRun(opts, w.out)).toBe(0);
  return { text: w.text(), drains: w.drains() };
}

/** What `state` writes to stdout. */
async function stateText(args: string[]): Promise<string> {
  const parts: string[] = [];
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    parts.push(String(chunk));
    return true;
  });
  try {
    expect(await main(['state', ...args])).toBe(0);
  } finally {
    stdout.mockRestore();
  }
  return parts.join('');
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('--dry-run written as it is rendered', () => {
  for (const mode of MODES) {
    for (const family of ['both', 'IPv4', 'IPv6'] as const) {
      it(`${mode}, ${family === 'both' ? 'without --ip-family' : family}: the same bytes as before, through a writer that pushes back`, async () => {
        const { text } = await dryRunText(['--proxy-mode', mode, '--from', SCENARIO, ...SCENARIO_FLAGS, ...(family === 'both' ? [] : ['--ip-family', family])]);
        expect(text).toBe(readFileSync(path.join(GOLDEN, `${mode}-${family}.txt`), 'utf8'));
      });
    }
    it(`${mode}, 600 services x 10 endpoints: the same bytes as before, waiting for the writer to drain`, async () => {
      const { text, drains } = await dryRunText(['--proxy-mode', mode, '--from', dump, ...DUMP_FLAGS]);
      expect(sha256(text)).toBe(DUMP_DIGESTS[mode]);
      expect(drains).toBeGreaterThan(0);
    });
  }
});

describe('state written as it is made', () => {
  it('the table and the JSON of the dual-stack scenario: the same bytes as before', async () => {
    expect(await stateText(['--from', SCENARIO, ...SCENARIO_FLAGS])).toBe(readFileSync(path.join(GOLDEN, 'state-table.txt'), 'utf8'));
    expect(await stateText(['-o', 'json', '--from', SCENARIO, ...SCENARIO_FLAGS])).toBe(readFileSync(path.join(GOLDEN, 'state-json.txt'), 'utf8'));
  });

  it('600 services x 10 endpoints: the same bytes as before', async () => {
    expect(sha256(await stateText(['--from', dump, ...DUMP_FLAGS]))).toBe(DUMP_DIGESTS['state table']);
    expect(sha256(await stateText(['-o', 'json', '--from', dump, ...DUMP_FLAGS]))).toBe(DUMP_DIGESTS['state json']);
  });
});

describe('--dry-run from the API server', () => {
  // The API source hands over each kind's list on its own: every kind's objects must reach the rules, not only the
  // last list's (the output was once that of the EndpointSlices alone: no Services, no rules for them).
  it('prints what --from prints for the same objects', async () => {
    const server = new TestApiServer();
    await server.start();
    try {
      for (const o of await readObjectsFile(SCENARIO)) server.create(o as ApiObject);
      const kubeconfig = await server.writeKubeconfig(path.join(dir, 'kubeconfig'));
      const fromApi = await dryRunText(['--proxy-mode', 'nftables', '--kubeconfig', kubeconfig, ...SCENARIO_FLAGS]);
      const fromFile = await dryRunText(['--proxy-mode', 'nftables', '--from', SCENARIO, ...SCENARIO_FLAGS]);
      expect(fromApi.text).toContain('198.18.');
      expect(fromApi.text).toBe(fromFile.text);
    } finally {
      await server.stop();
    }
  });
});
