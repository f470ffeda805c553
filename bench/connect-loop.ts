// A client that opens TCP connections at a steady rate for as long as it runs (the soak benchmark runs it in a
// pod's namespace, aimed at a ClusterIP). Each connection must be answered by a line starting with the expected
// pod name (the sandbox pod server's answer) within the timeout; anything else is a failure, counted by reason.
// Every reportMs it prints one JSON line for that interval; it exits when its stdin closes, after a last report.
//
//   node connect-loop.ts '{"ip":"198.18.120.10","port":80,"expect":"web","rate":50,"timeoutMs":2000,"reportMs":10000}'
//
// Only node: modules, so that it starts fast inside a namespace.
import { connect } from 'node:net';
import { resolve } from 'node:path';

export interface ConnectLoopConfig {
  ip: string;
  port: number;
  /** The pod name the answer must start with. */
  expect: string;
  /** New connections per second. */
  rate: number;
  timeoutMs: number;
  reportMs: number;
}

/** One report line: the interval's counts and connection latencies (connect() to the answer). */
export interface ConnectReport {
  ok: number;
  failed: number;
  /** Failures by reason: an errno code, "timeout", "bad answer" or "closed without an answer". */
  reasons: Record<string, number>;
  /** null when no connection was answered in the interval. */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** Connections still open at the end of the interval. */
  inFlight: number;
  final: boolean;
}

function main(config: ConnectLoopConfig): void {
  let latencies: number[] = [];
  let ok = 0;
  let failed = 0;
  let reasons: Record<string, number> = {};
  let inFlight = 0;

  const once = () => {
    const t0 = performance.now();
    inFlight++;
    let answer = '';
    let done = false;
    const socket = connect({ host: config.ip, port: config.port });
    const finish = (reason: string | null) => {
      if (done) return;
      done = true;
      inFlight--;
      clearTimeout(timer);
      socket.destroy();
      if (reason === null) {
        ok++;
        latencies.push(performance.now() - t0);
      } else {
        failed++;
        reasons[reason] = (reasons[reason] ?? 0) + 1;
      }
    };
    const timer = setTimeout(() => finish('timeout'), config.timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      answer += d;
      if (answer.includes('\n')) finish(answer.startsWith(`${config.expect} `) ? null : 'bad answer');
    });
    socket.on('end', () => finish(answer.includes('\n') ? null : 'closed without an answer'));
    socket.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  };

  const report = (final: boolean) => {
    const s = [...latencies].sort((a, b) => a - b);
    const at = (p: number) => (s.length === 0 ? null : s[Math.min(s.length - 1, Math.ceil((s.length * p) / 100) - 1)]);
    process.stdout.write(`${JSON.stringify({ ok, failed, reasons, p50Ms: at(50), p99Ms: at(99), maxMs: s.at(-1) ?? null, inFlight, final })}\n`);
    latencies = [];
    ok = 0;
    failed = 0;
    reasons = {};
  };

  // On schedule: connections due while the event loop was busy are opened at once, so the rate holds.
  const start = performance.now();
  let opened = 0;
  const tick = setInterval(() => {
    const due = Math.floor(((performance.now() - start) / 1000) * config.rate);
    while (opened < due) {
      opened++;
      once();
    }
  }, 5);
  const reporter = setInterval(() => report(false), config.reportMs);
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    clearInterval(tick);
    clearInterval(reporter);
    // Let the connections in flight finish (each is bounded by the timeout), then the last report.
    setTimeout(() => {
      report(true);
      process.exit(0);
    }, config.timeoutMs + 100);
  };
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
}

if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) main(JSON.parse(process.argv[2] ?? '') as ConnectLoopConfig);
