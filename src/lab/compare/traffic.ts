// Traffic for the mode comparison (and the userspace e2e tests): one script, run inside a network
// namespace with the Node binary, that is either a server or a client. It prints one JSON line on
// stdout: "ready" details for a server, the measurement for a client.
//
//   node traffic.ts '{"cmd":"serve","name":"b1","echo":7000,"sink":7001,"hello":7002,"udpEcho":7053}'
//   node traffic.ts '{"cmd":"bulk","ip":"198.18.100.10","port":5001,"seconds":3}'
//
// Servers (on 0.0.0.0): echo (copies every byte back, half-close kept: it ends after the client
// ends), sink (counts bytes, answers "<count>\n" after the client's end), hello (answers
// "<name>\n" and closes at once: one short connection), udpEcho (answers "<name> <payload>").
// Clients: bulk (one stream for N seconds into a sink: throughput), rate (short hello connections
// from C workers for N seconds: connections per second), latency (sequential hello connections:
// p50/p99 of connect-to-answer), echo (N pseudo-random bytes through an echo server, checked by
// SHA-256: integrity and half-close), udp (many clients at once, each with its own socket).
// Every client loop is bounded in count and in time.
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { adoptAccepted } from '../../modes/userspace/pump.ts';
import { isMainModule } from '../sandbox/podserver.ts';
import type { Host, Topology } from '../sandbox/topology.ts';

export const TRAFFIC_SCRIPT = fileURLToPath(import.meta.url);

export interface ServeCommand {
  cmd: 'serve';
  name: string;
  echo?: number;
  sink?: number;
  hello?: number;
  udpEcho?: number;
}
export interface BulkCommand {
  cmd: 'bulk';
  ip: string;
  port: number;
  seconds: number;
}
export interface RateCommand {
  cmd: 'rate';
  ip: string;
  port: number;
  seconds: number;
  concurrency: number;
  /** Upper bound on connections (default 1,000,000). */
  maxConnections?: number;
}
export interface LatencyCommand {
  cmd: 'latency';
  ip: string;
  port: number;
  count: number;
  /** Stop early after this long (default 30 s). */
  maxSeconds?: number;
}
export interface EchoCommand {
  cmd: 'echo';
  ip: string;
  port: number;
  bytes: number;
  /** Give up after this long (default 120 s). */
  timeoutMs?: number;
  /** Send `chunkBytes` (default 1 MiB) at a time and wait this long between chunks: a slow, long-lived stream. */
  paceMs?: number;
  chunkBytes?: number;
}
export interface UdpCommand {
  cmd: 'udp';
  ip: string;
  port: number;
  clients: number;
  /** Requests per client, sent one after the other. */
  requests: number;
  timeoutMs?: number;
}
export type TrafficCommand = ServeCommand | BulkCommand | RateCommand | LatencyCommand | EchoCommand | UdpCommand;

export interface BulkResult {
  bytes: number;
  seconds: number;
  /** Bits per second that reached the sink. */
  bitsPerSecond: number;
}
export interface RateResult {
  connections: number;
  errors: number;
  seconds: number;
  perSecond: number;
  /** The first few error codes seen. */
  errorSamples: string[];
}
export interface LatencyResult {
  count: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** Connections per answering server name. */
  answers: Record<string, number>;
}
export interface EchoResult {
  ok: boolean;
  sentBytes: number;
  receivedBytes: number;
  sentSha256: string;
  receivedSha256: string;
  /** When the server's end arrived relative to our end: proves the half-close was kept. */
  endedAfterOurEnd: boolean;
  ms: number;
  error?: string;
}
export interface UdpResult {
  sent: number;
  answered: number;
  /** Answers whose payload did not match the request. */
  mismatched: number;
  /** Answers per responding backend name. */
  backends: Record<string, number>;
  /** Source addresses the answers came from ("ip:port"). */
  sources: string[];
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

function listenTcp(port: number, onConnection: (s: Socket) => void, allowHalfOpen: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen, noDelay: true }, (s) => {
      s.on('error', () => {});
      onConnection(s);
    });
    server.once('error', reject);
    server.listen({ host: '0.0.0.0', port, backlog: 4096 }, () => resolve());
  });
}

async function serve(c: ServeCommand): Promise<void> {
  const ready: Promise<void>[] = [];
  if (c.echo) ready.push(listenTcp(c.echo, (s) => s.pipe(s), true));
  if (c.sink) {
    // Counting needs no copy of the bytes: every connection reads into one buffer (onread; see
    // adoptAccepted), so the sink allocates nothing per read and its garbage collection, which made
    // it the bottleneck of the bulk figure, does not compete with the mode under test.
    const buffer = Buffer.allocUnsafe(1 << 20);
    ready.push(
      listenTcp(
        c.sink,
        (accepted) => {
          let n = 0;
          const count = (bytes: number): boolean => {
            n += bytes;
            return true;
          };
          const s = adoptAccepted(accepted, { buffer, callback: count }, true) ?? accepted.on('data', (d: Buffer) => count(d.length));
          s.on('error', () => {});
          s.on('end', () => s.end(`${n}\n`));
          s.resume();
        },
        true,
      ),
    );
  }
  if (c.hello) ready.push(listenTcp(c.hello, (s) => s.end(`${c.name}\n`), false));
  if (c.udpEcho) {
    const u = createSocket('udp4');
    u.on('message', (m, r) => u.send(`${c.name} ${m.toString()}`, r.port, r.address));
    ready.push(
      new Promise((resolve, reject) => {
        u.once('error', reject);
        u.bind(c.udpEcho, '0.0.0.0', () => resolve());
      }),
    );
  }
  await Promise.all(ready);
}

function bulk(c: BulkCommand): Promise<BulkResult> {
  return new Promise((resolve, reject) => {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    const s = connect({ host: c.ip, port: c.port, allowHalfOpen: true, noDelay: true });
    let started = 0;
    let answer = '';
    let stop = false;
    const pump = (): void => {
      while (!stop) {
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    s.on('connect', () => {
      started = performance.now();
      setTimeout(() => {
        stop = true;
      }, c.seconds * 1000);
      pump();
    });
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      answer += d;
    });
    s.on('end', () => {
      const seconds = (performance.now() - started) / 1000;
      const bytes = Number(answer.trim());
      if (!Number.isFinite(bytes) || answer.trim() === '') reject(new Error(`bad sink answer ${JSON.stringify(answer)}`));
      else resolve({ bytes, seconds, bitsPerSecond: (bytes * 8) / seconds });
    });
    s.on('error', reject);
  });
}

/** One short connection: connect, read until the server closes. Resolves with the text, rejects on error. */
function hello(ip: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: ip, port, noDelay: true });
    let text = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('ETIMEDOUT'));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      text += d;
    });
    s.on('end', () => {
      clearTimeout(timer);
      s.destroy();
      if (text.endsWith('\n')) resolve(text);
      else reject(new Error(`short answer ${JSON.stringify(text)}`));
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function rate(c: RateCommand): Promise<RateResult> {
  const max = c.maxConnections ?? 1_000_000;
  const deadline = performance.now() + c.seconds * 1000;
  let connections = 0;
  let errors = 0;
  const samples = new Set<string>();
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline && connections + errors < max) {
      try {
        await hello(c.ip, c.port, 5000);
        connections++;
      } catch (e) {
        errors++;
        if (samples.size < 5) samples.add((e as NodeJS.ErrnoException).code ?? (e as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: c.concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  return { connections, errors, seconds, perSecond: connections / seconds, errorSamples: [...samples] };
}

async function latency(c: LatencyCommand): Promise<LatencyResult> {
  const deadline = performance.now() + (c.maxSeconds ?? 30) * 1000;
  const times: number[] = [];
  const answers: Record<string, number> = {};
  let errors = 0;
  for (let i = 0; i < c.count && performance.now() < deadline; i++) {
    const t0 = performance.now();
    try {
      const name = (await hello(c.ip, c.port, 5000)).trim();
      times.push(performance.now() - t0);
      answers[name] = (answers[name] ?? 0) + 1;
    } catch {
      errors++;
    }
  }
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / Math.max(1, times.length);
  return { count: times.length, errors, p50Ms: percentile(times, 50), p99Ms: percentile(times, 99), meanMs: mean, answers };
}

function echo(c: EchoCommand): Promise<EchoResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    const sentHash = createHash('sha256');
    const gotHash = createHash('sha256');
    // 4 MiB of random bytes, sent over and over with a running offset so no two chunks line up alike.
    const pattern = randomBytes(4 << 20);
    let sent = 0;
    let received = 0;
    let weEnded = false;
    let settled = false;
    const s = connect({ host: c.ip, port: c.port, allowHalfOpen: true, noDelay: true });
    const finish = (error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      const sentSha256 = sentHash.digest('hex');
      const receivedSha256 = gotHash.digest('hex');
      resolve({
        ok: !error && sent === c.bytes && received === c.bytes && sentSha256 === receivedSha256,
        sentBytes: sent,
        receivedBytes: received,
        sentSha256,
        receivedSha256,
        endedAfterOurEnd: weEnded,
        ms: performance.now() - started,
        ...(error ? { error } : {}),
      });
    };
    const timer = setTimeout(() => finish('timeout'), c.timeoutMs ?? 120_000);
    const pump = (): void => {
      while (sent < c.bytes && !settled) {
        const offset = sent % pattern.length;
        const n = Math.min(c.bytes - sent, pattern.length - offset, c.chunkBytes ?? 1 << 20);
        const chunk = pattern.subarray(offset, offset + n);
        sentHash.update(chunk);
        sent += n;
        const more = s.write(chunk);
        if (c.paceMs && sent < c.bytes) {
          const later = (): void => void setTimeout(pump, c.paceMs);
          if (more) later();
          else s.once('drain', later);
          return;
        }
        if (!more) {
          s.once('drain', pump);
          return;
        }
      }
      if (settled) return;
      weEnded = true;
      s.end();
    };
    s.on('connect', pump);
    s.on('data', (d: Buffer) => {
      received += d.length;
      gotHash.update(d);
    });
    s.on('end', () => finish(weEnded ? undefined : 'the server ended before we did'));
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  });
}

async function udp(c: UdpCommand): Promise<UdpResult> {
  const result: UdpResult = { sent: 0, answered: 0, mismatched: 0, backends: {}, sources: [] };
  const sources = new Set<string>();
  const timeoutMs = c.timeoutMs ?? 2000;
  const client = (id: number): Promise<void> =>
    new Promise((resolve) => {
      const sock = createSocket('udp4');
      let i = 0;
      let timer: NodeJS.Timeout | null = null;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        sock.close();
        resolve();
      };
      const next = (): void => {
        if (i >= c.requests) {
          done();
          return;
        }
        const payload = `c${id}-r${i++}`;
        result.sent++;
        sock.send(payload, c.port, c.ip);
        timer = setTimeout(next, timeoutMs);
        sock.removeAllListeners('message');
        sock.once('message', (m, r) => {
          if (timer) clearTimeout(timer);
          const [name, got] = m.toString().split(' ');
          if (got === payload && name) {
            result.answered++;
            result.backends[name] = (result.backends[name] ?? 0) + 1;
          } else result.mismatched++;
          sources.add(`${r.address}:${r.port}`);
          next();
        });
      };
      sock.on('error', () => {});
      sock.bind(0, next);
    });
  await Promise.all(Array.from({ length: c.clients }, (_, id) => client(id)));
  result.sources = [...sources].sort();
  return result;
}

export async function runCommand(c: TrafficCommand): Promise<unknown> {
  switch (c.cmd) {
    case 'serve':
      await serve(c);
      return { ready: true };
    case 'bulk':
      return bulk(c);
    case 'rate':
      return rate(c);
    case 'latency':
      return latency(c);
    case 'echo':
      return echo(c);
    case 'udp':
      return udp(c);
  }
}

function main(): void {
  const c = JSON.parse(process.argv[2] ?? '') as TrafficCommand;
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
  runCommand(c).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      if (c.cmd !== 'serve') process.exit(0);
      // A server runs until its parent goes away.
      process.stdin.on('end', () => process.exit(0));
      process.stdin.on('error', () => process.exit(0));
      process.stdin.resume();
    },
    (e: unknown) => {
      process.stderr.write(`traffic ${c.cmd}: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}

if (isMainModule(process.argv[1], TRAFFIC_SCRIPT)) main();

// ---- host side ----------------------------------------------------------------------------------

function scriptArgv(c: TrafficCommand): string[] {
  return [process.execPath, '--disable-warning=ExperimentalWarning', TRAFFIC_SCRIPT, JSON.stringify(c)];
}

/** Runs a client command inside a host of the topology; resolves with its parsed result. */
export async function runTraffic<T>(topo: Topology, host: Host, c: Exclude<TrafficCommand, ServeCommand>, timeoutMs = 180_000): Promise<T> {
  const r = await topo.exec(host, scriptArgv(c), { timeoutMs });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !line.startsWith('{')) throw new Error(`traffic ${c.cmd} in ${host} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return JSON.parse(line) as T;
}

/** Starts a traffic server in a host of the topology and waits until it listens; topo.destroy() stops it. */
export function startTrafficServer(topo: Topology, host: Host, c: ServeCommand, timeoutMs = 10_000): Promise<ChildProcess> {
  const child = topo.spawn(host, scriptArgv(c));
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null): void => fail(`exited with ${code}`);
    const fail = (why: string): void => {
      clearTimeout(timer);
      child.removeListener('exit', onExit);
      reject(new Error(`traffic server ${c.name} in ${host} ${why}${err ? `: ${err.trim()}` : ''}`));
    };
    const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
    child.once('exit', onExit);
    child.stdout?.setEncoding('utf8').once('data', () => {
      clearTimeout(timer);
      child.removeListener('exit', onExit);
      resolve(child);
    });
  });
}
