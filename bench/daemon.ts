// Daemon benchmark (the whole process, as deployed): network programming latency of single EndpointSlice
// changes at 2,000 services x 10 endpoints (goal p99 <= 1 s), and the CPU the proxy uses while absorbing
// 100 endpoint changes per second for a minute. The proxy and a list/watch API server (test/apiserver) run
// in a namespace of their own; changes carry endpoints.kubernetes.io/last-change-trigger-time, and the proxy
// logs, per sync, the programming latency of the oldest change it carried.
//   node bench/daemon.ts [--quick] [--modes iptables,nftables,userspace]
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import type { ModeName } from '../src/modes/types.ts';
import { writeSection } from './docs.ts';
import { binCommand, cpuSeconds, rssMB, startTestApiServer } from './measure.ts';
import { deleteNetns, newNetns } from './netns.ts';
import { makeObjects, makeSlice } from './synthetic.ts';

const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const modesArg = args.includes('--modes') ? args[args.indexOf('--modes') + 1] : undefined;
const MODES = (modesArg ? modesArg.split(',') : ['iptables', 'nftables', 'userspace']) as ModeName[];
const SERVICES = 2000;
const ENDPOINTS = 10;
const SINGLE_CHANGES = QUICK ? 10 : 40;
const CHURN_RATE = 100;
const CHURN_SECONDS = QUICK ? 15 : 60;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.ceil((s.length * p) / 100) - 1)]!;
}

interface Result {
  mode: ModeName;
  firstSyncMs: number;
  single: number[];
  churnCpuPct: number;
  churnSyncs: number;
  churnLatency: number[];
  rss: number;
}

async function benchMode(mode: ModeName, ns: string, dir: string): Promise<Result> {
  const objectsFile = path.join(dir, 'objects.yaml');
  const kubeconfig = path.join(dir, `kubeconfig-${mode}`);
  const api = await startTestApiServer(ns, kubeconfig, objectsFile);
  const t0 = performance.now();
  const proxy: ChildProcess = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      ...binCommand(['--mode', mode, '--kubeconfig', kubeconfig, '--hostname-override', 'node-a', '--cluster-cidr', '198.19.0.0/16', '--sync-period', '1h']),
    ],
    // Its logs (the sync lines) are on stderr.
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const syncs: { at: number; programmingMs?: number; full: boolean }[] = [];
  let pending = '';
  let onSync: (() => void) | null = null;
  proxy.stderr!.setEncoding('utf8').on('data', (d: string) => {
    pending += d;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const l of lines) {
      if (!l.includes('"event":"synced"')) {
        if (l.includes('"level":50')) process.stderr.write(`${mode}: ${l}\n`);
        continue;
      }
      const j = JSON.parse(l) as { programmingMs?: number; full: boolean };
      syncs.push({ at: performance.now(), programmingMs: j.programmingMs, full: j.full });
      onSync?.();
    }
  });
  const waitSync = (timeoutMs: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${mode}: no sync within ${timeoutMs} ms`)), timeoutMs);
      onSync = () => {
        clearTimeout(timer);
        onSync = null;
        resolve();
      };
    });
  try {
    await waitSync(20 * 60_000);
    const firstSyncMs = performance.now() - t0;
    const send = (obj: unknown) => api.stdin!.write(`${JSON.stringify({ op: 'apply', object: obj })}\n`);
    let generation = 1;
    const change = (i: number) => {
      const s = makeSlice(i, ENDPOINTS, generation++);
      s.metadata!.annotations = { 'endpoints.kubernetes.io/last-change-trigger-time': new Date().toISOString() };
      send(s);
    };
    // Single changes, spaced so that each gets a sync of its own.
    await sleep(1500);
    const single: number[] = [];
    for (let k = 0; k < SINGLE_CHANGES; k++) {
      const before = syncs.length;
      const wait = waitSync(30_000);
      change((k * 7919) % SERVICES);
      await wait;
      const s = syncs[before];
      if (s?.programmingMs !== undefined) single.push(s.programmingMs);
      await sleep(1200);
    }
    // Churn: 100 endpoint changes per second.
    const pid = proxy.pid!;
    const cpu0 = cpuSeconds(pid);
    const syncs0 = syncs.length;
    const c0 = performance.now();
    let n = 0;
    while (performance.now() - c0 < CHURN_SECONDS * 1000) {
      const due = Math.floor(((performance.now() - c0) / 1000) * CHURN_RATE);
      while (n < due) change(n++ % SERVICES);
      await sleep(10);
    }
    await sleep(2000); // let the last changes land
    const cpu = cpuSeconds(pid) - cpu0;
    const churnSyncs = syncs.slice(syncs0);
    return {
      mode,
      firstSyncMs,
      single,
      churnCpuPct: (cpu / ((performance.now() - c0) / 1000)) * 100,
      churnSyncs: churnSyncs.length,
      churnLatency: churnSyncs.flatMap((s) => (s.programmingMs === undefined ? [] : [s.programmingMs])),
      rss: rssMB(pid),
    };
  } finally {
    proxy.kill('SIGTERM');
    api.kill('SIGTERM');
    await sleep(300);
  }
}

const dir = mkdtempSync(path.join(tmpdir(), 'kpt-bench-daemon-'));
writeFileSync(path.join(dir, 'objects.yaml'), stringify({ apiVersion: 'v1', kind: 'List', items: makeObjects(SERVICES, ENDPOINTS) }));
const results: Result[] = [];
try {
  for (const mode of MODES) {
    const ns = await newNetns(`daemon-${mode.slice(0, 4)}`);
    try {
      process.stderr.write(`daemon bench: ${mode}...\n`);
      results.push(await benchMode(mode, ns, dir));
    } finally {
      await deleteNetns(ns);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const f = (ms: number) => (Number.isNaN(ms) ? 'n/a' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);
const rows = results.map((r) => [
  r.mode,
  f(r.firstSyncMs),
  f(pct(r.single, 50)),
  f(pct(r.single, 99)),
  pct(r.single, 99) <= 1000 ? 'met' : 'missed',
  `${r.churnCpuPct.toFixed(0)}% of a core`,
  String(r.churnSyncs),
  f(pct(r.churnLatency, 99)),
  `${r.rss.toFixed(0)} MB`,
]);
const table = [
  '| mode | first sync (list + full sync) | single change p50 | single change p99 | goal p99 ≤ 1 s | CPU at 100 changes/s | syncs in the churn | churn programming p99 | RSS after |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.join(' | ')} |`),
].join('\n');
writeSection(
  'daemon',
  `## Daemon (\`bench/daemon.ts\`)

The whole process as deployed, against the list/watch test API server, at ${SERVICES.toLocaleString('en')} services x ${ENDPOINTS} endpoints, default flags
(\`--min-sync-period 1s\`). Network programming latency is measured as kube-proxy measures it: from the
EndpointSlice's \`last-change-trigger-time\` (set when the change is sent) to the end of the sync that applied
it. ${SINGLE_CHANGES} single changes spaced 1.2 s apart; then ${CHURN_RATE} endpoint changes per second for ${CHURN_SECONDS} s (CPU is user +
system time of the proxy process over the churn, including its API client; syncs: the sync log lines of the churn, of the
IPv4 family only: a family syncs only when a change is its own, as upstream's per-family change trackers). ${new Date().toISOString().slice(0, 10)}${QUICK ? ' (quick run)' : ''}.

${table}`,
);
console.log(table);
