// Many nodes against one API server: N network namespaces ("nodes"), one kube-proxy-ts process each (nftables
// mode, default flags, its own --hostname-override), all watching one list/watch test API server
// (test/apiserver) over a bridge, at 10,000 services x 10 endpoints. It measures what a cluster operator
// sees across nodes: network programming latency of single EndpointSlice changes and under churn (from the
// slices' last-change-trigger-time to each node's sync log line, as kube-proxy's
// network_programming_duration_seconds), what each node asks of the API server (lists, watches, bytes),
// that a dropped watch resumes from its resourceVersion instead of relisting, and what a 410 (history lost)
// costs instead. From those per-node figures it projects a 5,000-node cluster into docs/benchmarks.md.
//
//   node bench/multinode.ts [--quick] [--nodes N] [--rate CHANGES_PER_S] [--services N] [--mode nftables]
//
// Network (addresses from 198.18.0.0/15): namespace `lan` holds bridge br0 (198.18.0.1, the API server);
// node i's eth0 is 198.18.0.(10+i)/24, a veth whose peer is a port of br0. Everything it starts is stopped and
// every namespace removed at exit, on an error and on SIGINT/SIGTERM (bench/netns.ts, test/apiserver/process.ts).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runOk } from '../src/exec.ts';
import type { ClientStats } from '../test/apiserver/server.ts';
import { type ApiServerStats, ApiServerProcess } from '../test/apiserver/process.ts';
import { SliceChanger } from './churn.ts';
import { writeSection } from './docs.ts';
import { binCommand, CpuMeter, ProxyLog, type SyncLine, fmtBytes, fmtMs, percentile, rssMB } from './measure.ts';
import { deleteNetns, newNetns } from './netns.ts';
import { makeObjects } from './synthetic.ts';

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    nodes: { type: 'string' },
    rate: { type: 'string' },
    services: { type: 'string' },
    mode: { type: 'string', default: 'nftables' },
  },
  strict: true,
});
const QUICK = flags.quick;
const MODE = flags.mode;
const NODES = Number(flags.nodes ?? 10);
const SERVICES = Number(flags.services ?? (QUICK ? 2000 : 10_000));
const ENDPOINTS = 10;
const SINGLE_CHANGES = QUICK ? 10 : 30;
const CHURN_RATE = Number(flags.rate ?? 100);
const CHURN_SECONDS = QUICK ? 20 : 60;
/** Nothing changes for this long: how often do quiet watches come back? */
const QUIET_SECONDS = QUICK ? 35 : 65;
/** kube-apiserver sends each watch that allows them a bookmark about every minute (its cacher's bookmarkFrequency). */
const BOOKMARK_MS = 60_000;
/** After a dropped watch, this long is judged apart from the steady churn. */
const AFTER_DROP_MS = 10_000;
/** Single-change samples slower than this are looked at: did they wait for a periodic full sync? */
const SLOW_MS = 250;
/** Under churn every change waits for the next sync (--min-sync-period 1s): slower than this is looked at. */
const CHURN_SLOW_MS = 2000;
const PROJECTED_NODES = 5000;
const API_IP = '198.18.0.1';
const API_PORT = 6443;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface NodeProcess {
  name: string;
  ip: string;
  child: ChildProcess;
  log: ProxyLog;
  stderr: string;
}

/** Processes started here: SIGKILLed when this process exits however it exits (the namespaces go with netns.ts). */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function spawnIn(ns: string, argv: string[]): ChildProcess {
  // `ip netns exec` execs the program: the child's pid is the program's own (for /proc figures and kill).
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.on('error', (e) => process.stderr.write(`spawn in ${ns} failed: ${e.message}\n`));
  return child;
}

async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  child.kill('SIGTERM');
  await exited;
  clearTimeout(timer);
}

/** The LAN and N node namespaces on it. */
async function buildNetwork(n: number, made: string[]): Promise<{ lan: string; nodes: { name: string; ns: string; ip: string }[] }> {
  const lan = await newNetns('lan');
  made.push(lan);
  await runOk(['ip', '-n', lan, 'link', 'add', 'br0', 'type', 'bridge']);
  await runOk(['ip', '-n', lan, 'addr', 'add', `${API_IP}/24`, 'dev', 'br0']);
  await runOk(['ip', '-n', lan, 'link', 'set', 'br0', 'up']);
  const nodes = [];
  for (let i = 0; i < n; i++) {
    const ns = await newNetns(`n${i}`);
    made.push(ns);
    const ip = `198.18.0.${10 + i}`;
    await runOk(['ip', '-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `n${i}`, 'netns', lan]);
    await runOk(['ip', '-n', lan, 'link', 'set', `n${i}`, 'master', 'br0']);
    await runOk(['ip', '-n', lan, 'link', 'set', `n${i}`, 'up']);
    await runOk(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await runOk(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
    nodes.push({ name: `node-${i}`, ns, ip });
  }
  return { lan, nodes };
}

function startProxy(node: { name: string; ns: string; ip: string }, kubeconfig: string): NodeProcess {
  const child = spawnIn(node.ns, binCommand(['--mode', MODE, '--kubeconfig', kubeconfig, '--hostname-override', node.name, '--cluster-cidr', '198.19.0.0/16']));
  const p: NodeProcess = { name: node.name, ip: node.ip, child, log: new ProxyLog(child), stderr: '' };
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    p.stderr = (p.stderr + d).slice(-4000);
  });
  child.once('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`${node.name}: the proxy exited (${signal ?? `code ${code}`})\n${p.stderr}\n`);
  });
  return p;
}
let stopping = false;

const ipv4 = (s: SyncLine) => s.family === 'IPv4';

/** Each node's next IPv4 sync that carried a change (it has programmingMs), read after now. */
function nextProgrammed(nodes: NodeProcess[], timeoutMs: number): Promise<SyncLine[]> {
  return Promise.all(nodes.map((n) => n.log.next((s) => ipv4(s) && s.programmingMs !== undefined, timeoutMs)));
}

/** The per-client accounting of the nodes, with what a second snapshot adds to a first. */
function perNode(nodes: NodeProcess[], from: ApiServerStats | null, to: ApiServerStats): ClientStats[] {
  return nodes.map((n) => {
    const a = from?.clients[n.ip];
    const b = to.clients[n.ip];
    const out = {} as ClientStats;
    for (const k of Object.keys(b ?? {}) as (keyof ClientStats)[]) out[k] = (b?.[k] ?? 0) - (k === 'openWatches' ? 0 : (a?.[k] ?? 0));
    return out;
  });
}

/** Polls the API server until every node holds as many watches as before and has made as many new ones. */
async function allWatching(api: ApiServerProcess, nodes: NodeProcess[], before: ApiServerStats): Promise<{ stats: ApiServerStats; ms: number }> {
  const t0 = performance.now();
  for (;;) {
    const stats = await api.stats();
    const back = nodes.every((n) => {
      const b = before.clients[n.ip]!;
      const now = stats.clients[n.ip]!;
      return now.openWatches >= b.openWatches && now.watches - b.watches >= b.openWatches;
    });
    if (back) return { stats, ms: performance.now() - t0 };
    if (performance.now() - t0 > 120_000) throw new Error('the nodes did not re-establish their watches within 2 minutes');
    await sleep(50);
  }
}

/** "min–max" (or one value) of a figure across nodes. */
function range(xs: number[], fmt: (x: number) => string = String): string {
  const lo = fmt(Math.min(...xs));
  const hi = fmt(Math.max(...xs));
  return lo === hi ? lo : `${lo}–${hi}`;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

// ---- the run ----

const dir = mkdtempSync(path.join(tmpdir(), 'kpt-bench-multinode-'));
const objectsFile = path.join(dir, 'objects.json');
const kubeconfig = path.join(dir, 'kubeconfig');
const nodeObjects = Array.from({ length: NODES }, (_, i) => ({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: `node-${i}` },
  status: { addresses: [{ type: 'InternalIP', address: `198.18.0.${10 + i}` }] },
}));
writeFileSync(objectsFile, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [...makeObjects(SERVICES, ENDPOINTS), ...nodeObjects] }));

let api: ApiServerProcess | null = null;
const nodes: NodeProcess[] = [];
const namespaces: string[] = [];
try {
  process.stderr.write(`multinode: ${NODES} nodes, ${SERVICES} services x ${ENDPOINTS} endpoints\n`);
  const net = await buildNetwork(NODES, namespaces);
  api = await ApiServerProcess.start({
    objectsFile,
    kubeconfig,
    host: API_IP,
    port: API_PORT,
    bookmarkMs: BOOKMARK_MS,
    spawn: (argv) => spawnIn(net.lan, argv),
  });
  const changer = new SliceChanger(api, ENDPOINTS);

  // 1. Start-up: every node at once, as after a DaemonSet rollout.
  const t0 = performance.now();
  const startCpu = new CpuMeter([]);
  for (const n of net.nodes) nodes.push(startProxy(n, kubeconfig));
  const first = await Promise.all(nodes.map((n) => n.log.next(ipv4, 15 * 60_000)));
  const firstSyncMs = first.map((s) => s.at - t0);
  const startBusy = startCpu.read().machineBusy;
  process.stderr.write(`multinode: all ${NODES} nodes synced after ${fmtMs(Math.max(...firstSyncMs))}\n`);
  await sleep(3000);
  const afterStart = await api.stats();

  // 2. Quiet: no change at all. Watches stay open; those that come back anyway show in the request counts.
  await sleep(QUIET_SECONDS * 1000);
  const afterQuiet = await api.stats();
  const quiet = perNode(nodes, afterStart, afterQuiet);
  const quietWatchesPerMinute = sum(quiet.map((c) => c.watches)) / NODES / (QUIET_SECONDS / 60);

  // 3. Single changes, spaced so that each gets a sync of its own on every node.
  const single: number[] = [];
  const slowestNode: number[] = [];
  /** Samples over SLOW_MS, and how many of them waited for a periodic full sync (one ended while it waited). */
  let slow = 0;
  let slowBehindFull = 0;
  for (let k = 0; k < SINGLE_CHANGES; k++) {
    const wait = nextProgrammed(nodes, 60_000);
    const sentAt = performance.now();
    changer.change((k * 7919) % SERVICES);
    const lines = await wait;
    const got = lines.map((s) => s.programmingMs!);
    single.push(...got);
    lines.forEach((line, i) => {
      if (line.programmingMs! <= SLOW_MS) return;
      slow++;
      if (nodes[i]!.log.between(sentAt, line.at).some((x) => ipv4(x) && x.full)) slowBehindFull++;
    });
    slowestNode.push(Math.max(...got));
    await sleep(1500);
  }
  process.stderr.write(`multinode: single changes p50 ${fmtMs(percentile(single, 50))} p99 ${fmtMs(percentile(single, 99))}\n`);

  // 4. Churn, with every watch dropped halfway through: each node must resume its watches from their
  //    resourceVersion (no list), and catch up on the events it missed from the server's history.
  const meter = new CpuMeter([api.child.pid!, ...nodes.map((n) => n.child.pid!)]);
  const beforeChurn = await api.stats();
  const churnStart = performance.now();
  const sentBefore = changer.sent;
  const churn = changer.churn(CHURN_RATE, CHURN_SECONDS, SERVICES);
  await sleep((CHURN_SECONDS * 1000) / 2);
  const beforeDrop = await api.stats();
  const sentAtDrop = changer.sent;
  const dropAt = performance.now();
  const dropped = await api.command<number>('drop-watches');
  const { stats: afterResume, ms: resumedMs } = await allWatching(api, nodes, beforeDrop);
  await churn;
  const churnEnd = performance.now();
  const churnCpu = meter.read();
  await sleep(3000); // the last changes land
  const steady = nodes.flatMap((n) =>
    n.log
      .between(churnStart + 2000, dropAt)
      .filter(ipv4)
      .flatMap((s) => (s.programmingMs === undefined ? [] : [s.programmingMs])),
  );
  const afterDrop = nodes.flatMap((n) =>
    n.log
      .between(dropAt, dropAt + AFTER_DROP_MS)
      .filter(ipv4)
      .flatMap((s) => (s.programmingMs === undefined ? [] : [s.programmingMs])),
  );
  const syncsPerNode = nodes.map((n) => n.log.between(churnStart, churnEnd).filter(ipv4).length);
  // Steady-churn syncs that carried a change older than CHURN_SLOW_MS: were they, or did they follow, a periodic full sync?
  let churnSlow = 0;
  let churnSlowFull = 0;
  for (const n of nodes) {
    const all = n.log.syncs.filter(ipv4);
    all.forEach((x, i) => {
      if (x.at < churnStart + 2000 || x.at >= dropAt || (x.programmingMs ?? 0) <= CHURN_SLOW_MS) return;
      churnSlow++;
      if (x.full || all[i - 1]?.full) churnSlowFull++;
    });
  }
  const churnSent = changer.sent - sentBefore;
  const churnSeconds = (churnEnd - churnStart) / 1000;
  const steadyBytesPerChange = perNode(nodes, beforeChurn, beforeDrop).map((c) => c.watchBytes / (sentAtDrop - sentBefore));
  const dropDelta = perNode(nodes, beforeDrop, afterResume);
  process.stderr.write(`multinode: churn p99 ${fmtMs(percentile(steady, 99))}, after the drop max ${fmtMs(Math.max(...afterDrop))}\n`);

  // 5. The history lost (410 Expired on every watch, as after an etcd compaction overtook them): every node
  //    must relist. Not a fault of the proxy: what it costs the API server, for the projection.
  const beforeExpiry = await api.stats();
  const relistsBefore = nodes.map((n) => n.log.events.filter((e) => e.event === 'relisted').length);
  const expireAt = performance.now();
  await api.command('compact');
  const expired = await api.command<number>('expire-watches');
  const relistedMs = await Promise.all(
    nodes.map(async (n, i) => {
      const deadline = performance.now() + 5 * 60_000;
      while (n.log.events.filter((e) => e.event === 'relisted').length < relistsBefore[i]! + 3) {
        if (performance.now() > deadline) throw new Error(`${n.name} did not relist after the 410`);
        await sleep(100);
      }
      return performance.now() - expireAt;
    }),
  );
  await sleep(5000);
  const wait = nextProgrammed(nodes, 60_000);
  changer.change(1);
  const afterExpiryChange = (await wait).map((s) => s.programmingMs!);
  const afterExpiry = await api.stats();
  const expiryDelta = perNode(nodes, beforeExpiry, afterExpiry);
  const whole = perNode(nodes, null, afterExpiry);
  const startup = perNode(nodes, null, afterStart);
  const rss = nodes.map((n) => rssMB(n.child.pid!));

  // ---- report ----
  const date = new Date().toISOString().slice(0, 10);
  const cores = churnCpu.cores;
  const [apiCpu, ...proxyCpu] = churnCpu.perProcess as [number, ...number[]];
  const saturated = churnCpu.machineBusy >= 0.9;
  const latencyRow = (what: string, xs: number[]) =>
    `| ${what} | ${fmtMs(percentile(xs, 50))} | ${fmtMs(percentile(xs, 99))} | ${fmtMs(Math.max(...xs))} | ${xs.length} |`;
  const statRow = (what: string, cs: ClientStats[]) =>
    `| ${what} | ${range(cs.map((c) => c.lists))} | ${range(cs.map((c) => c.watches))} | ${range(cs.map((c) => c.errors))} | ${range(
      cs.map((c) => c.listBytes),
      fmtBytes,
    )} | ${range(
      cs.map((c) => c.watchBytes),
      fmtBytes,
    )} | ${range(cs.map((c) => c.watchEvents))} (${range(cs.map((c) => c.replayedEvents))}) |`;

  const listBytes = sum(startup.map((c) => c.listBytes)) / NODES;
  const bytesPerChange = sum(steadyBytesPerChange) / NODES;
  const relistBytes = sum(expiryDelta.map((c) => c.listBytes)) / NODES;
  const startupLists = Math.max(...startup.map((c) => c.lists));
  const relistsPerNode = Math.max(...expiryDelta.map((c) => c.lists));
  const proxyCpuPerNode = sum(proxyCpu) / NODES;
  const watchesPerNode = sum(whole.map((c) => c.openWatches)) / NODES;
  const fanoutPerChange = bytesPerChange * PROJECTED_NODES;
  // client-go (kube-proxy) renews a watch when its timeoutSeconds (300-599 s) ends: every 450 s on average.
  const clientGoRenewalsPerSecond = (watchesPerNode * PROJECTED_NODES) / 450;
  const quietRenewalsPerSecond = (quietWatchesPerMinute * PROJECTED_NODES) / 60;
  // How often one quiet watch came back; sooner than client-go's 300 s minimum is worth explaining.
  const quietRenewalSeconds = quietWatchesPerMinute > 0 ? (60 * watchesPerNode) / quietWatchesPerMinute : Infinity;
  const quietRenewalsEarly = quietRenewalSeconds < 300;
  // What this benchmark's own processes used of the machine (the rest is whatever else ran on it).
  const ownBusy = sum(churnCpu.perProcess) / cores;
  const mb = (b: number) => fmtBytes(b);

  const body = `## Many nodes (\`bench/multinode.ts\`)

${NODES} nodes, each a network namespace with its own kube-proxy-ts (${MODE} mode, default flags: \`--min-sync-period 1s\`,
\`--sync-period 30s\`), all watching one test API server (\`test/apiserver\`, plain HTTP on a bridge) that serves
${SERVICES.toLocaleString('en')} services x ${ENDPOINTS} endpoints and ${NODES} Nodes. Network programming latency is kube-proxy's: from the
EndpointSlice's \`last-change-trigger-time\` (stamped as the change is handed to the API server) to the end of the sync
that applied it, as each proxy logs it (\`programmingMs\`; for a sync that carried several changes, its oldest one).
One machine: 2 cores, 24 GiB; every node's proxy, the API server and the load generator share the 2 cores.
${date}${QUICK ? ' (quick run: fewer services, changes and seconds)' : ''}.

| network programming latency | p50 | p99 | max | samples |
|---|---|---|---|---|
${latencyRow(`single EndpointSlice change, each node (${SINGLE_CHANGES} changes x ${NODES} nodes)`, single)}
${latencyRow('single change, its slowest node (programmed everywhere)', slowestNode)}
${latencyRow(`churn ${CHURN_RATE} changes/s, each sync's oldest change, every node`, steady)}
${latencyRow(`churn, the ${AFTER_DROP_MS / 1000} s after every watch was dropped`, afterDrop)}
${latencyRow('first change after a 410 and relist on every node', afterExpiryChange)}

- start-up, all ${NODES} nodes at once (list, first full sync of both families): first IPv4 sync after ${range(
    firstSyncMs.map((x) => Math.round(x / 100) / 10),
    (x) => `${x} s`,
  )}; the machine's cores were ${Math.round(startBusy * 100)}% busy meanwhile.
- churn: ${churnSent} changes in ${churnSeconds.toFixed(0)} s (${(churnSent / churnSeconds).toFixed(0)}/s), ${range(syncsPerNode)} IPv4 syncs per node; CPU: each
  proxy ${range(
    proxyCpu.map((x) => Math.round(x * 100)),
    (x) => `${x}%`,
  )} of a core (user + system of the process), the API server ${Math.round(apiCpu * 100)}%, the machine's ${cores} cores ${Math.round(churnCpu.machineBusy * 100)}% busy, ${Math.round(
    ownBusy * 100,
  )}% of them by this benchmark's proxies and API server (the rest: the load generator and whatever else ran)${
    saturated ? ' — **saturated**: the latencies under churn include waiting for a core' : ' (not saturated)'
  }.
- churn: ${churnSlow} of the ${steady.length} steady-churn syncs carried a change older than ${CHURN_SLOW_MS / 1000} s; ${churnSlowFull} of those were, or came right after, a periodic full sync.
- single changes: ${slow} of ${single.length} samples took over ${SLOW_MS} ms; ${slowBehindFull} of those waited for a periodic full sync (\`--sync-period 30s\`) that was running when the change came.
- resident memory per proxy at the end: ${range(
    rss.map((x) => Math.round(x)),
    (x) => `${x} MB`,
  )}.
- dropped watches: ${dropped} watches cut at once mid-churn; every node had re-established its watches ${fmtMs(resumedMs)} later, with
  ${range(dropDelta.map((c) => c.lists))} lists and ${range(dropDelta.map((c) => c.watches))} watch requests per node, resumed from their resourceVersion
  (${range(dropDelta.map((c) => c.replayedEvents))} missed events replayed from the server's history per node): no relist storm.
- 410 on every watch (${expired} watches, history compacted): every node relisted its 3 collections (${range(expiryDelta.map((c) => c.lists))} lists,
  ${range(
    expiryDelta.map((c) => c.listBytes),
    mb,
  )} each) and was back within ${range(
    relistedMs.map((x) => Math.round(x / 100) / 10),
    (x) => `${x} s`,
  )}.

What each node asked of the API server (min–max across the ${NODES} nodes; the server counts per client address):

| phase | lists | watches | errors | list bytes | watch bytes | watch events (replayed on resume) |
|---|---|---|---|---|---|---|
${statRow('start-up', startup)}
${statRow(`${QUIET_SECONDS} s without any change`, quiet)}
${statRow(`every watch dropped mid-churn, until all were back`, dropDelta)}
${statRow('410 on every watch (what it added)', expiryDelta)}
${statRow('whole run', whole)}

### Projection: a ${PROJECTED_NODES.toLocaleString('en')}-node cluster at ${SERVICES.toLocaleString('en')} services x ${ENDPOINTS} endpoints

Per node, what the proxy needs from the API server does not depend on the number of nodes: it watches 3
collections (Services and EndpointSlices with kube-proxy's label selectors, its own Node by field selector), lists
each once at start-up (and reads its Node once more for its addresses, and posts a \`Starting\` Event, as kube-proxy
does), and then only resumes watches. Multiplying the measured per-node figures:

| | per node (measured) | ${PROJECTED_NODES.toLocaleString('en')} nodes |
|---|---|---|
| open watches | ${watchesPerNode.toFixed(0)} | ${(watchesPerNode * PROJECTED_NODES).toLocaleString('en')} |
| start-up lists (every node at once, e.g. a DaemonSet rollout) | ${startupLists}, ${mb(listBytes)} | ${(startupLists * PROJECTED_NODES).toLocaleString('en')}, ${mb(listBytes * PROJECTED_NODES)} |
| watch requests while nothing changes (resumed from the resourceVersion; bookmarks every ${BOOKMARK_MS / 1000} s as kube-apiserver sends them) | ${quietWatchesPerMinute.toFixed(1)} per minute | ${quietRenewalsPerSecond.toFixed(0)} per second, no lists (kube-proxy: about ${clientGoRenewalsPerSecond.toFixed(0)} per second) |
| one EndpointSlice change (${ENDPOINTS} endpoints), watch fan-out | 1 event, ${mb(bytesPerChange)} | ${PROJECTED_NODES.toLocaleString('en')} events, ${mb(fanoutPerChange)} |
| ${CHURN_RATE} changes/s | ${mb(bytesPerChange * CHURN_RATE)}/s | ${mb(fanoutPerChange * CHURN_RATE)}/s |
| a dropped watch (network blip, API server replica restart with its watch cache) | 0 lists, 1 resumed watch | 0 lists |
| a 410 on every watch (history lost) | ${relistsPerNode} lists, ${mb(relistBytes)} | ${(relistsPerNode * PROJECTED_NODES).toLocaleString('en')} lists, ${mb(relistBytes * PROJECTED_NODES)} |
| proxy CPU at ${CHURN_RATE} changes/s | ${Math.round(proxyCpuPerNode * 100)}% of a core | the same on each node |

- The Service and EndpointSlice lists are protobuf, as this proxy asks for them (kube-proxy's default
  \`clientConnection.contentType\`); the Node list and every watch event are JSON (kube-proxy watches in protobuf too,
  a more compact encoding of the same events: no field names). The API server
  serializes an event once for all its watchers (its watch cache), so fan-out costs it bytes and connections rather
  than encoding work; ${(watchesPerNode * PROJECTED_NODES).toLocaleString('en')} watches is the load kube-proxy itself puts on a ${PROJECTED_NODES.toLocaleString('en')}-node cluster (same 3 watches per node).
- The proxy side does not grow with the cluster's node count: network programming latency per node depends on the
  rule set and the change rate, measured above (p50 ${fmtMs(percentile(single, 50))} single, p99 ${fmtMs(percentile(steady, 99))} under ${CHURN_RATE} changes/s, with
  \`--min-sync-period 1s\` batching). What a ${PROJECTED_NODES.toLocaleString('en')}-node cluster adds is the API server's delivery delay to
  ${PROJECTED_NODES.toLocaleString('en')} watchers, not measured here.
- Upstream's figure (KEP-3453, "Minimizing iptables-restore input size", measured on the \`gce-5000Nodes\` scalability
  job): kube-proxy's iptables mode had a p50 network programming latency of about 27 s; partial restores brought it
  to about 13 s, and \`--iptables-min-sync-period 1s\` to about 5 s, with p90/p99 still dominated by full resyncs.
  Here the p50 of a single change on every node is ${fmtMs(percentile(single, 50))} and its p99 ${fmtMs(percentile(single, 99))}, on ${NODES} nodes sharing 2 cores; ${slowBehindFull} of the ${slow} samples
  over ${SLOW_MS} ms waited for a periodic full sync${MODE === 'nftables' ? ' (at this size a comparison of the table with its record, see the nftables section, not a rewrite)' : ''}, the others for a core.
${
  quietRenewalsEarly
    ? `- A quiet watch came back about every ${quietRenewalSeconds.toFixed(0)} s: client-node's \`Watch\` aborts a watch that received nothing for 30 s
  (its inactivity timeout), which is shorter than kube-apiserver's one-minute bookmark period, and the informer resumes it
  (a bookmark resets the clock, so it comes back between 30 s and a minute after the last event or bookmark). Each renewal is cheap (a resumed watch served from the watch cache, no list), but it is about ${(quietRenewalsPerSecond / clientGoRenewalsPerSecond).toFixed(0)} times the rate of
  client-go, which renews a watch only when its 5–10 minute timeout ends. Raising that inactivity timeout above the bookmark
  period (the reflector in \`src/watch\` has its own 90 s silent-watch check) would bring it to client-go's.
`
    : ''
}- A relist is the expensive event: one ${PROJECTED_NODES.toLocaleString('en')}-node 410 storm moves ${mb(relistBytes * PROJECTED_NODES)} of list answers. This proxy relists
  only on a 410 (or a restart): dropped connections, watch timeouts and API server errors resume from the last
  resourceVersion (shown above: 0 lists after every watch was cut).`;
  writeSection('multinode', body);
  console.log(body);
} finally {
  stopping = true;
  await Promise.all(nodes.map((n) => stopChild(n.child)));
  await api?.stop();
  for (const ns of namespaces) await deleteNetns(ns);
  rmSync(dir, { recursive: true, force: true });
}
