// The probe client: run as a script inside the namespace a probe starts from, it makes `tries`
// attempts one after the other (TCP: a new connection each; UDP: a new connected socket, so a new
// source port, each), to an IPv4 or IPv6 address, and prints the outcome of every try as JSON on stdout:
//
//   node --disable-warning=ExperimentalWarning probe.ts '{"ip":"198.18.100.10","port":80,"protocol":"tcp","tries":30,"timeoutMs":1500}'
//   {"tries":[{"answer":{"pod":"a1","sourceIP":"198.19.1.12"}},"refused","timeout",...],"durationMs":412}
//
// The module also exports runProbe(), which runs it for a scenario probe inside a topology.
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { isMainModule } from './podserver.ts';
import { formatProbeTarget } from './scenario.ts';
import type { L4Protocol, ProbeSpec } from './scenario.ts';
import type { Topology } from './topology.ts';

export const PROBE_SCRIPT = fileURLToPath(import.meta.url);

export interface ProbeAnswer {
  /** The pod that answered. */
  pod: string;
  /** The source address the pod saw, as it said it (canonical: see podserver.ts). */
  sourceIP: string;
}

/**
 * One try: answered, 'refused' (connection refused / ICMP port unreachable), 'timeout' (nothing
 * came back in time: dropped), or any other failure as text (an errno code such as 'EHOSTUNREACH',
 * 'ECONNRESET', or a description such as 'connected, no answer in 1500 ms').
 */
export type ProbeTry = { answer: ProbeAnswer } | 'refused' | 'timeout' | (string & {});

export interface ProbeResult {
  tries: ProbeTry[];
  durationMs: number;
}

export interface ProbeRequest {
  /** IPv4 or IPv6 address. */
  ip: string;
  port: number;
  protocol: L4Protocol;
  tries: number;
  timeoutMs: number;
}

/** Parses a pod server's answer line. */
export function parseAnswer(text: string): ProbeTry {
  const line = text.split('\n')[0]?.trim() ?? '';
  const parts = line.split(' ');
  if (parts.length !== 2 || !parts[0] || !parts[1]) return `malformed answer ${JSON.stringify(text.slice(0, 80))}`;
  return { answer: { pod: parts[0], sourceIP: parts[1] } };
}

function errorTry(e: NodeJS.ErrnoException): ProbeTry {
  if (e.code === 'ECONNREFUSED') return 'refused';
  return e.code ?? e.message;
}

function tcpTry(ip: string, port: number, timeoutMs: number): Promise<ProbeTry> {
  return new Promise((resolve) => {
    let data = '';
    let connected = false;
    let done = false;
    const socket = connect({ host: ip, port });
    const finish = (t: ProbeTry): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(t);
    };
    const timer = setTimeout(() => finish(connected ? `connected, no answer in ${timeoutMs} ms` : 'timeout'), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      connected = true;
    });
    socket.on('data', (d: string) => {
      data += d;
      if (data.includes('\n')) finish(parseAnswer(data));
    });
    socket.on('end', () => finish(data ? parseAnswer(data) : 'closed without an answer'));
    socket.on('close', () => finish(data ? parseAnswer(data) : 'closed without an answer'));
    socket.on('error', (e: NodeJS.ErrnoException) => finish(errorTry(e)));
  });
}

function udpTry(ip: string, port: number, timeoutMs: number): Promise<ProbeTry> {
  return new Promise((resolve) => {
    let done = false;
    const socket = createSocket(ip.includes(':') ? 'udp6' : 'udp4');
    const finish = (t: ProbeTry): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      resolve(t);
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    socket.on('message', (msg) => finish(parseAnswer(msg.toString('utf8'))));
    // On a connected socket an ICMP port unreachable comes back as ECONNREFUSED.
    socket.on('error', (e: NodeJS.ErrnoException) => finish(errorTry(e)));
    socket.connect(port, ip, () => {
      socket.send('probe\n', (e) => {
        if (e) finish(errorTry(e as NodeJS.ErrnoException));
      });
    });
  });
}

/** Makes every try of `req`, one after the other. */
export async function probe(req: ProbeRequest): Promise<ProbeResult> {
  const start = performance.now();
  const tries: ProbeTry[] = [];
  const once = req.protocol === 'tcp' ? tcpTry : udpTry;
  for (let i = 0; i < req.tries; i++) tries.push(await once(req.ip, req.port, req.timeoutMs));
  return { tries, durationMs: Math.round(performance.now() - start) };
}

if (isMainModule(process.argv[1], PROBE_SCRIPT)) {
  const req = JSON.parse(process.argv[2] ?? '') as ProbeRequest;
  probe(req).then(
    (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
    (e: unknown) => {
      process.stderr.write(`probe: ${e instanceof Error ? e.stack : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

// ---- host side ----------------------------------------------------------------------------------

/** Runs a scenario probe from its `from` host of the topology. */
export async function runProbe(topo: Topology, spec: Pick<ProbeSpec, 'from' | 'to' | 'tries' | 'timeoutMs'>): Promise<ProbeResult> {
  const req: ProbeRequest = { ...spec.to, tries: spec.tries, timeoutMs: spec.timeoutMs };
  const r = await topo.exec(spec.from, [process.execPath, '--disable-warning=ExperimentalWarning', PROBE_SCRIPT, JSON.stringify(req)], {
    timeoutMs: spec.tries * (spec.timeoutMs + 1000) + 15_000,
  });
  const where = `probe from ${spec.from} to ${formatProbeTarget(spec.to)}`;
  if (r.code !== 0) throw new Error(`${where} failed (exit ${r.code}): ${r.stderr.trim()}`);
  try {
    return JSON.parse(r.stdout) as ProbeResult;
  } catch {
    throw new Error(`${where} printed no result: ${JSON.stringify(r.stdout.slice(0, 200))} ${r.stderr.trim()}`);
  }
}
