// The file input path (--from) at 10,000 services x 10 endpoints, in the three shapes a user has: the JSON
// `kubectl get -A -o json services,endpointslices` writes (a v1 List), the same List as YAML, and a stream of
// YAML documents (bench/from-dump.ts writes them as kubectl prints objects). For each: the reader alone
// (in this process), then `state`, `explain` and `--dry-run` (nftables, iptables) as a user runs them
// (bin/kube-proxy-ts.js: wall time and peak RSS of the whole process, from /usr/bin/time), then the daemon
// with --from in nftables mode in a network namespace of its own: first sync, one EndpointSlice changed in
// the file to its rules applied (from the file's rename to the proxy's sync log line), and its peak RSS.
//   node bench/from.ts [--quick]       (--quick: 2,000 services; root for the daemon part)
import { type ChildProcess, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildStates } from '../src/model/store.ts';
import { readObjects } from '../src/watch/file.ts';
import { fmtMs, writeSection } from './docs.ts';
import { DUMP_FORMATS, type DumpFormat, dumpObjects, dumpSlice, dumpText, writeDumps } from './from-dump.ts';
import { peakRssMB, ProxyLog, spawnProxyIn, userLaunch } from './measure.ts';
import { deleteNetns, newNetns } from './netns.ts';

const QUICK = process.argv.includes('--quick');
const SERVICES = QUICK ? 2000 : 10000;
const ENDPOINTS = 10;
const REPO = path.resolve(import.meta.dirname, '..');
const NODE = process.execPath;
const BIN = path.join(REPO, 'bin/kube-proxy-ts.js');
/** The command as a user runs it: Node with the flags and environment of bin/kube-proxy-ts.js's first line (what `npx kube-proxy-ts` runs). */
const LAUNCH = userLaunch();
const CLI = [NODE, ...LAUNCH.nodeFlags, BIN];
const CLI_ENV = { ...process.env, ...LAUNCH.env };
/** The goals of issue 13 for this path. */
const GOAL_PARSE_MS = 1000;
const GOAL_RSS_MB = 250;
const GOAL_CHANGE_MS = 500;

const FORMAT_NAME: Record<DumpFormat, string> = { json: 'JSON List', 'yaml-list': 'YAML List', 'yaml-docs': 'YAML documents' };

interface Run {
  ms: number;
  rssMB: number;
}

/** One command as a user runs it: wall time and peak RSS (the whole process) from /usr/bin/time. */
function timed(args: string[]): Run {
  const out = path.join(dir, 'time.txt');
  execFileSync('/usr/bin/time', ['-f', '%e %M', '-o', out, ...CLI, ...args], { stdio: ['ignore', 'ignore', 'ignore'], env: CLI_ENV });
  const [secs, kb] = readFileSync(out, 'utf8').trim().split(/\s+/).map(Number);
  return { ms: secs! * 1000, rssMB: kb! / 1024 };
}

const gc = (globalThis as { gc?: () => void }).gc;

/** The reader alone, in this process: the best of three, and the heap its objects hold (with --expose-gc). */
async function parse(file: string): Promise<{ ms: number; heldMB: number }> {
  let best = Infinity;
  let heldMB = Number.NaN;
  for (let i = 0; i < 3; i++) {
    gc?.();
    const before = process.memoryUsage().heapUsed;
    const t = performance.now();
    const read = await readObjects(file);
    best = Math.min(best, performance.now() - t);
    if (gc) {
      gc();
      heldMB = (process.memoryUsage().heapUsed - before) / 2 ** 20;
    }
    read.objects.length = 0;
  }
  return { ms: best, heldMB };
}

interface DaemonRun {
  firstSyncMs: number;
  changeMs: number;
  rssMB: number;
}

/** The daemon on the file, nftables mode, in a namespace of its own. */
async function daemon(format: DumpFormat, file: string, objects: Record<string, unknown>[]): Promise<DaemonRun> {
  const ns = await newNetns(`from${DUMP_FORMATS.indexOf(format)}`);
  let proxy: ChildProcess | null = null;
  try {
    const t0 = performance.now();
    proxy = spawnProxyIn(ns, [
      '--proxy-mode',
      'nftables',
      '--from',
      file,
      '--hostname-override',
      'node-a',
      '--cluster-cidr',
      '198.19.0.0/16',
      '--iptables-sync-period',
      '1h',
    ]);
    const log = new ProxyLog(proxy);
    const families = new Set<string>();
    await log.next((s) => {
      families.add(s.family);
      return families.size === 2;
    }, 120_000);
    const firstSyncMs = performance.now() - t0;
    // One slice changes (its endpoints' port): the file is written next to it and renamed over it, as an
    // editor or `kubectl get > tmp && mv` does.
    const changed = objects.map((o, i) => (i === SERVICES + 7 ? dumpSlice(7, ENDPOINTS, 1) : o));
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, dumpText(changed, format));
    // A change within --min-sync-period (1 s) of the last sync waits for it, by design (kube-proxy's rate
    // limit): measure a change that comes when the proxy is idle, as a single change in a quiet cluster does.
    await new Promise((r) => setTimeout(r, Math.max(0, 1500 - (performance.now() - t0 - firstSyncMs))));
    const synced = log.next((s) => s.family === 'IPv4', 30_000);
    const t1 = performance.now();
    renameSync(tmp, file);
    const s = await synced;
    const changeMs = s.at - t1;
    const rssMB = peakRssMB(proxy.pid!);
    // The file as it was, for the next format's run.
    writeFileSync(file, dumpText(objects, format));
    return { firstSyncMs, changeMs, rssMB };
  } finally {
    if (proxy && proxy.exitCode === null) {
      const exited = new Promise((r) => proxy!.once('exit', r));
      proxy.kill('SIGTERM');
      await exited;
    }
    await deleteNetns(ns);
  }
}

/** What the rest of a process holds at 10,000 x 10, to say where the megabytes go: the runtime with the
 * proxy's modules loaded, and the model of both families built from the objects (with --expose-gc). */
async function footprint(file: string): Promise<{ runtimeMB: number; modelMB: number }> {
  const script = `import { readFileSync } from 'node:fs'; await import(${JSON.stringify(path.join(REPO, 'src/cli.ts'))}); process.stdout.write(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);`;
  const runtimeMB = Number(execFileSync(NODE, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { encoding: 'utf8' })) / 1024;
  let objects: unknown[] | null = (await readObjects(file)).objects;
  gc?.();
  const before = process.memoryUsage().heapUsed;
  const states = buildStates(objects as never, { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [] });
  // eslint-disable-next-line no-useless-assignment -- the reference is dropped so that gc() collects the objects
  objects = null;
  gc?.();
  const modelMB = gc ? (process.memoryUsage().heapUsed - before) / 2 ** 20 : Number.NaN;
  void states;
  return { runtimeMB, modelMB };
}

const goal = (ok: boolean) => (ok ? 'met' : '**NOT met**');
const mb = (x: number) => `${Math.round(x)} MB`;

const dir = mkdtempSync(path.join(tmpdir(), 'kpt-bench-from-'));
try {
  const objects = dumpObjects(SERVICES, ENDPOINTS);
  const files = writeDumps(dir, SERVICES, ENDPOINTS);
  const rows: string[] = [];
  const daemonRows: string[] = [];
  const root = process.getuid?.() === 0;
  for (const format of DUMP_FORMATS) {
    const { file, bytes } = files[format];
    const common = ['--from', file, '--hostname-override', 'node-a', '--cluster-cidr', '198.19.0.0/16'];
    const p = await parse(file);
    const runs: [string, Run][] = [
      ['state', timed(['state', ...common])],
      ['explain', timed(['explain', ...common, '--to', '198.18.64.7:80', '--src', '198.19.200.1'])],
      ['--dry-run nftables', timed(['--dry-run', '--proxy-mode', 'nftables', ...common])],
      ['--dry-run iptables', timed(['--dry-run', '--proxy-mode', 'iptables', ...common])],
    ];
    const rss = Math.max(...runs.map(([, r]) => r.rssMB));
    rows.push(
      `| ${FORMAT_NAME[format]} (${(bytes / 1e6).toFixed(0)} MB) | ${fmtMs(p.ms)} | ${Number.isNaN(p.heldMB) ? 'n/a' : mb(p.heldMB)} | ${runs.map(([, r]) => `${fmtMs(r.ms)}, ${mb(r.rssMB)}`).join(' | ')} | ${goal(p.ms < GOAL_PARSE_MS)} / ${goal(rss <= GOAL_RSS_MB)} |`,
    );
    console.log(rows.at(-1));
    if (root) {
      const d = await daemon(format, file, objects);
      daemonRows.push(
        `| ${FORMAT_NAME[format]} | ${fmtMs(d.firstSyncMs)} | ${fmtMs(d.changeMs)} | ${mb(d.rssMB)} | ${goal(d.changeMs <= GOAL_CHANGE_MS)} / ${goal(d.rssMB <= GOAL_RSS_MB)} |`,
      );
      console.log(daemonRows.at(-1));
    }
  }
  const fp = await footprint(files.json.file);
  const body = `## The file input path (\`--from\`, \`state\`, \`explain\`, \`--dry-run\`)

\`bench/from.ts\`${QUICK ? ' (--quick)' : ''}: a dump of ${SERVICES.toLocaleString('en')} services x ${ENDPOINTS} endpoints as kubectl prints
it (metadata with uid, resourceVersion, labels and the last-applied-configuration annotation; EndpointSlice
endpoints with targetRef, conditions, nodeName and zone), in three shapes. Parse: the reader alone (split,
parse and reduce to the model's fields), best of three; held: the heap its objects take once read (with
\`--expose-gc\`, as npm run bench runs it). Each command: wall time and peak RSS of the whole
process as a user runs it (\`bin/kube-proxy-ts.js\`, the Node.js runtime included). Goals (issue 13): parse
well under a second, at most ${GOAL_RSS_MB} MB.

| dump | parse | held | state | explain | --dry-run nftables | --dry-run iptables | goal: parse < 1 s / RSS ≤ ${GOAL_RSS_MB} MB |
| --- | --- | --- | --- | --- | --- | --- | --- |
${rows.join('\n')}

Where a command's megabytes go: the Node.js runtime with the proxy's modules loaded is ${mb(fp.runtimeMB)} resident
before it reads anything; the objects read hold the heap in the held column; the model of both families
built from them holds ${Number.isNaN(fp.modelMB) ? 'n/a (run with --expose-gc)' : mb(fp.modelMB)} of heap (src/model); the rest of a peak is what the
garbage collector has not yet returned and the output (the rules text).

${
  daemonRows.length > 0
    ? `The daemon on the same file (\`--from\`, nftables mode, a network namespace of its own): process start to
both families' first sync; one EndpointSlice changed in the file (written beside it and renamed over it) to
the proxy's sync log line; peak RSS (VmHWM). Goals: a change applied in at most ${GOAL_CHANGE_MS} ms, at most ${GOAL_RSS_MB} MB.

| dump | first sync | one change applied | peak RSS | goal: change ≤ ${GOAL_CHANGE_MS} ms / RSS ≤ ${GOAL_RSS_MB} MB |
| --- | --- | --- | --- | --- |
${daemonRows.join('\n')}`
    : '(The daemon part needs root: not run.)'
}`;
  writeSection('from', body);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
