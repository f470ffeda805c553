// Benchmark of the nftables mode, in network namespaces this script creates and deletes:
//   node_modules/.bin/node bench/nftables.ts [--quick] [--no-dataplane] [--connects N] [--iptables-backend legacy|nft]
//
// Control plane, for each cluster size in a fresh child process (so that memory figures are its own):
//   1. builds a synthetic cluster as ServicePort objects (one TCP port per service, every tenth a
//      NodePort, half the endpoints on this node; ClusterIPs 198.18.100.0+, endpoints 198.19.x.y);
//   2. live full sync into an empty namespace (SyncResult.durationMs), alternating with the bare
//      `nft -j -f` of the very same batch into another empty namespace (the floor); medians of 3;
//   3. one EndpointSlice change (an endpoint replaced) -> batch applied, 21 times: incremental syncs;
//   4. a periodic resync (changes = null) of the populated table: kernel check plus comparison.
// Data plane (skipped with --no-dataplane), side by side with the iptables mode in one run: the
// scenario topology (src/lab/sandbox), a pod on node-a connecting to a ClusterIP served by another pod on
// node-a, with 10 services installed and with 10,000 (x 10 endpoints), rounds alternating; the time
// from connect() to the connection being established, measured inside the client pod.
// The figures replace the `nftables` section of docs/benchmarks.md.
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { run, runOk } from '../src/exec.ts';
import { setLogLevel } from '../src/log.ts';
import type { DesiredState, Endpoint } from '../src/model/types.ts';
import { createProxier as createIptablesProxier } from '../src/modes/iptables/index.ts';
import { Nft, NftablesProxier, Planner } from '../src/modes/nftables/index.ts';
import type { IptablesBackend, Proxier } from '../src/modes/types.ts';
import { startPodServers } from '../src/lab/sandbox/podserver.ts';
import { newPrefix, sweepStale, Topology } from '../src/lab/sandbox/topology.ts';
import { fmtMs, writeSection } from './docs.ts';
import { endpointAt, servicePortAt, servicePortCluster, stateOf } from './synthetic.ts';

const SCRIPT = fileURLToPath(import.meta.url);
const CHANGES = 21;
const CONFIG = { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [] };

// ---- helpers ------------------------------------------------------------------------------------

const mb = (bytes: number) => Math.round(bytes / 1e6);
const median = (xs: number[]): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const kb = (bytes: number) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} KB`);
const num = (n: number) => n.toLocaleString('en-US');

const prefix = newPrefix();
const made = new Set<string>();

async function newNetns(tag: string): Promise<string> {
  const ns = `${prefix}-${tag}`;
  await runOk(['ip', 'netns', 'add', ns]);
  made.add(ns);
  return ns;
}

async function deleteNetns(ns: string): Promise<void> {
  await run(['ip', 'netns', 'del', ns]);
  made.delete(ns);
}

async function deleteAll(): Promise<void> {
  for (const ns of [...made]) await deleteNetns(ns);
}

// ---- control plane (child process) --------------------------------------------------------------

interface ChildResult {
  services: number;
  endpointsPerService: number;
  elements: number;
  batchBytes: number;
  fullMs: number | null;
  floorMs: number | null;
  planMs: number;
  rssBeforeSyncMB: number;
  rssAfterSyncMB: number;
  heapUsedMB: number;
  peakRssMB: number;
  change: { medianMs: number; p90Ms: number; maxMs: number; bytes: number; maxBytes: number } | null;
  resyncMs: number | null;
  deepResyncMs: number | null;
  notes: string[];
}

async function child(services: number, perService: number): Promise<ChildResult> {
  const servicePorts = servicePortCluster(services, perService);
  let state = stateOf(servicePorts);
  globalThis.gc?.();
  const result: ChildResult = {
    services,
    endpointsPerService: perService,
    elements: 0,
    batchBytes: 0,
    fullMs: null,
    floorMs: null,
    planMs: 0,
    rssBeforeSyncMB: mb(process.memoryUsage().rss),
    rssAfterSyncMB: 0,
    heapUsedMB: 0,
    peakRssMB: 0,
    change: null,
    resyncMs: null,
    deepResyncMs: null,
    notes: [],
  };
  const fulls: number[] = [];
  const floors: number[] = [];
  let live = '';
  let proxier: NftablesProxier | null = null;
  for (let rep = 0; rep < 3; rep++) {
    if (live) await deleteNetns(live);
    await proxier?.close();
    live = await newNetns(`live${rep}`);
    proxier = new NftablesProxier({ config: CONFIG, family: 'IPv4', iptablesBackend: 'auto', netns: live, verifyRulesEvery: 2 });
    const r = await proxier.sync(state, null);
    fulls.push(r.durationMs);
    result.batchBytes = r.bytes;
    if (rep === 0) {
      const mem = process.memoryUsage();
      result.rssAfterSyncMB = mb(mem.rss);
      result.heapUsedMB = mb(mem.heapUsed);
      result.peakRssMB = mb(process.resourceUsage().maxRSS * 1024);
    }
    // The floor: the same batch (a fresh node's full batch: what the sync applied) by the bare binary into
    // another empty namespace. Made after the sync, so that the sync's figures carry neither its time nor its memory.
    let batch = proxier.dryRun(state);
    const floorNs = await newNetns(`floor${rep}`);
    const nft = new Nft({ netns: floorNs });
    const t1 = performance.now();
    await nft.apply(batch);
    floors.push(performance.now() - t1);
    await nft.close();
    await deleteNetns(floorNs);
    // Drop the batch text before the next repetition so memory figures do not carry it.
    // eslint-disable-next-line no-useless-assignment
    batch = '';
  }
  result.fullMs = median(fulls);
  result.floorMs = median(floors);
  {
    // Planning alone (no nft): the record and the batch's text (made piece by piece, as the proxier writes it), and the element count.
    const t = performance.now();
    const plan = new Planner({ family: 'IPv4', config: CONFIG }).full(state);
    let chars = 0;
    for (const piece of plan.batch.chunks()) chars += piece.length;
    result.planMs = performance.now() - t;
    if (chars === 0) throw new Error('an empty batch');
    result.elements = plan.elementsAdded;
  }

  // One EndpointSlice change at a time: an endpoint of one service replaced.
  const times: number[] = [];
  const sizes: number[] = [];
  for (let n = 0; n < CHANGES; n++) {
    const i = Math.floor((n * services) / CHANGES);
    const key = `bench/svc${i}:http`;
    const sp = servicePorts.get(key)!;
    const eps = [...sp.clusterEndpoints.slice(1), endpointAt(services * perService + n, true)];
    servicePorts.set(key, servicePortAt(i, eps));
    state = stateOf(servicePorts);
    const t0 = performance.now();
    const r = await proxier!.sync(state, { added: [], updated: [key], removed: [], previous: new Map([[key, sp]]) });
    times.push(performance.now() - t0);
    if (r.full) result.notes.push('an endpoint change ran as a full sync');
    sizes.push(r.bytes);
  }
  result.change = { medianMs: median(times)!, p90Ms: pct(times, 0.9), maxMs: Math.max(...times), bytes: median(sizes)!, maxBytes: Math.max(...sizes) };

  // Periodic resyncs of the populated table: the first checks the chains, the second also counts rules.
  for (const which of ['resyncMs', 'deepResyncMs'] as const) {
    const t0 = performance.now();
    const r = await proxier!.sync(state, null);
    result[which] = performance.now() - t0;
    if (r.bytes !== 0) result.notes.push(`a periodic resync sent ${r.bytes} bytes`);
  }
  await proxier!.close();
  await deleteAll();
  return result;
}

function runChild(services: number, perService: number): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const argv = ['--expose-gc', '--disable-warning=ExperimentalWarning', SCRIPT, '--child', String(services), String(perService)];
    const c = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, KUBE_PROXY_TS_LOG_LEVEL: 'warn' } });
    let out = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.on('error', reject);
    c.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{"services"'));
      if (code !== 0 || !line) reject(new Error(`child ${services}x${perService} failed (exit ${code}): ${out.slice(-500)}`));
      else resolve(JSON.parse(line) as ChildResult);
    });
  });
}

// ---- data plane ---------------------------------------------------------------------------------

/** In the client pod: `count` connects, each timed from connect() to established; prints microseconds. */
async function connectLoop(ip: string, port: number, count: number): Promise<void> {
  const samples: number[] = [];
  const once = () =>
    new Promise<number>((resolve, reject) => {
      const t0 = process.hrtime.bigint();
      const s = connect({ host: ip, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error('connect timed out'));
      }, 3000);
      s.once('connect', () => {
        const us = Number(process.hrtime.bigint() - t0) / 1000;
        clearTimeout(timer);
        s.destroy();
        resolve(us);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  for (let i = 0; i < 50; i++) await once(); // warm-up
  for (let i = 0; i < count; i++) samples.push(await once());
  process.stdout.write(`${JSON.stringify({ samples })}\n`);
}

const PROBE_IP = '198.18.99.10';

/** The measured service (last in key order, behind every other service in kube-proxy's iptables order) and `others` more. */
function dataPlaneState(others: number, perService: number): DesiredState {
  const m = servicePortCluster(others, perService, 128);
  const a1: Endpoint = {
    ip: '198.19.1.11',
    port: 8080,
    id: '198.19.1.11:8080',
    nodeName: 'node-a',
    zone: null,
    isLocal: true,
    ready: true,
    serving: true,
    terminating: false,
    zoneHints: [],
    nodeHints: [],
  };
  // servicePortAt(0, ...) has no NodePort, so the endpoint decision it made holds for the probe service too.
  const probe = { ...servicePortAt(0, [a1], 0, 'zz-probe'), clusterIPs: [PROBE_IP], key: 'zz-probe/probe:http' };
  m.set(probe.key, probe);
  return stateOf(m);
}

interface PlaneRow {
  mode: string;
  services: number;
  installMs: number;
  medianUs: number;
  p90Us: number;
}

async function dataPlane(connects: number, iptablesBackend: IptablesBackend): Promise<PlaneRow[]> {
  await sweepStale();
  const topo = await Topology.create({
    pods: [
      { name: 'a1', node: 'node-a', ip: '198.19.1.11', ports: [{ port: 8080, protocol: 'tcp' }] },
      { name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] },
    ],
  });
  const rows: PlaneRow[] = [];
  try {
    await startPodServers(topo);
    const states = new Map([
      [10, dataPlaneState(9, 10)],
      [10_000, dataPlaneState(9_999, 10)],
    ]);
    const modes: [string, (netns: string) => Proxier][] = [
      ['nftables', (netns) => new NftablesProxier({ config: CONFIG, family: 'IPv4', iptablesBackend: 'auto', netns })],
      [
        `iptables (${iptablesBackend})`,
        (netns) => createIptablesProxier({ config: CONFIG, family: 'IPv4', iptablesBackend, netns, restoreTimeoutMs: 30 * 60_000 }),
      ],
    ];
    for (const [mode, make] of modes) {
      const perSize = new Map<number, { install: number[]; samples: number[] }>();
      let last: Proxier | null = null;
      // Rounds alternate the sizes, so that a change of machine load hits both.
      for (const size of [10, 10_000, 10, 10_000]) {
        // Each round installs into an empty table.
        await last?.cleanup();
        await last?.close();
        const p = make(topo.ns('node-a'));
        last = p;
        const t = performance.now();
        await p.sync(states.get(size)!, null);
        const install = performance.now() - t;
        const r = await topo.execOk(
          'pod:a2',
          [process.execPath, '--disable-warning=ExperimentalWarning', SCRIPT, '--connect', PROBE_IP, '80', String(connects)],
          {
            timeoutMs: 10 * 60_000,
          },
        );
        const { samples } = JSON.parse(r.stdout) as { samples: number[] };
        const e = perSize.get(size) ?? { install: [], samples: [] };
        e.install.push(install);
        e.samples.push(...samples);
        perSize.set(size, e);
        process.stderr.write(`  ${mode} ${num(size)} services: median ${median(samples)!.toFixed(0)} us (install ${fmtMs(install)})\n`);
      }
      await last?.cleanup();
      await last?.close();
      for (const [size, e] of perSize)
        rows.push({ mode, services: size, installMs: median(e.install)!, medianUs: median(e.samples)!, p90Us: pct(e.samples, 0.9) });
    }
  } finally {
    await topo.destroy();
  }
  return rows;
}

// ---- report -------------------------------------------------------------------------------------

function report(results: ChildResult[], plane: PlaneRow[] | null, opts: { quick: boolean; connects: number; iptablesBackend: IptablesBackend }): string {
  const date = new Date().toISOString().slice(0, 10);
  const lines: string[] = [];
  lines.push('## nftables mode (`bench/nftables.ts`)', '');
  lines.push(
    `Synthetic clusters (one TCP port per service, every tenth a NodePort, half the endpoints on this node), each size in a fresh process and`,
    `empty network namespaces. ${date}, Node ${process.version}, ${NFT_VERSION}, kernel ${KERNEL}${opts.quick ? ', --quick' : ''}.`,
    '',
    '- live full sync: `proxier.sync(state, null)` into an empty namespace (plan, temporary files, `nft -j -f`: from 10,000 elements on',
    '  in steps, each part of elements applied while the rest is planned, as on a node without the table); floor: the bare `nft -j -f` of',
    '  the very same rules as one batch into another empty namespace; medians of 3. plan: building the batch and the record alone.',
    '- endpoint change: one service port with an endpoint replaced -> `sync(state, {updated: [key]})` returned, median of 21; change',
    '  batch: its size (median, max). resync: a periodic `sync(state, null)` of the populated table: chains checked and every service',
    '  port compared with the record (it sent nothing); with rule counts: the same when the rules are counted too (every 10th by default).',
    '- memory: resident set of the process holding the cluster after the first full sync (before it: the cluster alone).',
    '- Every nft command runs through `ip netns exec`, for the floor as for the proxier.',
    '',
    '| cluster | elements | batch | plan | live full sync | floor | ratio | endpoint change | change batch | resync | with rule counts | memory |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const r of results) {
    const ratio = r.fullMs !== null && r.floorMs ? (r.fullMs / r.floorMs).toFixed(2) : '-';
    const change = r.change ? `${fmtMs(r.change.medianMs)} (p90 ${fmtMs(r.change.p90Ms)}, max ${fmtMs(r.change.maxMs)})` : '-';
    lines.push(
      `| ${num(r.services)} x ${r.endpointsPerService} | ${num(r.elements)} | ${kb(r.batchBytes)} | ${fmtMs(r.planMs)} | ${r.fullMs === null ? '-' : fmtMs(r.fullMs)} | ${r.floorMs === null ? '-' : fmtMs(r.floorMs)} | ${ratio} | ${change} | ${r.change ? `${kb(r.change.bytes)} (max ${kb(r.change.maxBytes)})` : '-'} | ${r.resyncMs === null ? '-' : fmtMs(r.resyncMs)} | ${r.deepResyncMs === null ? '-' : fmtMs(r.deepResyncMs)} | ${r.rssAfterSyncMB} MB (cluster alone ${r.rssBeforeSyncMB} MB, peak ${r.peakRssMB} MB, heap ${r.heapUsedMB} MB) |`,
    );
  }
  lines.push('');
  const goal = (r: ChildResult, limit: number) => (r.fullMs === null ? 'not measured' : r.fullMs <= limit ? 'met' : 'NOT met');
  for (const r of results) {
    const limit = r.services >= 10_000 ? 3000 : 500;
    lines.push(
      `- full sync, ${num(r.services)} x ${r.endpointsPerService}: ${r.fullMs === null ? '-' : fmtMs(r.fullMs)} (goal <= ${fmtMs(limit)}): ${goal(r, limit)}`,
    );
  }
  for (const r of results) {
    if (r.change)
      lines.push(
        `- one change applied, ${num(r.services)} x ${r.endpointsPerService}: median ${fmtMs(r.change.medianMs)} (goal <= 100 ms): ${r.change.medianMs <= 100 ? 'met' : 'NOT met'}`,
      );
  }
  if (results.length === 2 && results[0]!.change && results[1]!.change) {
    lines.push(
      `- change batch (median of 21) at ${num(results[0]!.services)} and ${num(results[1]!.services)} services: ${results[0]!.change.bytes} and ${results[1]!.change.bytes} bytes. ` +
        'The changed service ports differ (past 65,000 endpoints the synthetic ports become 8081, so some have two ports and one more map entry per endpoint); ' +
        'the tests compare the same change at two cluster sizes byte for byte.',
    );
  }
  for (const r of results) for (const n of r.notes) lines.push(`- note (${num(r.services)} x ${r.endpointsPerService}): ${n}`);
  if (plane) {
    lines.push(
      '',
      '### Data plane: connection setup',
      '',
      `The scenario topology (src/lab/sandbox): pod a2 on node-a connects to a ClusterIP (TCP) served by pod a1 on node-a; time from`,
      `connect() to established, measured in the pod (Node.js, so it includes the event loop), ${num(opts.connects)} connections per round after`,
      `50 warm-up ones, rounds 10 / 10,000 / 10 / 10,000 services (x 10 endpoints), each installed by a full sync into an empty table.`,
      `The measured service sorts last in the iptables mode's KUBE-SERVICES chain (its worst case; kube-proxy's order is arbitrary).`,
      `The iptables mode runs on the ${opts.iptablesBackend} backend (\`--iptables-backend\`; restoring 10,000 x 10 on nf_tables takes many minutes).`,
      '',
      '| mode | services | install (full sync) | connect median | connect p90 | ratio to 10 services |',
      '|---|---|---|---|---|---|',
    );
    for (const r of plane) {
      const base = plane.find((x) => x.mode === r.mode && x.services === 10)!;
      lines.push(
        `| ${r.mode} | ${num(r.services)} | ${fmtMs(r.installMs)} | ${r.medianUs.toFixed(0)} us | ${r.p90Us.toFixed(0)} us | ${(r.medianUs / base.medianUs).toFixed(2)} |`,
      );
    }
    const nft10 = plane.find((r) => r.mode === 'nftables' && r.services === 10);
    const nft10k = plane.find((r) => r.mode === 'nftables' && r.services === 10_000);
    if (nft10 && nft10k) {
      const ratio = nft10k.medianUs / nft10.medianUs;
      lines.push('', `- nftables connection setup, 10,000 / 10 services: ${ratio.toFixed(2)} (goal <= 1.1): ${ratio <= 1.1 ? 'met' : 'NOT met'}`);
    }
  }
  return lines.join('\n');
}

let NFT_VERSION = 'nft';
let KERNEL = '';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (network namespaces, nft)');
  setLogLevel('warn');
  const quick = process.argv.includes('--quick');
  const connects = Number(arg('--connects') ?? (quick ? 500 : 2000));
  const iptablesBackend = (arg('--iptables-backend') ?? 'legacy') as IptablesBackend;
  NFT_VERSION = (await runOk(['nft', '--version'])).stdout.trim().replace(/ \(.*\)$/, '');
  KERNEL = (await runOk(['uname', '-r'])).stdout.trim();
  const sizes: [number, number][] = quick
    ? [[2000, 10]]
    : [
        [2000, 10],
        [10_000, 10],
      ];
  const results: ChildResult[] = [];
  for (const [s, e] of sizes) {
    process.stderr.write(`nftables bench: ${num(s)} x ${e}...\n`);
    results.push(await runChild(s, e));
  }
  let plane: PlaneRow[] | null = null;
  if (!process.argv.includes('--no-dataplane')) {
    process.stderr.write(`nftables bench: data plane, nftables and iptables (${iptablesBackend})...\n`);
    plane = await dataPlane(connects, iptablesBackend);
  }
  const section = report(results, plane, { quick, connects, iptablesBackend });
  writeSection('nftables', section);
  process.stdout.write(`${section}\n`);
}

async function cleanupAndExit(code: number): Promise<never> {
  await deleteAll();
  process.exit(code);
}

if (process.argv[2] === '--child') {
  process.on('SIGINT', () => void cleanupAndExit(130));
  child(Number(process.argv[3]), Number(process.argv[4])).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
    async (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
      await cleanupAndExit(1);
    },
  );
} else if (process.argv[2] === '--connect') {
  connectLoop(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5])).catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  });
} else {
  process.on('SIGINT', () => void cleanupAndExit(130));
  main().catch(async (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    await cleanupAndExit(1);
  });
}
