// The userspace mode's bulk throughput against what any proxy in the data path can get out of this machine.
//
// `kube-proxy-ts compare` measures the userspace mode against the kernel modes. This benchmark adds the
// ceiling: reference proxies written in C (bench/reference-proxy.c: a plain read/write loop, the same with
// a reader and a writer thread, and splice(), which never copies the bytes into the process), each behind
// the same kind of REDIRECT the userspace mode uses, on the same topology and the same traffic tools as
// `compare`. Targets alternate round by round in rotating order; figures are medians. CPU: the proxy
// process's user + system time over the stream, as a share of one core; idle: the whole machine's.
//   node bench/userspace.ts [--quick]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { runTraffic, startTrafficServer } from '../src/lab/compare/traffic.ts';
import type { BulkResult } from '../src/lab/compare/traffic.ts';
import { benchObjects, median, PODS, SERVICE_IP, SINK_PORT, SINK_TARGET_PORT } from '../src/lab/compare/index.ts';
import { proxyCommand, startProxy } from '../src/lab/sandbox/proxy.ts';
import type { ProxyProcess } from '../src/lab/sandbox/proxy.ts';
import { Topology } from '../src/lab/sandbox/topology.ts';
import type { Host } from '../src/lab/sandbox/topology.ts';
import { writeSection } from './docs.ts';
import { cpuSeconds } from './measure.ts';

const QUICK = process.argv.includes('--quick');
const ROUNDS = QUICK ? 3 : 7;
const SECONDS = 2;
/** The sink the reference proxies forward to: the server pod of `compare`'s cluster. */
const SINK = { ip: PODS.find((p) => p.name === 'server')!.ip, port: SINK_TARGET_PORT };
const MiB = 1 << 20;

/** The reference proxies: each listens on node-a, the client reaches it through a REDIRECT of SERVICE_IP:frontend. */
const REFERENCES = [
  { name: "C, read/write, 64 KiB (Node's own read size)", mode: 'copy', bytes: 64 << 10 },
  { name: "C, read/write, 1 MiB (the userspace mode's buffer)", mode: 'copy', bytes: MiB },
  { name: 'C, reader and writer threads, 4 x 1 MiB', mode: 'threads', bytes: MiB },
  { name: 'C, splice(), no copy into the process', mode: 'splice', bytes: MiB },
] as const;

interface Target {
  name: string;
  topo: Topology;
  port: number;
  /** The proxy process whose CPU is taken; none for the kernel. */
  pid: number | null;
  gbps: number[];
  cpu: number[];
  idle: number[];
}

/** The machine's idle time so far, in seconds summed over cores (/proc/stat, USER_HZ = 100). */
function idleSeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  return (Number(fields[4]) + Number(fields[5])) / 100;
}

/** Starts a reference proxy on node-a and redirects SERVICE_IP:frontend to it, as the userspace mode's rules do. */
async function startReference(topo: Topology, binary: string, ref: (typeof REFERENCES)[number], frontend: number): Promise<number> {
  const listen = 9000 + frontend;
  const child = topo.spawn('node-a', [binary, ref.mode, String(listen), SINK.ip, String(SINK.port), String(ref.bytes)]);
  child.stdout?.resume();
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`reference proxy ${ref.mode} exited with ${code}`)));
    child.stdout?.once('data', () => resolve());
  });
  const rule = ['-t', 'nat', '-A', 'PREROUTING', '-d', SERVICE_IP, '-p', 'tcp', '--dport', String(frontend), '-j', 'REDIRECT', '--to-ports', String(listen)];
  await topo.execOk('node-a', ['iptables', ...rule]);
  return child.pid!;
}

async function measure(t: Target, host: Host): Promise<string> {
  const cpu0 = t.pid ? cpuSeconds(t.pid) : 0;
  const idle0 = idleSeconds();
  const r = await runTraffic<BulkResult>(t.topo, host, { cmd: 'bulk', ip: SERVICE_IP, port: t.port, seconds: SECONDS });
  t.idle.push((idleSeconds() - idle0) / r.seconds / cpus().length);
  if (t.pid) t.cpu.push((cpuSeconds(t.pid) - cpu0) / r.seconds);
  t.gbps.push(r.bitsPerSecond / 1e9);
  return `${(r.bitsPerSecond / 1e9).toFixed(2)} Gbit/s`;
}

function row(t: Target, kernel: number, best: number): string {
  const gbps = median(t.gbps)!;
  const cpu = median(t.cpu);
  const pct = (x: number): string => `${(x * 100).toFixed(0)}%`;
  return `| ${t.name} | ${gbps.toFixed(2)} | ${(gbps / kernel).toFixed(2)} | ${t.pid ? (gbps / best).toFixed(2) : '-'} | ${cpu == null ? '-' : pct(cpu)} | ${pct(median(t.idle)!)} |`;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kpt-userspace-bench-'));
  const topos: Topology[] = [];
  const proxies: ProxyProcess[] = [];
  const load = loadavg()[0] ?? 0;
  try {
    const binary = path.join(dir, 'reference-proxy');
    try {
      execFileSync('cc', ['-O2', '-pthread', '-o', binary, path.join(import.meta.dirname, 'reference-proxy.c')], { stdio: 'inherit' });
    } catch (e) {
      throw new Error(`building bench/reference-proxy.c failed (this benchmark needs a C compiler, cc: Debian's gcc): ${(e as Error).message}`, { cause: e });
    }
    const objects = path.join(dir, 'objects.json');
    writeFileSync(objects, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: benchObjects() }));

    // One topology per mode (a node runs one proxy) and one for the references, each with its own sink.
    const sandbox = async (): Promise<Topology> => {
      const topo = await Topology.create({ pods: PODS });
      topos.push(topo);
      await startTrafficServer(topo, 'pod:server', { cmd: 'serve', name: 'sink', sink: SINK.port });
      return topo;
    };
    const targets: Target[] = [];
    const add = (name: string, topo: Topology, port: number, pid: number | null): void => {
      targets.push({ name, topo, port, pid, gbps: [], cpu: [], idle: [] });
    };
    for (const mode of ['iptables', 'userspace'] as const) {
      const topo = await sandbox();
      const proxy = await startProxy(topo, proxyCommand(mode, objects), { syncTimeoutMs: 60_000 });
      proxies.push(proxy);
      add(
        mode === 'iptables' ? 'kernel (iptables mode)' : 'kube-proxy-ts userspace mode (Node)',
        topo,
        SINK_PORT,
        mode === 'iptables' ? null : proxy.child.pid!,
      );
    }
    const refs = await sandbox();
    for (const [i, ref] of REFERENCES.entries()) add(ref.name, refs, 6001 + i, await startReference(refs, binary, ref, 6001 + i));

    for (let round = 0; round < ROUNDS; round++) {
      for (const [i] of targets.entries()) {
        const t = targets[(i + round) % targets.length]!;
        console.log(`round ${round + 1}/${ROUNDS} ${t.name}: ${await measure(t, 'pod:client')}`);
      }
    }
    const kernel = median(targets[0]!.gbps)!;
    const best = Math.max(...targets.slice(2).map((t) => median(t.gbps)!));
    const table = [
      '| path | Gbit/s | / kernel | / best C proxy | proxy CPU (one core = 100%) | machine idle |',
      '| --- | --- | --- | --- | --- | --- |',
      ...targets.map((t) => row(t, kernel, best)),
    ].join('\n');
    console.log(table);
    writeSection(
      'userspace',
      `## Userspace mode against proxies written in C (\`bench/userspace.ts\`)

One TCP stream for ${SECONDS} s from a pod on node-a through a ClusterIP to a sink on node-b (the \`compare\` topology and
traffic tools), through the kernel (iptables mode), through the userspace mode as a user starts it, and through
reference proxies in C (\`bench/reference-proxy.c\`) behind the same kind of REDIRECT. ${ROUNDS} rounds, the targets in
rotating order; medians. ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores, load average ${load.toFixed(2)} before and ${(loadavg()[0] ?? 0).toFixed(2)} after${QUICK ? ' (quick run)' : ''}.

${table}

What the C proxies get is what any process in the data path can get here: "/ kernel" for the best of them is the
ceiling of the userspace mode's bulk ratio on this machine.`,
    );
  } finally {
    for (const p of proxies) await p.stop(10_000).catch(() => {});
    await Promise.allSettled(topos.map((t) => t.destroy()));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
