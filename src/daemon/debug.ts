// Asking the running proxy (on the metrics address, localhost by default; never on the public health port):
//   GET /debug/state                     the desired state, exactly `state -o json` for the same objects
//   GET /debug/rules[?family=IPv6]       what the last successful sync applied, exactly as --dry-run prints it
//                                        for that state; the sync's time and outcome in X-Last-Sync-* headers
//   GET /debug/explain?to=IP:PORT[&src=IP|node][&proto=tcp|udp|sctp]   the explain answer from the live state
//   GET /debug/drift[?family=IPv6]       what the periodic checks found in the kernel that differs from what
//                                        was applied (a rule deleted, a chain added by hand)
// Answers are built on request from the sync loops' snapshots: nothing here runs on the sync path.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseHostPort, parseIP } from '../model/addr.ts';
import { explain, type PacketQuery } from '../model/explain.ts';
import type { DesiredState, IPFamily } from '../model/types.ts';
import type { DryRunFormat } from '../modes/types.ts';
import { stateToJSON } from '../model/view.ts';

/** The last sync of one family, as the daemon saw it. */
export interface SyncRecord {
  at: Date;
  outcome: 'ok' | 'failed';
  /** The error of a failed sync. */
  error?: string;
}

/** What one family's pipeline tells the debug endpoints. */
export interface FamilyView {
  family: IPFamily;
  /** The state of the last commit (what the proxy wants now). */
  current(): DesiredState;
  /** The state the last successful sync applied, or null before the first. */
  applied(): DesiredState | null;
  lastSync(): SyncRecord | null;
  /** The complete rules for a state, exactly as --dry-run prints them. */
  render(state: DesiredState): string;
  /** Differences the last periodic check found between the applied rules and the kernel ([] for none; null: not checked yet). */
  drift(): string[] | null;
}

export interface DebugOptions {
  families: readonly FamilyView[];
  /** Joins both families' rules into one output, as --dry-run does without --ip-family (null: one family per output). */
  combine: DryRunFormat['combine'];
}

const TEXT = { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' };
const JSON_TYPE = { 'content-type': 'application/json', 'x-content-type-options': 'nosniff' };

/** Handles /debug/*; returns false for any other path (the caller answers it). */
export function handleDebug(req: IncomingMessage, res: ServerResponse, o: DebugOptions): boolean {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (!url.pathname.startsWith('/debug/')) return false;
  if (req.method !== 'GET') {
    res.writeHead(405, TEXT).end('only GET\n');
    return true;
  }
  try {
    const answer = route(url, o);
    res.writeHead(answer.code, { ...(answer.json ? JSON_TYPE : TEXT), ...answer.headers }).end(answer.body);
  } catch (e) {
    res.writeHead(500, TEXT).end(`${(e as Error).message}\n`);
  }
  return true;
}

interface Answer {
  code: number;
  body: string;
  json?: boolean;
  headers?: Record<string, string>;
}

function route(url: URL, o: DebugOptions): Answer {
  switch (url.pathname) {
    case '/debug/state':
      return { code: 200, json: true, body: stateToJSON(o.families.map((f) => f.current())) };
    case '/debug/rules':
      return rules(url, o);
    case '/debug/explain':
      return explainAnswer(url, o);
    case '/debug/drift':
      return drift(url, o);
    default:
      return { code: 404, body: 'unknown debug endpoint: /debug/state, /debug/rules, /debug/explain, /debug/drift\n' };
  }
}

/** The families a request asks for: ?family=IPv4|IPv6, or all. */
function familiesOf(url: URL, o: DebugOptions): FamilyView[] | Answer {
  const want = url.searchParams.get('family');
  if (want === null) return [...o.families];
  const f = o.families.find((x) => x.family === want);
  return f ? [f] : { code: 400, body: `family must be one of ${o.families.map((x) => x.family).join(', ')}\n` };
}

function rules(url: URL, o: DebugOptions): Answer {
  let fams = familiesOf(url, o);
  if (!Array.isArray(fams)) return fams;
  // Without ?family, a mode whose output holds one family shows IPv4, as --dry-run does.
  if (url.searchParams.get('family') === null && (o.combine === null || fams.length < 2)) fams = fams.slice(0, 1);
  const headers: Record<string, string> = {};
  const texts: string[] = [];
  for (const f of fams) {
    const state = f.applied();
    const last = f.lastSync();
    headers[`x-last-sync-${f.family.toLowerCase()}`] = last
      ? `${last.at.toISOString()} ${last.outcome}${last.error ? `: ${oneLine(last.error)}` : ''}`
      : 'never';
    if (state === null) return { code: 503, body: `no successful ${f.family} sync yet\n`, headers };
    texts.push(f.render(state));
  }
  const body = texts.length === 2 && o.combine ? [...o.combine(texts[0]!, texts[1]!)].join('') : texts[0]!;
  return { code: 200, body, headers, json: body.trimStart().startsWith('{') };
}

function explainAnswer(url: URL, o: DebugOptions): Answer {
  const to = parseHostPort(url.searchParams.get('to') ?? '');
  if (!to) return { code: 400, body: 'to=IP:PORT (or [IPv6]:PORT) is required\n' };
  const srcText = url.searchParams.get('src') ?? 'node';
  const src = srcText === 'node' ? null : parseIP(srcText);
  if (srcText !== 'node' && (!src || src.family !== to.ip.family)) return { code: 400, body: `src must be 'node' or an ${to.ip.family} address\n` };
  const proto = (url.searchParams.get('proto') ?? 'tcp').toUpperCase();
  if (proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') return { code: 400, body: 'proto must be tcp, udp or sctp\n' };
  const fam = o.families.find((f) => f.family === to.ip.family);
  if (!fam) return { code: 400, body: `this proxy does not serve ${to.ip.family}\n` };
  const q: PacketQuery = { dst: to.ip.ip, port: to.port, protocol: proto, src: src?.ip ?? 'node' };
  if (url.searchParams.get('dst-local') === 'true') q.dstIsLocal = true;
  return { code: 200, json: true, body: `${JSON.stringify(explain(q, fam.current()), null, 2)}\n` };
}

function drift(url: URL, o: DebugOptions): Answer {
  const fams = familiesOf(url, o);
  if (!Array.isArray(fams)) return fams;
  const report = Object.fromEntries(fams.map((f) => [f.family, { checked: f.drift() !== null, differences: f.drift() ?? [] }]));
  return { code: 200, json: true, body: `${JSON.stringify(report, null, 2)}\n` };
}

const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ').slice(0, 300);
