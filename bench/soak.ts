// Soak: the daemon as deployed, through the API (test/apiserver), at 2,000 services x 10 endpoints under 100
// EndpointSlice changes per second for 30 minutes, while a client pod opens TCP connections continuously to a
// service whose endpoints never change. It must show zero failed connections, every change applied within 2 s
// (the proxy's own network programming latency, from each slice's last-change-trigger-time), and resident memory
// growing less than 10% after the first 5 minutes (VmRSS sampled every 10 s). Figures go to docs/benchmarks.md.
//
//   node bench/soak.ts [--minutes 30] [--quick (3 minutes)] [--mode nftables|iptables|userspace] [--rate 100]
//
// Network: the sandbox topology (src/lab/sandbox): the proxy and the API server (127.0.0.1) on node-a, the client
// pod on node-a, the pod server "web" on node-b behind ClusterIP 198.18.120.10:80. The topology removes every
// namespace and process it made, also on an error or a signal.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startPodServers } from '../src/lab/sandbox/podserver.ts';
import { binCommand, startProxy } from '../src/lab/sandbox/proxy.ts';
import type { PodSpec } from '../src/lab/sandbox/scenario.ts';
import { ADDRESSES, Topology } from '../src/lab/sandbox/topology.ts';
import type { EndpointSlice, Service } from '../src/model/k8s.ts';
import { MODES, type ModeName } from '../src/modes/types.ts';
import { ApiServerProcess } from '../test/apiserver/process.ts';
import { SliceChanger } from './churn.ts';
import type { ConnectLoopConfig, ConnectReport } from './connect-loop.ts';
import { writeSection } from './docs.ts';
import { CpuMeter, ProxyLog, fmtMs, percentile, rssMB } from './measure.ts';
import { makeObjects } from './synthetic.ts';

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    minutes: { type: 'string' },
    mode: { type: 'string', default: 'nftables' },
    rate: { type: 'string', default: '100' },
  },
  strict: true,
});
if (!(MODES as readonly string[]).includes(flags.mode)) throw new Error(`--mode is one of ${MODES.join(', ')}`);
const MODE = flags.mode as ModeName;
const MINUTES = Number(flags.minutes ?? (flags.quick ? 3 : 30));
const RATE = Number(flags.rate);
const SERVICES = 2000;
const ENDPOINTS = 10;
/** Memory growth is judged after this (5 minutes; a third of a shorter run). */
const WARMUP_MS = Math.min(5, MINUTES / 3) * 60_000;
const RSS_EVERY_MS = 10_000;
const APPLY_GOAL_MS = 2000;
const GROWTH_GOAL = 0.1;
const CONNECT: Omit<ConnectLoopConfig, 'expect'> = { ip: '198.18.120.10', port: 80, rate: 50, timeoutMs: 2000, reportMs: 10_000 };
const PODS: PodSpec[] = [
  { name: 'web', node: 'node-b', ip: '198.19.2.10', ports: [{ port: 8080, protocol: 'tcp' }] },
  { name: 'client', node: 'node-a', ip: '198.19.1.20', ports: [] },
];
const CONNECT_LOOP = path.join(import.meta.dirname, 'connect-loop.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const minutes = (ms: number) => `${Number((ms / 60_000).toFixed(1))} min`;

/** The service the client uses: one endpoint, the pod server "web", never changed during the soak. */
function stableService(): [Service, EndpointSlice] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'stable', namespace: 'soak' },
      spec: { clusterIP: CONNECT.ip, clusterIPs: [CONNECT.ip], ports: [{ name: 'http', port: CONNECT.port, targetPort: 8080, protocol: 'TCP' }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'stable-1', namespace: 'soak', labels: { 'kubernetes.io/service-name': 'stable' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: [PODS[0]!.ip], conditions: { ready: true }, nodeName: 'node-b' }],
    },
  ];
}

/** Least-squares slope of y over x. */
function slope(points: { x: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  const num = points.reduce((a, p) => a + (p.x - mx) * (p.y - my), 0);
  const den = points.reduce((a, p) => a + (p.x - mx) ** 2, 0);
  return den === 0 ? Number.NaN : num / den;
}

const dir = mkdtempSync(path.join(tmpdir(), 'kpt-bench-soak-'));
const objectsFile = path.join(dir, 'objects.json');
const kubeconfig = path.join(dir, 'kubeconfig');
writeFileSync(objectsFile, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [...makeObjects(SERVICES, ENDPOINTS), ...stableService()] }));

const topo = await Topology.create({ pods: PODS });
try {
  process.stderr.write(`soak: ${MODE}, ${SERVICES} services x ${ENDPOINTS} endpoints, ${RATE} changes/s for ${MINUTES} min\n`);
  await startPodServers(topo);
  // Bookmarks about every minute, as kube-apiserver sends them.
  const api = await ApiServerProcess.start({ objectsFile, kubeconfig, bookmarkMs: 60_000, spawn: (argv) => topo.spawn('node-a', argv) });
  const proxy = await startProxy(
    topo,
    binCommand(['--mode', MODE, '--kubeconfig', kubeconfig, '--hostname-override', 'node-a', '--cluster-cidr', ADDRESSES.clusterCIDR]),
    { syncTimeoutMs: 0 },
  );
  const log = new ProxyLog(proxy.child);
  const pid = proxy.child.pid!;
  // Each family logs its own syncs: the services here are IPv4.
  await log
    .next((s) => s.family === 'IPv4', 10 * 60_000)
    .catch((e: Error) => {
      throw new Error(`the proxy did not sync: ${e.message}\n${proxy.output()}`);
    });

  // The client, and one clean report interval before any change: the path works before the soak starts.
  const client = topo.spawn('pod:client', [
    process.execPath,
    '--disable-warning=ExperimentalWarning',
    CONNECT_LOOP,
    JSON.stringify({ ...CONNECT, expect: 'web' } satisfies ConnectLoopConfig),
  ]);
  const reports: ConnectReport[] = [];
  let clientOut = '';
  let clientErr = '';
  let onReport: (() => void) | null = null;
  client.stderr!.setEncoding('utf8').on('data', (d: string) => (clientErr = (clientErr + d).slice(-4000)));
  client.stdout!.setEncoding('utf8').on('data', (d: string) => {
    clientOut += d;
    const lines = clientOut.split('\n');
    clientOut = lines.pop() ?? '';
    for (const l of lines) if (l.trim()) reports.push(JSON.parse(l) as ConnectReport);
    onReport?.();
  });
  const nextReport = (timeoutMs: number) =>
    new Promise<ConnectReport>((resolve, reject) => {
      const n = reports.length;
      const timer = setTimeout(() => reject(new Error(`the client sent no report within ${timeoutMs} ms\n${clientErr}`)), timeoutMs);
      onReport = () => {
        if (reports.length === n) return;
        clearTimeout(timer);
        onReport = null;
        resolve(reports[n]!);
      };
    });
  const baseline = await nextReport(CONNECT.reportMs + 10_000);
  if (baseline.ok === 0 || baseline.failed > 0) throw new Error(`the client cannot reach the service before the soak: ${JSON.stringify(baseline)}`);
  const before = reports.length;

  // The soak.
  const changer = new SliceChanger(api, ENDPOINTS);
  const loadStart = os.loadavg()[0]!;
  const meter = new CpuMeter([pid, api.child.pid!]);
  const t0 = performance.now();
  const rss: { ms: number; mb: number }[] = [{ ms: 0, mb: rssMB(pid) }];
  const sampler = setInterval(() => {
    const ms = performance.now() - t0;
    rss.push({ ms, mb: rssMB(pid) });
    if (rss.length % 6 === 1) {
      const failed = reports.slice(before).reduce((a, r) => a + r.failed, 0);
      const worst = Math.max(0, ...log.between(t0).flatMap((s) => (s.programmingMs === undefined ? [] : [s.programmingMs])));
      process.stderr.write(
        `soak: ${(ms / 60_000).toFixed(0)} min, ${changer.sent} changes, RSS ${rss.at(-1)!.mb.toFixed(0)} MB, slowest change ${fmtMs(worst)}, failed connections ${failed}\n`,
      );
    }
  }, RSS_EVERY_MS);
  await changer.churn(RATE, MINUTES * 60, SERVICES, () => log.exited !== null);
  const churnMs = performance.now() - t0;
  await sleep(3000); // the last changes land
  clearInterval(sampler);
  const cpu = meter.read();
  if (log.exited !== null) throw new Error(`the proxy exited during the soak (${log.exited})\n${proxy.output()}`);
  const last = nextReport(CONNECT.timeoutMs + 10_000);
  client.stdin!.end();
  await last;
  const apiStats = await api.stats();

  // ---- figures ----
  const soakReports = reports.slice(before);
  const ok = soakReports.reduce((a, r) => a + r.ok, 0);
  const failed = soakReports.reduce((a, r) => a + r.failed, 0);
  const reasons: Record<string, number> = {};
  for (const r of soakReports) for (const [k, v] of Object.entries(r.reasons)) reasons[k] = (reasons[k] ?? 0) + v;
  const worstP99 = Math.max(...soakReports.flatMap((r) => (r.p99Ms === null ? [] : [r.p99Ms])));
  const medianP50 = percentile(
    soakReports.flatMap((r) => (r.p50Ms === null ? [] : [r.p50Ms])),
    50,
  );
  const syncs = log.between(t0).filter((s) => s.family === 'IPv4');
  const programmed = syncs.flatMap((s) => (s.programmingMs === undefined ? [] : [s.programmingMs]));
  const late = programmed.filter((ms) => ms > APPLY_GOAL_MS).length;
  // The slowest syncs, with what came just before them: a change that arrives during a long sync waits for it.
  const slowest = syncs
    .map((x, i) => ({ x, before: syncs[i - 1] }))
    .filter(({ x }) => x.programmingMs !== undefined)
    .sort((a, b) => b.x.programmingMs! - a.x.programmingMs!)
    .slice(0, 5)
    .map(
      ({ x, before }) =>
        `${fmtMs(x.programmingMs!)} (a ${x.full ? 'full' : 'partial'} sync of ${fmtMs(x.durationMs)}${before ? `, after a ${before.full ? 'full' : 'partial'} sync of ${fmtMs(before.durationMs)}` : ''})`,
    );
  const fullSyncs = syncs.filter((x) => x.full).map((x) => x.durationMs);
  const syncFailures = log.events.filter((e) => e.event === 'sync-failed').length;
  const warm = rss.find((s) => s.ms >= WARMUP_MS) ?? rss.at(-1)!;
  const afterWarm = rss.filter((s) => s.ms >= warm.ms);
  const end = rss.at(-1)!;
  // Growth compares sustained levels, not single samples: the median of a window just after the warm-up with
  // that of the last window (5 minutes each; a third of what follows the warm-up in a shorter run).
  const windowMs = Math.min(300_000, (end.ms - warm.ms) / 3);
  const rssBaseline = percentile(
    afterWarm.filter((s) => s.ms < warm.ms + windowMs).map((s) => s.mb),
    50,
  );
  const final = percentile(
    rss.filter((s) => s.ms > end.ms - windowMs).map((s) => s.mb),
    50,
  );
  const growth = (final - rssBaseline) / rssBaseline;
  const peak = Math.max(...afterWarm.map((s) => s.mb));
  const peakGrowth = (peak - rssBaseline) / rssBaseline;
  const trendPerHour = slope(afterWarm.map((s) => ({ x: s.ms / 3_600_000, y: s.mb })));
  const fiveMinuteMarks = rss.filter((s, i) => i === 0 || Math.floor(s.ms / 300_000) > Math.floor(rss[i - 1]!.ms / 300_000));
  const proxyRequests = Object.values(apiStats.clients);
  const lists = proxyRequests.reduce((a, c) => a + c.lists, 0);
  const watches = proxyRequests.reduce((a, c) => a + c.watches, 0);
  const eventPosts = proxyRequests.reduce((a, c) => a + c.eventPosts, 0);
  // A relist is the reflector listing a collection again (it logs it); the Node read once at start-up is no relist.
  const relists = log.events.filter((e) => e.event === 'relisted').length;
  const met = (b: boolean) => (b ? 'met' : '**NOT met**');
  const pct = (x: number) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;
  const date = new Date().toISOString().slice(0, 10);

  const body = `## Soak (\`bench/soak.ts\`)

The daemon as deployed (${MODE} mode, default flags), through the list/watch test API server, at ${SERVICES.toLocaleString('en')} services x ${ENDPOINTS}
endpoints, under ${RATE} EndpointSlice changes per second (each replaces every endpoint of one service) for ${MINUTES} minutes, while
a client pod on the same node opens ${CONNECT.rate} TCP connections per second to a ClusterIP whose one endpoint (a pod on the
other node) never changes; a connection fails if it gets no answer from that pod within ${CONNECT.timeoutMs / 1000} s. Change latency is
the proxy's network programming latency (from the slice's \`last-change-trigger-time\`, stamped as the change is handed to the
API server, to the end of the sync that applied it; per sync, its oldest change). Memory is VmRSS every ${RSS_EVERY_MS / 1000} s.
${date}${flags.quick ? ' (quick run)' : ''}.

| figure | value | goal | |
|---|---|---|---|
| changes | ${changer.sent.toLocaleString('en')} in ${minutes(churnMs)} (${(changer.sent / (churnMs / 1000)).toFixed(1)}/s) | ${RATE}/s | |
| connections to the unchanging service | ${ok.toLocaleString('en')} answered, ${failed} failed${
    failed > 0
      ? ` (${Object.entries(reasons)
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ')})`
      : ''
  } | 0 failed | ${met(failed === 0 && ok > 0)} |
| connection time (connect to answer) | median of 10 s medians ${medianP50.toFixed(2)} ms, worst 10 s p99 ${worstP99.toFixed(1)} ms | | |
| change applied (per sync, its oldest change) | p50 ${fmtMs(percentile(programmed, 50))}, p99 ${fmtMs(percentile(programmed, 99))}, max ${fmtMs(Math.max(...programmed))}; ${late} of ${programmed.length} syncs over ${APPLY_GOAL_MS / 1000} s | every change ≤ ${APPLY_GOAL_MS / 1000} s | ${met(late === 0 && programmed.length > 0)} |
| failed syncs | ${syncFailures} | | |
| resident memory: median of the ${minutes(windowMs)} after the first ${minutes(warm.ms)} → median of the last ${minutes(windowMs)} | ${rssBaseline.toFixed(0)} MB → ${final.toFixed(0)} MB (${pct(growth)}) | < ${GROWTH_GOAL * 100}% growth | ${met(growth < GROWTH_GOAL)} |
| resident memory, single samples: at ${minutes(warm.ms)}, the highest after it, at the end | ${warm.mb.toFixed(0)} MB, ${peak.toFixed(0)} MB (${pct(peakGrowth)} over the first median), ${end.mb.toFixed(0)} MB | | |
| memory trend after ${minutes(warm.ms)} (least squares) | ${trendPerHour >= 0 ? '+' : ''}${trendPerHour.toFixed(1)} MB per hour | | |
| CPU | proxy ${(cpu.perProcess[0]! * 100).toFixed(0)}% of a core, API server ${(cpu.perProcess[1]! * 100).toFixed(0)}%, machine ${(cpu.machineBusy * 100).toFixed(0)}% of ${cpu.cores} cores | | |
| the proxy's API requests | ${lists} lists (its 3 collections and its Node at start-up), ${watches} watches, ${eventPosts} Event posted; ${relists} relists | no relists | ${met(relists === 0)} |

- the slowest changes: ${slowest.join('; ')}. Periodic full syncs (\`--sync-period 30s\`): ${fullSyncs.length}, taking p50 ${fmtMs(percentile(fullSyncs, 50))}, max ${fmtMs(Math.max(...fullSyncs))}.
- machine load average (1 min) at the start and at the end: ${loadStart.toFixed(1)}, ${os.loadavg()[0]!.toFixed(1)}; whatever else ran on the machine shared its 2 cores.
- resident memory every 5 minutes (MB): ${fiveMinuteMarks.map((s) => s.mb.toFixed(0)).join(', ')}, end ${end.mb.toFixed(0)}.
- memory growth is judged on sustained levels (medians of ${Math.round(windowMs / RSS_EVERY_MS)} samples), not on one sample: V8 grows its heap in steps and
  returns memory later, so a single 10 s sample can be a transient high (shown in the row below it) that the next minutes give back.`;
  // The recorded figures are those of a full-length soak: a shorter run is a smoke check, printed only.
  if (MINUTES >= 30) writeSection('soak', body);
  else process.stderr.write(`soak: a ${MINUTES}-minute run; docs/benchmarks.md keeps the figures of the last run of 30 minutes or more\n`);
  console.log(body);
  if (failed > 0 || late > 0 || growth >= GROWTH_GOAL) process.exitCode = 1;
} finally {
  await topo.destroy();
  rmSync(dir, { recursive: true, force: true });
}
