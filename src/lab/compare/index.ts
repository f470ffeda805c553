// `kube-proxy-ts compare`: the same traffic through each mode in turn, in one run, on the scenario
// topology (test/scenarios/README.md). A client pod on node-a talks to a ClusterIP whose one
// endpoint is a pod on node-b; the proxy under test runs on node-a exactly as a user runs it. Each
// mode gets its own copy of the topology with its proxy kept running, so every measurement can
// alternate the modes round by round (the order rotating each round) without restarts: a busy
// machine weighs on every mode alike, and each figure is the median of the rounds. Then each mode
// syncs a synthetic 2,000-service cluster from scratch. Prints a table and writes it into
// docs/benchmarks.md (its compare section only).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { log } from '../../log.ts';
import { MODES, type ModeName } from '../../modes/types.ts';
import { type ProxyProcess, proxyCommand, startProxy } from '../sandbox/proxy.ts';
import { REPO_ROOT } from '../sandbox/scenario.ts';
import type { PodSpec } from '../sandbox/scenario.ts';
import { Topology } from '../sandbox/topology.ts';
import { syntheticCluster } from './cluster.ts';
import { runTraffic, startTrafficServer } from './traffic.ts';
import type { BulkResult, LatencyResult, RateResult } from './traffic.ts';

export interface CompareOptions {
  /** Modes to compare, in order (default: all). */
  modes?: readonly ModeName[];
  /** Rounds; each figure is the median over rounds (default 5). */
  rounds?: number;
  /** Length of one throughput or connection-rate run, seconds (default 2). */
  seconds?: number;
  /** Parallel clients of the connection-rate run: enough to keep every mode busy (default 32). */
  concurrency?: number;
  /** Sequential connections of the latency run (default 400, and at most `seconds` long). */
  latencyConnections?: number;
  /** The synthetic cluster synced from scratch (default 2,000 services x 10 endpoints). */
  syncServices?: number;
  syncEndpoints?: number;
  /** Give up on one sync after this long (default 10 min: the iptables nft backend is slow at this size). */
  syncTimeoutMs?: number;
  /** The file whose compare section gets the table; null writes nothing (default docs/benchmarks.md). */
  docsFile?: string | null;
  /** Progress lines (default: the log). */
  progress?: (line: string) => void;
}

export interface ModeFigures {
  mode: ModeName;
  /** Medians over the rounds; null when the mode failed. */
  bulkBitsPerSecond: number | null;
  connectionsPerSecond: number | null;
  latencyP50Ms: number | null;
  latencyP99Ms: number | null;
  /** The first full sync of the synthetic cluster, as the proxy logged it. */
  syncMs: number | null;
  /** Failed connections during the rate and latency runs, all rounds. */
  connectionErrors: number;
  errors: string[];
}

export interface Goal {
  name: string;
  ratio: number | null;
  min: number;
  met: boolean;
}

export interface CompareResult {
  figures: ModeFigures[];
  goals: Goal[];
  /** Markdown table (also readable in a terminal). */
  table: string;
  /** The docs section, markers included. */
  section: string;
}

// The benchmark cluster, shared with bench/userspace.ts (the same topology, the userspace mode beside proxies in C).
export const SERVICE_IP = '198.18.100.10';
export const SINK_PORT = 5001;
/** Where the server pod's sink listens (the endpoint port of SINK_PORT). */
export const SINK_TARGET_PORT = 7001;
const HELLO_PORT = 80;
export const PODS: PodSpec[] = [
  { name: 'client', node: 'node-a', ip: '198.19.1.12', ports: [] },
  { name: 'server', node: 'node-b', ip: '198.19.2.11', ports: [] },
];

/** The benchmark service: a sink port (throughput) and a hello port (short connections), one endpoint on node-b. */
export function benchObjects(): unknown[] {
  const ports = [
    { name: 'sink', port: SINK_PORT, targetPort: SINK_TARGET_PORT, protocol: 'TCP' },
    { name: 'hello', port: HELLO_PORT, targetPort: 7002, protocol: 'TCP' },
  ];
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'bench', namespace: 'compare' },
      spec: { clusterIP: SERVICE_IP, clusterIPs: [SERVICE_IP], ports },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'bench-1', namespace: 'compare', labels: { 'kubernetes.io/service-name': 'bench' } },
      addressType: 'IPv4',
      ports: ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: p.protocol })),
      endpoints: [{ addresses: ['198.19.2.11'], conditions: { ready: true }, nodeName: 'node-b' }],
    },
  ];
}

export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function message(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '';
}

/** The `"event":"synced"` lines in a proxy's output. */
export function syncDurations(output: string): number[] {
  const out: number[] = [];
  for (const line of output.split('\n')) {
    if (!line.includes('"event":"synced"')) continue;
    try {
      const e = JSON.parse(line) as { durationMs?: unknown };
      if (typeof e.durationMs === 'number') out.push(e.durationMs);
    } catch {
      /* a line cut by the output tail */
    }
  }
  return out;
}

/** Removes every mode's rules from node-a (the CLI's --cleanup), so the next mode starts clean. */
async function cleanNode(topo: Topology, mode: ModeName, file: string): Promise<void> {
  await topo.exec('node-a', [...proxyCommand(mode, file), '--cleanup'], { timeoutMs: 600_000 });
}

async function stopProxy(p: ProxyProcess | null): Promise<void> {
  if (p) await p.stop(15_000);
}

interface Samples {
  bulk: number[];
  rate: number[];
  p50: number[];
  p99: number[];
  connErrors: number;
  errors: string[];
  syncMs: number | null;
}

/** One mode's sandbox: its own topology, traffic server and running proxy. */
interface Bench {
  mode: ModeName;
  topo: Topology;
  proxy: ProxyProcess | null;
  s: Samples;
}

/** `xs` rotated left by `n`: round r starts with a different mode, so no mode always goes first. */
function rotate<T>(xs: readonly T[], n: number): T[] {
  const k = n % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/** The settings of one compare run, defaults filled in. */
interface Settings {
  modes: readonly ModeName[];
  rounds: number;
  seconds: number;
  concurrency: number;
  latencyConnections: number;
  syncServices: number;
  syncEndpoints: number;
  syncTimeoutMs: number;
  progress: (line: string) => void;
}

export async function runCompare(opts: CompareOptions = {}): Promise<CompareResult> {
  const cfg: Settings = {
    modes: opts.modes ?? MODES,
    rounds: opts.rounds ?? 5,
    seconds: opts.seconds ?? 2,
    concurrency: opts.concurrency ?? 32,
    latencyConnections: opts.latencyConnections ?? 400,
    syncServices: opts.syncServices ?? 2000,
    syncEndpoints: opts.syncEndpoints ?? 10,
    syncTimeoutMs: opts.syncTimeoutMs ?? 600_000,
    progress: opts.progress ?? ((line: string) => log.info({ event: 'compare' }, line)),
  };
  const docsFile = opts.docsFile === undefined ? path.join(REPO_ROOT, 'docs', 'benchmarks.md') : opts.docsFile;
  const started = new Date();
  const load = loadavg()[0] ?? 0;

  const dir = mkdtempSync(path.join(tmpdir(), 'kpt-compare-'));
  const benchFile = path.join(dir, 'bench.json');
  const clusterFile = path.join(dir, 'cluster.json');
  writeFileSync(benchFile, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: benchObjects() }));
  writeFileSync(clusterFile, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: syntheticCluster(cfg.syncServices, cfg.syncEndpoints) }));
  const benches: Bench[] = [];
  try {
    benches.push(...(await setUpBenches(cfg, benchFile)));
    await measureTraffic(
      cfg,
      benches.filter((b) => b.s.errors.length === 0),
    );
    await measureSync(cfg, benches, benchFile, clusterFile);
  } finally {
    for (const b of benches) await stopProxy(b.proxy).catch(() => {});
    await Promise.allSettled(benches.map((b) => b.topo.destroy()));
    rmSync(dir, { recursive: true, force: true });
  }

  const figures: ModeFigures[] = benches.map(({ mode, s }) => ({
    mode,
    bulkBitsPerSecond: median(s.bulk),
    connectionsPerSecond: median(s.rate),
    latencyP50Ms: median(s.p50),
    latencyP99Ms: median(s.p99),
    syncMs: s.syncMs,
    connectionErrors: s.connErrors,
    errors: s.errors,
  }));
  const goals = goalsOf(figures);
  const { rounds, seconds, concurrency, syncServices, syncEndpoints } = cfg;
  const table = renderTable(figures, goals, { rounds, seconds, concurrency, syncServices, syncEndpoints });
  const section = renderSection(table, figures, { started, rounds, seconds, concurrency, load, loadAfter: loadavg()[0] ?? 0 });
  if (docsFile) writeSection(docsFile, section);
  return { figures, goals, table, section };
}

/**
 * Every mode gets its own copy of the topology with its proxy running, so that the rounds can alternate
 * modes without restarting anything. A mode whose setup fails carries the error and is left out of the rounds.
 */
async function setUpBenches(cfg: Settings, benchFile: string): Promise<Bench[]> {
  const benches: Bench[] = [];
  for (const mode of cfg.modes) {
    const b: Bench = {
      mode,
      topo: await Topology.create({ pods: PODS }),
      proxy: null,
      s: { bulk: [], rate: [], p50: [], p99: [], connErrors: 0, errors: [], syncMs: null },
    };
    benches.push(b);
    try {
      await startTrafficServer(b.topo, 'pod:server', { cmd: 'serve', name: 'server', sink: SINK_TARGET_PORT, hello: 7002 });
      b.proxy = await startProxy(b.topo, proxyCommand(mode, benchFile), { syncTimeoutMs: 60_000 });
      // Warm up: ARP, conntrack, the proxy's first connections.
      await runTraffic<LatencyResult>(b.topo, 'pod:client', { cmd: 'latency', ip: SERVICE_IP, port: HELLO_PORT, count: 50 });
    } catch (e) {
      b.s.errors.push(`setup: ${message(e)}`);
      cfg.progress(`${mode}: setup failed: ${message(e)}`);
    }
  }
  return benches;
}

/** Bulk throughput, connection rate and connection latency: `rounds` rounds each, modes alternating. */
async function measureTraffic(cfg: Settings, ready: readonly Bench[]): Promise<void> {
  const { rounds, seconds, progress } = cfg;
  const measure = async (what: string, run: (b: Bench) => Promise<string>): Promise<void> => {
    for (let round = 0; round < rounds; round++) {
      for (const b of rotate(ready, round)) {
        try {
          progress(`round ${round + 1}/${rounds} ${what} ${b.mode}: ${await run(b)}`);
        } catch (e) {
          b.s.errors.push(`${what}, round ${round + 1}: ${message(e)}`);
          progress(`round ${round + 1}/${rounds} ${what} ${b.mode} failed: ${message(e)}`);
        }
      }
    }
  };
  await measure('bulk', async (b) => {
    const r = await runTraffic<BulkResult>(b.topo, 'pod:client', { cmd: 'bulk', ip: SERVICE_IP, port: SINK_PORT, seconds });
    b.s.bulk.push(r.bitsPerSecond);
    return `${(r.bitsPerSecond / 1e9).toFixed(2)} Gbit/s`;
  });
  await measure('rate', async (b) => {
    const r = await runTraffic<RateResult>(b.topo, 'pod:client', { cmd: 'rate', ip: SERVICE_IP, port: HELLO_PORT, seconds, concurrency: cfg.concurrency });
    b.s.rate.push(r.perSecond);
    b.s.connErrors += r.errors;
    return `${Math.round(r.perSecond)} conn/s${r.errors ? ` (${r.errors} failed: ${r.errorSamples.join(', ')})` : ''}`;
  });
  await measure('latency', async (b) => {
    const r = await runTraffic<LatencyResult>(b.topo, 'pod:client', {
      cmd: 'latency',
      ip: SERVICE_IP,
      port: HELLO_PORT,
      count: cfg.latencyConnections,
      maxSeconds: seconds * 2,
    });
    b.s.p50.push(r.p50Ms);
    b.s.p99.push(r.p99Ms);
    b.s.connErrors += r.errors;
    return `p50 ${r.p50Ms.toFixed(3)} ms, p99 ${r.p99Ms.toFixed(3)} ms (${r.count} connections)`;
  });
}

/** Sync from scratch: stop the proxy, clean the node, start it on the synthetic cluster, read its first sync time. */
async function measureSync(cfg: Settings, benches: readonly Bench[], benchFile: string, clusterFile: string): Promise<void> {
  for (const b of benches) {
    try {
      await stopProxy(b.proxy);
      b.proxy = null;
      await cleanNode(b.topo, b.mode, benchFile);
      b.proxy = await startProxy(b.topo, proxyCommand(b.mode, clusterFile), { syncTimeoutMs: cfg.syncTimeoutMs });
      b.s.syncMs = syncDurations(b.proxy.output())[0] ?? null;
      cfg.progress(`${b.mode}: first sync of ${cfg.syncServices} services x ${cfg.syncEndpoints} endpoints took ${b.s.syncMs?.toFixed(0) ?? '?'} ms`);
    } catch (e) {
      b.s.errors.push(`sync: ${message(e)}`);
      cfg.progress(`${b.mode}: sync of the synthetic cluster failed: ${message(e)}`);
    } finally {
      await stopProxy(b.proxy).catch((e) => b.s.errors.push(`stop: ${message(e)}`));
      b.proxy = null;
    }
  }
}

function ratioOf(figures: readonly ModeFigures[], key: 'bulkBitsPerSecond' | 'connectionsPerSecond'): number | null {
  const us = figures.find((f) => f.mode === 'userspace')?.[key];
  const ipt = figures.find((f) => f.mode === 'iptables')?.[key];
  return us != null && ipt != null && ipt > 0 ? us / ipt : null;
}

/** The issue's goals: userspace >= 0.6 x iptables' bulk throughput and >= 0.5 x its connection rate. */
export function goalsOf(figures: readonly ModeFigures[]): Goal[] {
  const goal = (name: string, ratio: number | null, min: number): Goal => ({ name, ratio, min, met: ratio !== null && ratio >= min });
  return [
    goal('userspace / iptables bulk throughput', ratioOf(figures, 'bulkBitsPerSecond'), 0.6),
    goal('userspace / iptables connection rate', ratioOf(figures, 'connectionsPerSecond'), 0.5),
  ];
}

const fmt = (v: number | null, digits: number, scale = 1): string => (v === null ? 'failed' : (v / scale).toFixed(digits));

export function renderTable(
  figures: readonly ModeFigures[],
  goals: readonly Goal[],
  o: { rounds: number; seconds: number; concurrency: number; syncServices: number; syncEndpoints: number },
): string {
  const head = ['figure', ...figures.map((f) => f.mode)];
  const hasRatio = figures.some((f) => f.mode === 'userspace') && figures.some((f) => f.mode === 'iptables');
  if (hasRatio) head.push('userspace / iptables');
  const row = (name: string, values: string[], ratio: string): string[] => [name, ...values, ...(hasRatio ? [ratio] : [])];
  const goalText = (g: Goal | undefined): string => (g?.ratio == null ? '-' : `${g.ratio.toFixed(2)} (goal >= ${g.min}: ${g.met ? 'met' : 'NOT met'})`);
  const us = figures.find((f) => f.mode === 'userspace');
  const ipt = figures.find((f) => f.mode === 'iptables');
  const plain = (k: keyof ModeFigures): string => {
    const a = us?.[k];
    const b = ipt?.[k];
    return typeof a === 'number' && typeof b === 'number' && b > 0 ? (a / b).toFixed(2) : '-';
  };
  const rows = [
    row(
      `bulk throughput, one TCP stream, Gbit/s (${o.seconds} s)`,
      figures.map((f) => fmt(f.bulkBitsPerSecond, 2, 1e9)),
      goalText(goals[0]),
    ),
    row(
      `short connections per second (${o.concurrency} clients, ${o.seconds} s)`,
      figures.map((f) => fmt(f.connectionsPerSecond, 0)),
      goalText(goals[1]),
    ),
    row(
      'connection latency p50, ms',
      figures.map((f) => fmt(f.latencyP50Ms, 3)),
      plain('latencyP50Ms'),
    ),
    row(
      'connection latency p99, ms',
      figures.map((f) => fmt(f.latencyP99Ms, 3)),
      plain('latencyP99Ms'),
    ),
    row(
      `sync from scratch, ${o.syncServices.toLocaleString('en-US')} services x ${o.syncEndpoints} endpoints, s`,
      figures.map((f) => fmt(f.syncMs, 2, 1000)),
      plain('syncMs'),
    ),
    row(
      'failed connections (all rounds)',
      figures.map((f) => String(f.connectionErrors)),
      '-',
    ),
  ];
  const lines = [head, head.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`);
  const errors = figures.flatMap((f) => f.errors.map((e) => `- ${f.mode}: ${e}`));
  return [...lines, ...(errors.length > 0 ? ['', 'Errors:', ...errors] : [])].join('\n');
}

function renderSection(
  table: string,
  figures: readonly ModeFigures[],
  o: { started: Date; rounds: number; seconds: number; concurrency: number; load: number; loadAfter: number },
): string {
  const machine = `${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  return [
    '<!-- compare:begin -->',
    '## Mode comparison (`kube-proxy-ts compare`, `npm run compare`)',
    '',
    `The same traffic through each mode in turn, in one run: a client pod on node-a to a ClusterIP whose endpoint`,
    `is a pod on node-b (the scenario topology, one copy per mode), the proxy on node-a started as a user starts`,
    `it. ${o.rounds} rounds, each measurement alternating the modes in rotating order; medians shown. Traffic tools:`,
    `\`src/lab/compare/traffic.ts\` (Node; the same client and server for every mode). Sync: the proxy's own log of its`,
    `first full sync of a synthetic cluster.`,
    `${o.started.toISOString().slice(0, 10)}, ${machine}, load average ${o.load.toFixed(2)} before and ${o.loadAfter.toFixed(2)} after.`,
    '',
    table,
    '',
    figures.some((f) => f.mode === 'userspace')
      ? [
          'The userspace proxy pays for a second TCP connection per client connection and for copying every byte',
          'in and out of a process (two more copies and a second pass through the TCP stack, on one thread): its',
          'ratio to the kernel modes depends on the cores left free (client, server and proxy share them here,',
          'with whatever else runs: see the load average). The most any proxy in the data path gets here (proxies',
          'written in C, `bench/userspace.ts`), where its time goes and what each change bought: the two sections',
          "after this one. The backend sees the proxy's address as the source.",
        ].join('\n')
      : '',
    '<!-- compare:end -->',
  ]
    .filter((l, i, all) => !(l === '' && all[i - 1] === ''))
    .join('\n');
}

/** Replaces the compare section of the docs file (or appends it), leaving every other section alone. */
export function writeSection(file: string, section: string): void {
  const begin = '<!-- compare:begin -->';
  const end = '<!-- compare:end -->';
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  const next = i >= 0 && j > i ? `${text.slice(0, i)}${section}${text.slice(j + end.length)}` : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, next);
}
