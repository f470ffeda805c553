// Command-line flags (kube-proxy's names where they exist) and the KubeProxyConfiguration file.
import { readFile } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { parseCIDR } from './model/ip.ts';
import type { IPFamily, ProxyConfig } from './model/types.ts';
import { type IptablesBackend, MODES, type ModeName } from './modes/types.ts';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

interface FlagSpec {
  name: string;
  aliases?: string[];
  type: 'string' | 'boolean';
  help: string;
  arg?: string;
}

export const RUN_FLAGS: FlagSpec[] = [
  { name: 'mode', aliases: ['proxy-mode'], type: 'string', arg: 'MODE', help: 'iptables (default), nftables or userspace' },
  { name: 'dry-run', type: 'boolean', help: 'print the exact rules for this node (as for a node with none yet) and exit' },
  { name: 'ip-family', type: 'string', arg: 'IPv4|IPv6', help: "with --dry-run: only this family's rules (iptables, userspace: IPv4 by default)" },
  { name: 'cleanup', type: 'boolean', help: 'remove every rule this proxy (and kube-proxy) installed, in every mode, and exit' },
  { name: 'from', type: 'string', arg: 'FILE', help: 'read Services, EndpointSlices and Nodes from a YAML/JSON file instead of the API server' },
  { name: 'kubeconfig', type: 'string', arg: 'PATH', help: 'kubeconfig to reach the API server (default: in-cluster config)' },
  { name: 'hostname-override', type: 'string', arg: 'NAME', help: "this node's name (default: the host name)" },
  { name: 'cluster-cidr', type: 'string', arg: 'CIDR[,CIDR]', help: 'pod CIDR(s); traffic from elsewhere to a ClusterIP is masqueraded' },
  { name: 'masquerade-all', type: 'boolean', help: 'masquerade all traffic to ClusterIPs' },
  { name: 'nodeport-addresses', type: 'string', arg: 'CIDR[,CIDR]', help: 'only local addresses in these CIDRs accept NodePorts (default: all)' },
  { name: 'healthz-bind-address', type: 'string', arg: 'IP:PORT', help: 'health server address (default 0.0.0.0:10256)' },
  { name: 'metrics-bind-address', type: 'string', arg: 'IP:PORT', help: 'metrics server address (default 127.0.0.1:10249)' },
  { name: 'min-sync-period', type: 'string', arg: 'DURATION', help: 'minimum interval between syncs (default 1s)' },
  { name: 'sync-period', type: 'string', arg: 'DURATION', help: 'interval of full resyncs (default 30s)' },
  { name: 'iptables-backend', type: 'string', arg: 'auto|nft|legacy', help: 'which iptables binaries to use (default auto: whichever holds rules)' },
  { name: 'config', type: 'string', arg: 'FILE', help: 'a KubeProxyConfiguration file; flags given on the command line override it' },
  { name: 'log-level', aliases: ['v'], type: 'string', arg: 'LEVEL', help: 'trace, debug, info (default), warn, error' },
  { name: 'help', aliases: ['h'], type: 'boolean', help: 'show this help' },
];

export const STATE_FLAGS: FlagSpec[] = [
  { name: 'from', type: 'string', arg: 'FILE', help: 'YAML/JSON file with Services, EndpointSlices and Nodes' },
  { name: 'node-url', type: 'string', arg: 'URL', help: 'ask a running proxy instead of reading a file: its metrics address, e.g. http://127.0.0.1:10249' },
  { name: 'hostname-override', type: 'string', arg: 'NAME', help: "this node's name (default: the host name)" },
  { name: 'cluster-cidr', type: 'string', arg: 'CIDR[,CIDR]', help: 'pod CIDR(s)' },
  { name: 'output', aliases: ['o'], type: 'string', arg: 'table|json', help: 'output format (default table)' },
  { name: 'log-level', aliases: ['v'], type: 'string', arg: 'LEVEL', help: 'log level' },
  { name: 'help', aliases: ['h'], type: 'boolean', help: 'show this help' },
];

export type Flags = Record<string, string | boolean>;

/** Parses `--flag value`, `--flag=value` and `-o value`; unknown flags and stray arguments are errors. */
export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[]): Flags {
  const byName = new Map<string, FlagSpec>();
  for (const s of specs) {
    byName.set(s.name, s);
    for (const a of s.aliases ?? []) byName.set(a, s);
  }
  const out: Flags = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--?([a-zA-Z][-a-zA-Z0-9]*)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    const spec = byName.get(m[1]!);
    if (!spec) throw new UsageError(`unknown flag ${arg.split('=')[0]}`);
    if (spec.type === 'boolean') {
      if (m[2] === undefined) out[spec.name] = true;
      else if (m[2] === 'true' || m[2] === 'false') out[spec.name] = m[2] === 'true';
      else throw new UsageError(`--${spec.name} takes true or false, not ${JSON.stringify(m[2])}`);
    } else {
      const v = m[2] ?? argv[++i];
      if (v === undefined) throw new UsageError(`--${spec.name} needs a value`);
      out[spec.name] = v;
    }
  }
  return out;
}

export function flagsHelp(specs: readonly FlagSpec[]): string {
  const rows = specs.map((s) => {
    const names = [s.name, ...(s.aliases ?? [])].map((n) => (n.length === 1 ? `-${n}` : `--${n}`)).join(', ');
    return [`${names}${s.arg ? ` ${s.arg}` : ''}`, s.help] as const;
  });
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([a, h]) => `  ${a.padEnd(w)}  ${h}`).join('\n');
}

/** Parses a Go duration ("1s", "500ms", "1m30s", "2h") into milliseconds. */
export function parseDuration(s: string, what: string): number {
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  if (s === '' || pos !== s.length) throw new UsageError(`${what}: ${JSON.stringify(s)} is not a duration (like 1s, 500ms, 1m30s)`);
  return total;
}

export function parseCIDRList(s: string, what: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
    .map((x) => {
      const c = parseCIDR(x);
      if (!c) throw new UsageError(`${what}: ${JSON.stringify(x)} is not a CIDR`);
      return c.cidr;
    });
}

export function parseBindAddress(s: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${what}: ${JSON.stringify(s)} is not IP:PORT`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

function parseIPFamily(v: string | undefined): IPFamily | null {
  if (v === undefined || v === '') return null;
  if (v === 'IPv4' || v === 'IPv6') return v;
  throw new UsageError(`--ip-family: ${JSON.stringify(v)} is not IPv4 or IPv6`);
}

export interface RunOptions {
  mode: ModeName;
  dryRun: boolean;
  /** --ip-family: with --dry-run, only this family's rules; null: the mode's default (see daemon/run.ts dryRun). */
  ipFamily: IPFamily | null;
  cleanup: boolean;
  from: string | null;
  kubeconfig: string | null;
  proxy: ProxyConfig;
  healthz: { host: string; port: number } | null;
  metrics: { host: string; port: number } | null;
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  iptablesBackend: IptablesBackend;
  logLevel: string;
}

/** The fields of a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) that map onto our flags, as flags. */
export async function readConfigFile(file: string): Promise<Flags> {
  let doc: unknown;
  try {
    doc = parseYaml(await readFile(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`--config ${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!doc || typeof doc !== 'object') throw new UsageError(`--config ${file}: not a KubeProxyConfiguration`);
  const c = doc as Record<string, any>;
  if (c.kind !== undefined && c.kind !== 'KubeProxyConfiguration') throw new UsageError(`--config ${file}: kind is ${c.kind}, not KubeProxyConfiguration`);
  const out: Flags = {};
  const set = (flag: string, v: unknown) => {
    if (v === undefined || v === null || v === '') return;
    if (Array.isArray(v)) out[flag] = v.join(',');
    else out[flag] = typeof v === 'boolean' ? v : String(v);
  };
  set('mode', c.mode);
  set('cluster-cidr', c.clusterCIDR);
  set('hostname-override', c.hostnameOverride);
  set('healthz-bind-address', c.healthzBindAddress);
  set('metrics-bind-address', c.metricsBindAddress);
  set('nodeport-addresses', c.nodePortAddresses);
  set('kubeconfig', c.clientConnection?.kubeconfig);
  const modeCfg = c.mode === 'nftables' ? c.nftables : c.iptables;
  set('masquerade-all', modeCfg?.masqueradeAll ?? c.iptables?.masqueradeAll);
  set('min-sync-period', modeCfg?.minSyncPeriod ?? c.minSyncPeriod);
  set('sync-period', modeCfg?.syncPeriod ?? c.syncPeriod);
  set('log-level', c.logging?.verbosity !== undefined ? (Number(c.logging.verbosity) >= 4 ? 'debug' : 'info') : undefined);
  return out;
}

export async function resolveRunOptions(argv: readonly string[]): Promise<RunOptions | 'help'> {
  const cli = parseFlags(argv, RUN_FLAGS);
  if (cli.help) return 'help';
  const fileFlags = typeof cli.config === 'string' ? await readConfigFile(cli.config) : {};
  const f: Flags = { ...fileFlags, ...cli };
  const str = (k: string): string | undefined => (typeof f[k] === 'string' ? (f[k] as string) : undefined);
  const mode = (str('mode') ?? 'iptables') as ModeName;
  if (!MODES.includes(mode)) throw new UsageError(`--mode: ${JSON.stringify(mode)} is not one of ${MODES.join(', ')}`);
  const backend = (str('iptables-backend') ?? 'auto') as IptablesBackend;
  if (!['auto', 'nft', 'legacy'].includes(backend)) throw new UsageError(`--iptables-backend: ${JSON.stringify(backend)} is not auto, nft or legacy`);
  const healthz = str('healthz-bind-address') ?? '0.0.0.0:10256';
  const metrics = str('metrics-bind-address') ?? '127.0.0.1:10249';
  return {
    mode,
    dryRun: f['dry-run'] === true,
    ipFamily: parseIPFamily(str('ip-family')),
    cleanup: f.cleanup === true,
    from: str('from') ?? null,
    kubeconfig: str('kubeconfig') ?? null,
    proxy: {
      hostname: str('hostname-override') || osHostname(),
      clusterCIDRs: parseCIDRList(str('cluster-cidr') ?? '', '--cluster-cidr'),
      masqueradeAll: f['masquerade-all'] === true || f['masquerade-all'] === 'true',
      nodePortAddresses: parseCIDRList(str('nodeport-addresses') ?? '', '--nodeport-addresses'),
    },
    // An empty address (or port 0) turns a server off.
    healthz: healthz === '' ? null : parseBindAddress(healthz, '--healthz-bind-address'),
    metrics: metrics === '' ? null : parseBindAddress(metrics, '--metrics-bind-address'),
    minSyncPeriodMs: parseDuration(str('min-sync-period') ?? '1s', '--min-sync-period'),
    syncPeriodMs: parseDuration(str('sync-period') ?? '30s', '--sync-period'),
    iptablesBackend: backend,
    logLevel: str('log-level') ?? 'info',
  };
}
