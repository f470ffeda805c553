// The run command's flags and configuration, as upstream kube-proxy takes them (cmd/kube-proxy/app/options.go):
// every Linux flag of kube-proxy under its own name, meaning and default, plus this proxy's own. As upstream,
// flags set fields of a KubeProxyConfiguration; with --config the file replaces them all, except
// --hostname-override and the logging flags (and the flags that are options, not configuration: --cleanup,
// --init-only, --write-config-to, --master, and this proxy's own). Upstream flags this proxy cannot apply are
// accepted and said so once at start (RunOptions.notices); a valid kube-proxy command line never exits here.
import { hostname as osHostname } from 'node:os';
import { FAMILIES, familyOf, parseCIDR, parseIP } from './model/addr.ts';
import { DEFAULT_MASQUERADE_BIT, DEFAULT_NODEPORT_RANGE, type DetectLocal, type IPFamily, type ProxyConfig } from './model/types.ts';
import { checkDetectLocal } from './model/local-detect.ts';
import { type IptablesBackend, MODES, type ModeName } from './modes/types.ts';
import {
  type ConfigWarning,
  type KubeProxyConfiguration,
  HEALTHZ_PORT,
  METRICS_PORT,
  appendPortIfNeeded,
  applyDefaults,
  applyPlatformDefaults,
  readConfigFile,
  zeroConfiguration,
} from './config-file.ts';
import { type FlagSpec, type ParsedFlags, UsageError, parseBoolMap, parseDuration, parseFloat32, parseFlags, parseInt32 } from './flags.ts';
import { type LogFormat, levelForVerbosity } from './log.ts';

export { UsageError, flagsHelp, parseDuration, parseFlags } from './flags.ts';

type C = KubeProxyConfiguration;

/** A flag of the run command. */
export interface RunFlag extends FlagSpec {
  /** An upstream kube-proxy flag (listed in the docs' table), not one of this proxy's own. */
  upstream?: true;
  /** Where the value goes in the configuration; such a flag is ignored when --config is given (as upstream). */
  set?: (c: C, value: string) => void;
  /** Still applies with --config (upstream: --hostname-override and the logging flags). */
  withConfig?: true;
  /** Accepted, not applied here, and why: said once at start when given. */
  ignored?: string;
}

const IPVS = 'IPVS mode is not offered by this proxy';
const KLOG = 'klog flag: logs always go to stderr, unbuffered';
const dur = (v: string, flag: string) => parseDuration(v, `--${flag}`);
const int = (v: string, flag: string, range?: { min: number; max: number }) => parseInt32(v, `--${flag}`, range);
const bool = (v: string) => v === 'true';

/** Upstream's flags (kube-proxy --help on Linux), in its order, then this proxy's own. */
export const RUN_FLAGS: RunFlag[] = [
  // ---- upstream: options (not configuration fields)
  {
    upstream: true,
    name: 'config',
    kind: 'string',
    arg: 'FILE',
    help: 'a KubeProxyConfiguration file; it replaces every configuration flag except --hostname-override and the logging flags',
  },
  { upstream: true, name: 'write-config-to', kind: 'string', arg: 'FILE', help: 'write the resolved configuration to this file and exit' },
  { upstream: true, name: 'cleanup', kind: 'bool', help: 'remove every rule this proxy (and kube-proxy) installs, in every mode and family, and exit' },
  { upstream: true, name: 'init-only', kind: 'bool', help: 'apply the settings that need full privileges (conntrack sysctls) and exit' },
  { upstream: true, name: 'master', kind: 'string', arg: 'URL', help: "the API server's address (overrides the kubeconfig's)" },
  // ---- upstream: configuration fields
  {
    upstream: true,
    name: 'feature-gates',
    kind: 'list',
    arg: 'NAME=BOOL,...',
    help: 'feature gates (accepted)',
    ignored: "upstream's feature gates do not change this proxy",
    set: (c, v) => Object.assign(c.featureGates, parseBoolMap(v, '--feature-gates')),
  },
  {
    upstream: true,
    name: 'kubeconfig',
    kind: 'string',
    arg: 'PATH',
    help: 'kubeconfig to reach the API server (default: in-cluster config)',
    set: (c, v) => (c.clientConnection.kubeconfig = v),
  },
  {
    upstream: true,
    name: 'kube-api-content-type',
    kind: 'string',
    arg: 'TYPE',
    help: 'content type of API requests: application/vnd.kubernetes.protobuf reads Service and EndpointSlice lists in protobuf, anything else in JSON',
    default: 'application/vnd.kubernetes.protobuf',
    set: (c, v) => (c.clientConnection.contentType = v),
  },
  {
    upstream: true,
    name: 'kube-api-burst',
    kind: 'string',
    arg: 'N',
    help: 'burst of API requests',
    default: '10',
    set: (c, v) => (c.clientConnection.burst = int(v, 'kube-api-burst', { min: 0, max: 2 ** 31 - 1 })),
  },
  {
    upstream: true,
    name: 'kube-api-qps',
    kind: 'string',
    arg: 'QPS',
    help: 'API requests per second',
    default: '5',
    set: (c, v) => (c.clientConnection.qps = parseFloat32(v, '--kube-api-qps')),
  },
  {
    upstream: true,
    name: 'hostname-override',
    kind: 'string',
    arg: 'NAME',
    help: "this node's name (default: the host name)",
    withConfig: true,
    set: (c, v) => (c.hostnameOverride = v),
  },
  {
    upstream: true,
    name: 'bind-address',
    kind: 'string',
    arg: 'IP',
    help: "the node's primary IP of its family (kube-proxy binds nothing to it)",
    default: '0.0.0.0',
    set: (c, v) => (c.bindAddress = v),
  },
  {
    upstream: true,
    name: 'healthz-bind-address',
    kind: 'string',
    arg: 'IP[:PORT]',
    help: '/healthz and /livez; empty turns it off',
    default: '0.0.0.0:10256',
    set: (c, v) => (c.healthzBindAddress = v),
  },
  {
    upstream: true,
    name: 'metrics-bind-address',
    kind: 'string',
    arg: 'IP[:PORT]',
    help: '/metrics, /healthz, /proxyMode; empty turns it off',
    default: '127.0.0.1:10249',
    set: (c, v) => (c.metricsBindAddress = v),
  },
  {
    upstream: true,
    name: 'bind-address-hard-fail',
    kind: 'bool',
    help: 'exit when the health or metrics port cannot be bound (else: retried every 5 s)',
    set: (c, v) => (c.bindAddressHardFail = bool(v)),
  },
  {
    upstream: true,
    name: 'profiling',
    kind: 'bool',
    help: 'profiling on /debug/pprof (accepted)',
    ignored: 'no /debug/pprof in a Node.js process (use node --inspect or --cpu-prof)',
    set: (c, v) => (c.enableProfiling = bool(v)),
  },
  {
    upstream: true,
    name: 'show-hidden-metrics-for-version',
    kind: 'string',
    arg: 'X.Y',
    help: 'accepted',
    ignored: 'this proxy has no hidden metrics',
    set: (c, v) => (c.showHiddenMetricsForVersion = v),
  },
  {
    upstream: true,
    name: 'proxy-mode',
    aliases: ['mode'],
    kind: 'string',
    arg: 'MODE',
    help: `${MODES.join(', ')}; ipvs runs the iptables mode`,
    default: 'iptables',
    set: (c, v) => (c.mode = v),
  },
  {
    upstream: true,
    name: 'iptables-masquerade-bit',
    kind: 'string',
    arg: 'BIT',
    help: 'fwmark bit of packets to masquerade in the iptables mode, [0, 31] (nftables: nftables.masqueradeBit in --config)',
    default: '14',
    set: (c, v) => (c.iptables.masqueradeBit = int(v, 'iptables-masquerade-bit', { min: 0, max: 31 })),
  },
  {
    upstream: true,
    name: 'masquerade-all',
    kind: 'bool',
    help: 'masquerade all traffic to ClusterIPs',
    set: (c, v) => {
      c.iptables.masqueradeAll = bool(v);
      c.nftables.masqueradeAll = bool(v);
    },
  },
  {
    upstream: true,
    name: 'iptables-localhost-nodeports',
    kind: 'bool',
    help: 'IPv4 NodePorts also on 127.0.0.1 (iptables mode)',
    default: 'true',
    set: (c, v) => (c.iptables.localhostNodePorts = bool(v)),
  },
  {
    upstream: true,
    name: 'iptables-sync-period',
    aliases: ['sync-period'],
    kind: 'string',
    arg: 'DURATION',
    help: 'a full resync at least this often (every mode); must be > 0',
    default: '30s',
    set: (c, v) => (c.iptables.syncPeriod = c.nftables.syncPeriod = dur(v, 'iptables-sync-period')),
  },
  {
    upstream: true,
    name: 'iptables-min-sync-period',
    aliases: ['min-sync-period'],
    kind: 'string',
    arg: 'DURATION',
    help: 'at most one sync per this period (every mode); 0 syncs on every change',
    default: '1s',
    set: (c, v) => (c.iptables.minSyncPeriod = c.nftables.minSyncPeriod = dur(v, 'iptables-min-sync-period')),
  },
  {
    upstream: true,
    name: 'ipvs-sync-period',
    kind: 'string',
    arg: 'DURATION',
    help: 'accepted',
    ignored: IPVS,
    set: (c, v) => (c.ipvs.syncPeriod = dur(v, 'ipvs-sync-period')),
  },
  {
    upstream: true,
    name: 'ipvs-min-sync-period',
    kind: 'string',
    arg: 'DURATION',
    help: 'accepted',
    ignored: IPVS,
    set: (c, v) => (c.ipvs.minSyncPeriod = dur(v, 'ipvs-min-sync-period')),
  },
  { upstream: true, name: 'ipvs-scheduler', kind: 'string', arg: 'NAME', help: 'accepted', ignored: IPVS, set: (c, v) => (c.ipvs.scheduler = v) },
  {
    upstream: true,
    name: 'ipvs-exclude-cidrs',
    kind: 'list',
    arg: 'CIDR,...',
    help: 'accepted',
    ignored: IPVS,
    set: (c, v) => (c.ipvs.excludeCIDRs = v.split(',').filter(Boolean)),
  },
  { upstream: true, name: 'ipvs-strict-arp', kind: 'bool', help: 'accepted', ignored: IPVS, set: (c, v) => (c.ipvs.strictARP = bool(v)) },
  {
    upstream: true,
    name: 'ipvs-tcp-timeout',
    kind: 'string',
    arg: 'DURATION',
    help: 'accepted',
    ignored: IPVS,
    set: (c, v) => (c.ipvs.tcpTimeout = dur(v, 'ipvs-tcp-timeout')),
  },
  {
    upstream: true,
    name: 'ipvs-tcpfin-timeout',
    kind: 'string',
    arg: 'DURATION',
    help: 'accepted',
    ignored: IPVS,
    set: (c, v) => (c.ipvs.tcpFinTimeout = dur(v, 'ipvs-tcpfin-timeout')),
  },
  {
    upstream: true,
    name: 'ipvs-udp-timeout',
    kind: 'string',
    arg: 'DURATION',
    help: 'accepted',
    ignored: IPVS,
    set: (c, v) => (c.ipvs.udpTimeout = dur(v, 'ipvs-udp-timeout')),
  },
  {
    upstream: true,
    name: 'detect-local-mode',
    kind: 'string',
    arg: 'MODE',
    help: 'how traffic from local pods is recognised: ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix',
    default: 'ClusterCIDR',
    set: (c, v) => (c.detectLocalMode = v),
  },
  {
    upstream: true,
    name: 'pod-bridge-interface',
    kind: 'string',
    arg: 'NAME',
    help: 'the bridge of --detect-local-mode BridgeInterface',
    set: (c, v) => (c.detectLocal.bridgeInterface = v),
  },
  {
    upstream: true,
    name: 'pod-interface-name-prefix',
    kind: 'string',
    arg: 'PREFIX',
    help: 'the prefix of --detect-local-mode InterfaceNamePrefix',
    set: (c, v) => (c.detectLocal.interfaceNamePrefix = v),
  },
  {
    upstream: true,
    name: 'cluster-cidr',
    kind: 'string',
    arg: 'CIDR[,CIDR]',
    help: 'pod CIDRs (one per family): traffic from elsewhere to a ClusterIP is masqueraded',
    set: (c, v) => (c.clusterCIDR = v),
  },
  {
    upstream: true,
    name: 'nodeport-addresses',
    kind: 'list',
    arg: 'CIDR,...|primary',
    help: "NodePorts only on local addresses in these CIDRs, or on the node's primary IPs (default: all; nftables: primary)",
    set: (c, v) =>
      (c.nodePortAddresses = v
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean)),
  },
  {
    upstream: true,
    name: 'oom-score-adj',
    kind: 'string',
    arg: 'N',
    help: "this process's oom_score_adj, [-1000, 1000]",
    default: '-999',
    set: (c, v) => (c.oomScoreAdj = int(v, 'oom-score-adj', { min: -1000, max: 1000 })),
  },
  {
    upstream: true,
    name: 'conntrack-max-per-core',
    kind: 'string',
    arg: 'N',
    help: 'nf_conntrack_max per CPU (0 leaves nf_conntrack_max as it is)',
    default: '32768',
    set: (c, v) => (c.conntrack.maxPerCore = int(v, 'conntrack-max-per-core', { min: 0, max: 2 ** 31 - 1 })),
  },
  {
    upstream: true,
    name: 'conntrack-min',
    kind: 'string',
    arg: 'N',
    help: 'nf_conntrack_max at least this',
    default: '131072',
    set: (c, v) => (c.conntrack.min = int(v, 'conntrack-min', { min: 0, max: 2 ** 31 - 1 })),
  },
  {
    upstream: true,
    name: 'conntrack-tcp-timeout-established',
    kind: 'string',
    arg: 'DURATION',
    help: 'idle timeout of established TCP flows (0 leaves it)',
    default: '24h0m0s',
    set: (c, v) => (c.conntrack.tcpEstablishedTimeout = dur(v, 'conntrack-tcp-timeout-established')),
  },
  {
    upstream: true,
    name: 'conntrack-tcp-timeout-close-wait',
    kind: 'string',
    arg: 'DURATION',
    help: 'timeout of TCP flows in CLOSE_WAIT (0 leaves it)',
    default: '1h0m0s',
    set: (c, v) => (c.conntrack.tcpCloseWaitTimeout = dur(v, 'conntrack-tcp-timeout-close-wait')),
  },
  {
    upstream: true,
    name: 'conntrack-tcp-be-liberal',
    kind: 'bool',
    help: 'nf_conntrack_tcp_be_liberal = 1',
    set: (c, v) => (c.conntrack.tcpBeLiberal = bool(v)),
  },
  {
    upstream: true,
    name: 'conntrack-udp-timeout',
    kind: 'string',
    arg: 'DURATION',
    help: 'idle timeout of unreplied UDP flows (0 leaves it)',
    set: (c, v) => (c.conntrack.udpTimeout = dur(v, 'conntrack-udp-timeout')),
  },
  {
    upstream: true,
    name: 'conntrack-udp-timeout-stream',
    kind: 'string',
    arg: 'DURATION',
    help: 'idle timeout of assured UDP flows (0 leaves it)',
    set: (c, v) => (c.conntrack.udpStreamTimeout = dur(v, 'conntrack-udp-timeout-stream')),
  },
  {
    upstream: true,
    name: 'config-sync-period',
    kind: 'string',
    arg: 'DURATION',
    help: 'informer resync period (accepted)',
    default: '15m0s',
    ignored: "informer resyncs re-deliver cached objects; this proxy's full sync every sync period covers them",
    set: (c, v) => (c.configSyncPeriod = dur(v, 'config-sync-period')),
  },
  // Deprecated upstream, still accepted there: a port for the default address (0 turns the server off).
  { upstream: true, name: 'healthz-port', kind: 'string', arg: 'PORT', help: 'deprecated: use --healthz-bind-address', default: '10256' },
  { upstream: true, name: 'metrics-port', kind: 'string', arg: 'PORT', help: 'deprecated: use --metrics-bind-address', default: '10249' },
  // ---- upstream: logging (component-base logs), applied with --config too
  {
    upstream: true,
    name: 'v',
    aliases: ['v'],
    kind: 'string',
    arg: 'N',
    help: 'log verbosity: 0-3 info, 4-5 debug, 6+ trace',
    default: '0',
    withConfig: true,
    set: (c, v) => (c.logging.verbosity = verbosity(v)),
  },
  {
    upstream: true,
    name: 'logging-format',
    kind: 'string',
    arg: 'json|text',
    help: 'log line format (upstream defaults to text)',
    default: 'json',
    withConfig: true,
    set: (c, v) => (c.logging.format = v),
  },
  {
    upstream: true,
    name: 'vmodule',
    kind: 'list',
    arg: 'PATTERN=N,...',
    help: 'accepted',
    withConfig: true,
    ignored: 'per-file verbosity has no meaning here',
  },
  {
    upstream: true,
    name: 'log-flush-frequency',
    kind: 'string',
    arg: 'DURATION',
    help: 'accepted',
    default: '5s',
    withConfig: true,
    ignored: 'logs are written at once, unbuffered',
    set: (c, v) => (c.logging.flushFrequency = dur(v, 'log-flush-frequency')),
  },
  { upstream: true, name: 'log-json-split-stream', kind: 'bool', help: 'accepted', withConfig: true, ignored: 'every log line goes to stderr' },
  {
    upstream: true,
    name: 'log-json-info-buffer-size',
    kind: 'string',
    arg: 'SIZE',
    help: 'accepted',
    withConfig: true,
    ignored: 'logs are written at once, unbuffered',
  },
  { upstream: true, name: 'log-text-split-stream', kind: 'bool', help: 'accepted', withConfig: true, ignored: 'every log line goes to stderr' },
  {
    upstream: true,
    name: 'log-text-info-buffer-size',
    kind: 'string',
    arg: 'SIZE',
    help: 'accepted',
    withConfig: true,
    ignored: 'logs are written at once, unbuffered',
  },
  // klog's own flags, which kube-proxy still registers.
  ...['add-dir-header', 'alsologtostderr', 'logtostderr', 'one-output', 'skip-headers', 'skip-log-headers'].map((name): RunFlag => ({
    upstream: true,
    name,
    kind: 'bool',
    help: 'accepted (klog)',
    withConfig: true,
    ignored: KLOG,
  })),
  ...['log-backtrace-at', 'log-dir', 'log-file', 'log-file-max-size', 'stderrthreshold'].map((name): RunFlag => ({
    upstream: true,
    name,
    kind: 'string',
    arg: 'VALUE',
    help: 'accepted (klog)',
    withConfig: true,
    ignored: KLOG,
  })),
  { upstream: true, name: 'version', kind: 'string', arg: '[=raw]', help: 'print the version and exit' },
  { upstream: true, name: 'help', aliases: ['h'], kind: 'bool', help: 'show this help' },
  // ---- this proxy's own
  { name: 'dry-run', kind: 'bool', help: 'print the exact rules for this node (as for a node with none yet) and exit' },
  { name: 'ip-family', kind: 'string', arg: 'IPv4|IPv6', help: "with --dry-run: only this family's rules (iptables, userspace: IPv4 by default)" },
  { name: 'from', kind: 'string', arg: 'FILE', help: 'read Services, EndpointSlices and Nodes from a YAML/JSON file instead of the API server' },
  { name: 'iptables-backend', kind: 'string', arg: 'auto|nft|legacy', help: 'which iptables binaries (default auto: whichever holds rules)' },
  { name: 'log-level', kind: 'string', arg: 'LEVEL', help: 'trace, debug, info, warn, error (overrides -v)' },
  {
    name: 'service-node-port-range',
    kind: 'string',
    arg: 'MIN-MAX',
    help: "the API server's --service-node-port-range (default 30000-32767): NodePorts and health-check node ports outside it are reported",
  },
  { name: 'refuse-out-of-range-nodeports', kind: 'bool', help: 'leave out NodePorts outside --service-node-port-range instead of only reporting them' },
];

/** `--version` alone is `--version=true`, as upstream's verflag. */
function versionRequested(argv: readonly string[]): string | null {
  for (const a of argv) {
    if (a === '--version' || a === '-version') return 'true';
    const m = /^--?version=(.*)$/.exec(a);
    if (m) return m[1]!;
  }
  return null;
}

/** A numeric -v, or a level name (this proxy's earlier -v LEVEL). */
function verbosity(v: string): number {
  if (/^(trace|debug|info|warn|error|fatal|silent)$/.test(v)) return { trace: 6, debug: 4, info: 0, warn: 0, error: 0, fatal: 0, silent: 0 }[v]!;
  return parseInt32(v, '-v', { min: 0, max: 2 ** 31 - 1 });
}

/** Something said once at start: an upstream flag or field this proxy accepts but does not apply, and the like. */
export interface Notice {
  /** The flag (`--x`) or configuration field (`x.y`). */
  subject: string;
  message: string;
}

export interface ApiOptions {
  /** --master: the API server's URL, overriding the kubeconfig's. */
  master: string | null;
  /** Client-side rate limit of API requests (clientConnection.qps / burst); qps <= 0 means none, as client-go. */
  qps: number;
  burst: number;
  /** serviceProxyName: only objects labelled with this service-proxy-name (empty: those without the label). */
  serviceProxyName: string;
  /**
   * Ask for Service and EndpointSlice lists in protobuf (clientConnection.acceptContentTypes, or contentType when
   * that is empty, names application/vnd.kubernetes.protobuf: upstream's default). Watches are read in JSON.
   */
  protobuf: boolean;
}

export interface RunOptions {
  mode: ModeName;
  dryRun: boolean;
  /** --ip-family: with --dry-run, only this family's rules; null: the mode's default (see daemon/run.ts dryRun). */
  ipFamily: IPFamily | null;
  cleanup: boolean;
  /** --init-only: apply the privileged settings (conntrack) and exit. */
  initOnly: boolean;
  /** --write-config-to: write the resolved configuration there and exit. */
  writeConfigTo: string | null;
  from: string | null;
  kubeconfig: string | null;
  api: ApiOptions;
  proxy: ProxyConfig;
  /**
   * nodePortAddresses is `primary`: NodePorts only on the node's primary IPs, which resolveNodePortAddresses
   * turns into CIDRs once the Node is known (proxy.nodePortAddresses stays [] until then).
   */
  nodePortAddressesPrimary: boolean;
  /** --bind-address when it names an address: the node's primary IP of its family (upstream's NodeIPOverride). */
  nodeIPOverride: string | null;
  healthz: { host: string; port: number } | null;
  metrics: { host: string; port: number } | null;
  /** A health or metrics port that cannot be bound ends the process (else it is retried). */
  bindAddressHardFail: boolean;
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  iptablesBackend: IptablesBackend;
  logging: { format: LogFormat; level: string };
  /** Conntrack sysctls to set at start (the defaulted conntrack section). */
  conntrack: NonNullableFields<KubeProxyConfiguration['conntrack']>;
  oomScoreAdj: number;
  /** --config and the text the proxy started with: a change ends the process, as upstream. */
  configFile: { path: string; text: string } | null;
  /** The resolved configuration (what --write-config-to writes and /configz shows). */
  configuration: KubeProxyConfiguration;
  /** What to say once at start: flags and fields accepted but not applied, flags --config overrides. */
  notices: Notice[];
}

type NonNullableFields<T> = { [K in keyof T]: NonNullable<T[K]> };

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

/** IP:PORT (upstream's IPPortVar), `[v6]:PORT` for IPv6. */
export function parseBindAddress(s: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  const host = m ? (m[1] ?? (m[2] || '0.0.0.0')) : '';
  if (!m || port > 65535 || !parseIP(host)) throw new UsageError(`${what}: ${JSON.stringify(s)} is not IP:PORT`);
  return { host, port };
}

function parseIPFamily(v: string | undefined): IPFamily | null {
  if (v === undefined || v === '') return null;
  if (v === 'IPv4' || v === 'IPv6') return v;
  throw new UsageError(`--ip-family: ${JSON.stringify(v)} is not IPv4 or IPv6`);
}

/** nodeutil.GetHostname: the override, else the host name; trimmed and lower-cased (an override of blanks is an error). */
export function nodeName(override: string, host: () => string = osHostname): string {
  const name = (override === '' ? host() : override).trim().toLowerCase();
  if (name === '') throw new UsageError('empty hostname is invalid (hostname-override)');
  return name;
}

/** Which upstream mode names run which of this proxy's modes, and what to say about it. */
function resolveMode(mode: string, notices: Notice[]): ModeName {
  if (mode === 'ipvs') {
    notices.push({
      subject: 'mode',
      message: 'ipvs: IPVS mode is not offered by this proxy; running the iptables mode, the same services with iptables rules',
    });
    return 'iptables';
  }
  if (!MODES.includes(mode as ModeName)) throw new UsageError(`mode: ${JSON.stringify(mode)} is not one of ${MODES.join(', ')}`);
  return mode as ModeName;
}

function resolveDetectLocal(c: C): DetectLocal {
  const d = detectLocalMode(c);
  // Interface names go into rule text: refused at start as the kernel would (model/local-detect.ts).
  try {
    checkDetectLocal(d);
  } catch (e) {
    throw new UsageError(`detectLocal: ${(e as Error).message}`);
  }
  return d;
}

function detectLocalMode(c: C): DetectLocal {
  switch (c.detectLocalMode) {
    case 'ClusterCIDR':
    case 'NodeCIDR':
      return { mode: c.detectLocalMode };
    case 'BridgeInterface':
      if (c.detectLocal.bridgeInterface === '')
        throw new UsageError('detectLocalMode BridgeInterface needs detectLocal.bridgeInterface (--pod-bridge-interface)');
      return { mode: 'BridgeInterface', bridgeInterface: c.detectLocal.bridgeInterface };
    case 'InterfaceNamePrefix':
      if (c.detectLocal.interfaceNamePrefix === '')
        throw new UsageError('detectLocalMode InterfaceNamePrefix needs detectLocal.interfaceNamePrefix (--pod-interface-name-prefix)');
      return { mode: 'InterfaceNamePrefix', interfaceNamePrefix: c.detectLocal.interfaceNamePrefix };
    default:
      throw new UsageError(`detectLocalMode: ${JSON.stringify(c.detectLocalMode)} is not ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix`);
  }
}

/**
 * --service-node-port-range as kube-apiserver writes it ("30000-32767", or "30000+2767": base and size), and
 * whether ports outside it are left out. A NodePort outside the range the API server allocates from was set
 * by hand (port 22 would take over the node's SSH), so it is always reported.
 */
export function resolveNodePortRange(value: string | undefined, refuse: boolean): { min: number; max: number; refuse: boolean } {
  if (value === undefined || value === '') return { ...DEFAULT_NODEPORT_RANGE, refuse };
  const m = /^(\d{1,5})(?:([-+])(\d{1,5}))?$/.exec(value.trim());
  const what = '--service-node-port-range';
  if (!m) throw new UsageError(`${what}: ${JSON.stringify(value)} is not MIN-MAX or BASE+SIZE`);
  const min = parseInt32(m[1]!, what, { min: 1, max: 65535 });
  const max = m[2] === undefined ? min : m[2] === '-' ? parseInt32(m[3]!, what, { min: 1, max: 65535 }) : min + parseInt32(m[3]!, what, { min: 0, max: 65535 });
  if (max < min || max > 65535) throw new UsageError(`${what}: ${JSON.stringify(value)} is not a range of ports`);
  return { min, max, refuse };
}

/** clusterCIDR: at most one CIDR per family (upstream's validation). */
function resolveClusterCIDRs(s: string): string[] {
  const cidrs = parseCIDRList(s, 'clusterCIDR');
  for (const f of FAMILIES) {
    if (cidrs.filter((c) => familyOf(c) === f).length > 1) throw new UsageError(`clusterCIDR: ${JSON.stringify(s)} has more than one ${f} CIDR`);
  }
  return cidrs;
}

/** nodePortAddresses: CIDRs, or the one keyword 'primary'. */
function resolveNodePortAddresses(list: readonly string[]): { cidrs: string[]; primary: boolean } {
  if (list.length === 1 && list[0] === 'primary') return { cidrs: [], primary: true };
  if (list.includes('primary')) throw new UsageError("nodePortAddresses: 'primary' must be the only value");
  return { cidrs: parseCIDRList(list.join(','), 'nodePortAddresses'), primary: false };
}

/** healthz/metrics bind address: '' turns the server off; an address without a port gets the default. */
function resolveServerAddress(addr: string, port: number, what: string): { host: string; port: number } | null {
  if (addr === '') return null;
  return parseBindAddress(appendPortIfNeeded(addr, port), what);
}

/** The deprecated --healthz-port / --metrics-port: 0 turns the server off, another port replaces the address's. */
function addressFromPortFlag(addr: string, port: string | undefined, flag: string): string {
  if (port === undefined) return addr;
  const p = parseInt32(port, `--${flag}`, { min: 0, max: 65535 });
  if (p === 0) return '';
  const host = addr.replace(/:\d+$/, '');
  return `${host}:${p}`;
}

/**
 * The CIDRs of nodePortAddresses `primary`, once the node's primary IPs are known (upstream: server.go, from
 * the NodeIPs; see daemon/node-watch.ts nodeHostIPs): one per family, --bind-address replacing its own family's;
 * loopback left out.
 */
export function primaryNodePortAddresses(hostIPs: readonly string[], nodeIPOverride: string | null): string[] {
  const out: string[] = [];
  for (const family of FAMILIES) {
    const ip = nodeIPOverride && familyOf(nodeIPOverride) === family ? nodeIPOverride : hostIPs.find((a) => familyOf(a) === family);
    const parsed = ip ? parseIP(ip) : null;
    if (!parsed || parsed.ip === '::1' || parsed.ip.startsWith('127.')) continue;
    out.push(`${parsed.ip}/${family === 'IPv4' ? 32 : 128}`);
  }
  return out;
}

export type ResolveResult = RunOptions | 'help' | { version: string };

/** The run command: flags, or --config with the flags that still apply, defaulted and validated. */
export async function resolveRunOptions(argv: readonly string[]): Promise<ResolveResult> {
  const version = versionRequested(argv);
  if (version !== null && version !== 'false') return { version };
  const parsed = parseFlags(
    argv.filter((a) => !/^--?version(=.*)?$/.test(a)),
    RUN_FLAGS,
  );
  const f = (name: string): string | undefined => parsed.values.get(name);
  if (f('help') === 'true') return 'help';
  const notices: Notice[] = [];
  const configPath = f('config') || null;
  let configuration: C;
  let configFile: RunOptions['configFile'] = null;
  const flags = new Map(RUN_FLAGS.map((s) => [s.name, s]));
  if (configPath) {
    const read = await readConfigFile(configPath);
    configuration = read.config;
    configFile = { path: configPath, text: read.text };
    notices.push(...read.warnings.map((w: ConfigWarning) => ({ subject: w.field, message: w.message })));
    for (const name of parsed.given) {
      const spec = flags.get(name)!;
      if (spec.withConfig) spec.set?.(configuration, f(name)!);
      else if (spec.set || name === 'healthz-port' || name === 'metrics-port')
        notices.push({ subject: `--${name}`, message: 'ignored: --config is given and its file wins (as upstream)' });
    }
  } else {
    // Upstream starts from the defaulted configuration and lets the flags change it: a flag given as 0 stays 0
    // (--iptables-min-sync-period 0 syncs on every change), where the file's 0 means the default.
    configuration = applyDefaults(zeroConfiguration());
    for (const name of parsed.given) flags.get(name)!.set?.(configuration, f(name)!);
    configuration.healthzBindAddress = addressFromPortFlag(configuration.healthzBindAddress, f('healthz-port'), 'healthz-port');
    configuration.metricsBindAddress = addressFromPortFlag(configuration.metricsBindAddress, f('metrics-port'), 'metrics-port');
  }
  applyPlatformDefaults(configuration);
  for (const name of parsed.given) {
    const spec = flags.get(name)!;
    if (spec.ignored && (!configPath || spec.withConfig) && f(name) !== 'false')
      notices.push({ subject: `--${name}`, message: `accepted, not applied: ${spec.ignored}` });
  }
  return resolveConfiguration(configuration, parsed, notices, configFile);
}

/** From the resolved configuration (and this proxy's own flags) to what the proxy runs with. */
function resolveConfiguration(c: C, parsed: ParsedFlags, notices: Notice[], configFile: RunOptions['configFile']): RunOptions {
  const f = (name: string): string | undefined => parsed.values.get(name);
  const mode = resolveMode(c.mode, notices);
  // Each mode reads its own section of the v1alpha1 configuration (upstream's conversion): the nftables mode
  // nftables.*, the iptables-based ones iptables.*.
  const section = mode === 'nftables' ? c.nftables : c.iptables;
  if (section.syncPeriod <= 0) throw new UsageError(`syncPeriod: ${section.syncPeriod} ms must be greater than 0`);
  if (section.minSyncPeriod < 0) throw new UsageError('minSyncPeriod must not be negative');
  if (c.configSyncPeriod <= 0) throw new UsageError('configSyncPeriod must be greater than 0');
  const masqueradeBit = section.masqueradeBit ?? DEFAULT_MASQUERADE_BIT;
  if (masqueradeBit < 0 || masqueradeBit > 31) throw new UsageError(`masqueradeBit: ${masqueradeBit} must be within [0, 31]`);
  const oomScoreAdj = c.oomScoreAdj ?? -999;
  if (oomScoreAdj < -1000 || oomScoreAdj > 1000) throw new UsageError(`oomScoreAdj: ${oomScoreAdj} must be within [-1000, 1000]`);
  const conntrack = c.conntrack as RunOptions['conntrack'];
  for (const [k, v] of Object.entries(conntrack)) if (typeof v === 'number' && v < 0) throw new UsageError(`conntrack.${k} must not be negative`);
  const format = c.logging.format === '' ? 'json' : c.logging.format;
  if (format !== 'json' && format !== 'text') throw new UsageError(`logging format: ${JSON.stringify(format)} is not json or text`);
  if (c.bindAddress !== '' && !parseIP(c.bindAddress)) throw new UsageError(`bindAddress: ${JSON.stringify(c.bindAddress)} is not an IP address`);
  const bind = parseIP(c.bindAddress);
  const nodeIPOverride = bind && bind.ip !== '0.0.0.0' && bind.ip !== '::' ? bind.ip : null;
  const { cidrs: nodePortCIDRs, primary } = resolveNodePortAddresses(c.nodePortAddresses ?? []);
  const backend = (f('iptables-backend') ?? 'auto') as IptablesBackend;
  if (!['auto', 'nft', 'legacy'].includes(backend)) throw new UsageError(`--iptables-backend: ${JSON.stringify(backend)} is not auto, nft or legacy`);
  if (c.clientConnection.burst < 0) throw new UsageError('clientConnection.burst must not be negative');
  // It goes into the API requests' label selector: a label value, nothing else.
  if (c.serviceProxyName.length > 63 || !/^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/.test(c.serviceProxyName))
    throw new UsageError(`serviceProxyName: ${JSON.stringify(c.serviceProxyName)} is not a label value`);
  const level = f('log-level') ?? levelForVerbosity(c.logging.verbosity);
  if (!/^(trace|debug|info|warn|error|fatal|silent)$/.test(level))
    throw new UsageError(`--log-level: ${JSON.stringify(level)} is not trace, debug, info, warn or error`);
  const proxy: ProxyConfig = {
    hostname: nodeName(c.hostnameOverride),
    clusterCIDRs: resolveClusterCIDRs(c.clusterCIDR),
    masqueradeAll: section.masqueradeAll,
    nodePortAddresses: nodePortCIDRs,
    localhostNodePorts: c.iptables.localhostNodePorts ?? true,
    masqueradeBit,
    detectLocal: resolveDetectLocal(c),
    nodePortRange: resolveNodePortRange(f('service-node-port-range'), f('refuse-out-of-range-nodeports') === 'true'),
  };
  return {
    mode,
    dryRun: f('dry-run') === 'true',
    ipFamily: parseIPFamily(f('ip-family')),
    cleanup: f('cleanup') === 'true',
    initOnly: f('init-only') === 'true',
    writeConfigTo: f('write-config-to') || null,
    from: f('from') || null,
    kubeconfig: c.clientConnection.kubeconfig || null,
    api: {
      master: f('master') || null,
      qps: c.clientConnection.qps,
      burst: c.clientConnection.burst,
      serviceProxyName: c.serviceProxyName,
      protobuf: (c.clientConnection.acceptContentTypes || c.clientConnection.contentType).includes('application/vnd.kubernetes.protobuf'),
    },
    proxy,
    nodePortAddressesPrimary: primary,
    nodeIPOverride,
    healthz: resolveServerAddress(c.healthzBindAddress, HEALTHZ_PORT, 'healthzBindAddress'),
    metrics: resolveServerAddress(c.metricsBindAddress, METRICS_PORT, 'metricsBindAddress'),
    bindAddressHardFail: c.bindAddressHardFail,
    minSyncPeriodMs: section.minSyncPeriod,
    syncPeriodMs: section.syncPeriod,
    iptablesBackend: backend,
    logging: { format, level },
    conntrack,
    oomScoreAdj,
    configFile,
    configuration: c,
    notices,
  };
}

/** The logging flags of the other commands (their output is stdout; logs go to stderr). */
export const LOG_FLAGS: FlagSpec[] = [
  { name: 'v', aliases: ['v'], kind: 'string', arg: 'N', help: 'log verbosity: 0-3 info, 4-5 debug, 6+ trace' },
  { name: 'log-level', kind: 'string', arg: 'LEVEL', help: 'trace, debug, info, warn, error (overrides -v)' },
  { name: 'logging-format', kind: 'string', arg: 'json|text', help: 'log line format (default json)' },
];

/** The logging of a command other than run, from LOG_FLAGS. */
export function resolveLogging(parsed: ParsedFlags): { format: LogFormat; level: string } {
  const c = zeroConfiguration();
  const v = parsed.values.get('v');
  if (v !== undefined) c.logging.verbosity = verbosity(v);
  const format = parsed.values.get('logging-format') ?? 'json';
  if (format !== 'json' && format !== 'text') throw new UsageError(`--logging-format: ${JSON.stringify(format)} is not json or text`);
  const level = parsed.values.get('log-level') ?? levelForVerbosity(c.logging.verbosity);
  if (!/^(trace|debug|info|warn|error|fatal|silent)$/.test(level))
    throw new UsageError(`--log-level: ${JSON.stringify(level)} is not trace, debug, info, warn or error`);
  return { format, level };
}

export const STATE_FLAGS: FlagSpec[] = [
  { name: 'from', kind: 'string', arg: 'FILE', help: 'YAML/JSON file with Services, EndpointSlices and Nodes' },
  { name: 'node-url', kind: 'string', arg: 'URL', help: 'ask a running proxy instead of reading a file: its metrics address, e.g. http://127.0.0.1:10249' },
  { name: 'hostname-override', kind: 'string', arg: 'NAME', help: "this node's name (default: the host name)" },
  { name: 'cluster-cidr', kind: 'string', arg: 'CIDR[,CIDR]', help: 'pod CIDR(s)' },
  { name: 'output', aliases: ['o'], kind: 'string', arg: 'table|json', help: 'output format (default table)' },
  ...LOG_FLAGS,
  { name: 'help', aliases: ['h'], kind: 'bool', help: 'show this help' },
];
