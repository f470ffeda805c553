// The process's one logger (pino), writing to stderr: stdout belongs to what a command prints (state, explain,
// --dry-run), which must stay parseable at any verbosity. JSON lines by default, or klog-style text lines
// (--logging-format text). The level comes from -v (upstream's numeric verbosity) or --log-level.
import { pino } from 'pino';

export type LogFormat = 'json' | 'text';

let format: LogFormat = 'json';
// Synchronous: the last lines before an exit (a start-up failure) must not be lost.
const stderr = pino.destination({ fd: 2, sync: true });

const LETTER: Record<number, string> = { 10: 'I', 20: 'I', 30: 'I', 40: 'W', 50: 'E', 60: 'F' };
const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/**
 * One pino JSON line as klog's text format prints a structured line:
 * `I1204 06:50:00.123456   12345 kube-proxy-ts] "msg" key="value" n=3`. Strings are quoted with JSON's escaping,
 * so that nothing an object carries (a name, an address) reaches a terminal unescaped.
 */
export function klogLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { level, time, msg, ...fields } = rec;
  const t = new Date(typeof time === 'string' || typeof time === 'number' ? time : Date.now());
  const head =
    `${LETTER[Number(level)] ?? 'I'}${pad(t.getMonth() + 1)}${pad(t.getDate())} ` +
    `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}.${pad(t.getMilliseconds(), 3)}000 ` +
    `${String(process.pid).padStart(7)} kube-proxy-ts]`;
  const kv = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v)}`);
  return `${[head, JSON.stringify(String(msg ?? '')), ...kv].join(' ')}\n`;
}

export const log = pino(
  {
    base: undefined,
    level: process.env.KUBE_PROXY_TS_LOG_LEVEL ?? 'info',
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  { write: (line: string) => stderr.write(format === 'text' ? klogLine(line) : line) },
);

export type Logger = typeof log;

export function setLogLevel(level: string): void {
  log.level = level;
}

export function configureLogging(o: { format: LogFormat; level: string }): void {
  format = o.format;
  log.level = o.level;
}

/** klog's -v as a pino level: 0-3 info (upstream's everyday V(2) lines included), 4-5 debug, 6 and more trace. */
export function levelForVerbosity(v: number): string {
  if (v >= 6) return 'trace';
  if (v >= 4) return 'debug';
  return 'info';
}
