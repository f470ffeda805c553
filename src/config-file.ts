// The KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) as upstream kube-proxy reads it: every field
// of the v1alpha1 schema (staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go), decoded leniently (an
// unknown field is a warning, as upstream's lenient decoder logs it, a value of the wrong type an error),
// defaulted as SetDefaults_KubeProxyConfiguration and platformApplyDefaults do (a zero period means the
// default: kubeadm writes `syncPeriod: 0s`), and written back for --write-config-to.
//
// FIELDS is the one description of the schema: decoding, the warnings for fields this proxy does not apply,
// and the docs' table (docs/operations.md, checked by a test) all read it.
import { readFile } from 'node:fs/promises';
import { UsageError, formatDuration, parseDuration } from './flags.ts';
import { DEFAULT_MASQUERADE_BIT } from './model/types.ts';
import { parseYamlDocument, yamlDocument } from './yaml-document.ts';

export const API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KIND = 'KubeProxyConfiguration';

/** Durations are in milliseconds; `null` is a Go nil pointer (unset: the default applies). */
export interface KubeProxyConfiguration {
  featureGates: Record<string, boolean>;
  clientConnection: { kubeconfig: string; acceptContentTypes: string; contentType: string; qps: number; burst: number };
  logging: {
    format: string;
    flushFrequency: number;
    verbosity: number;
    vmodule: { filePattern: string; verbosity: number }[];
    options: { json: { splitStream: boolean; infoBufferSize: string }; text: { splitStream: boolean; infoBufferSize: string } };
  };
  hostnameOverride: string;
  bindAddress: string;
  healthzBindAddress: string;
  metricsBindAddress: string;
  bindAddressHardFail: boolean;
  enableProfiling: boolean;
  showHiddenMetricsForVersion: string;
  serviceProxyName: string;
  mode: string;
  iptables: { masqueradeBit: number | null; masqueradeAll: boolean; localhostNodePorts: boolean | null; syncPeriod: number; minSyncPeriod: number };
  ipvs: {
    syncPeriod: number;
    minSyncPeriod: number;
    scheduler: string;
    excludeCIDRs: string[] | null;
    strictARP: boolean;
    tcpTimeout: number;
    tcpFinTimeout: number;
    udpTimeout: number;
  };
  nftables: { masqueradeBit: number | null; masqueradeAll: boolean; syncPeriod: number; minSyncPeriod: number; tableName: string };
  winkernel: { networkName: string; sourceVip: string; enableDSR: boolean; rootHnsEndpointName: string; forwardHealthCheckVip: boolean };
  detectLocalMode: string;
  detectLocal: { bridgeInterface: string; interfaceNamePrefix: string };
  clusterCIDR: string;
  nodePortAddresses: string[] | null;
  oomScoreAdj: number | null;
  conntrack: {
    maxPerCore: number | null;
    min: number | null;
    tcpEstablishedTimeout: number | null;
    tcpCloseWaitTimeout: number | null;
    tcpBeLiberal: boolean;
    udpTimeout: number;
    udpStreamTimeout: number;
  };
  configSyncPeriod: number;
  portRange: string;
  windowsRunAsService: boolean;
}

type Scalar = 'string' | 'bool' | 'int' | 'float' | 'duration' | 'durationOrNanos' | 'quantity' | 'stringList' | 'boolMap' | 'vmodule';

interface Field {
  type: Scalar | Fields;
  /** A pointer in Go: null is allowed and means unset. */
  nullable?: boolean;
  /** What this proxy does with the field (docs). */
  doc: string;
  /**
   * Not applied here, and why: a warning when the file sets it to anything but its zero value or its default
   * (kubeadm writes every field out with its zero value, --write-config-to with its default: neither asks for
   * anything).
   */
  ignored?: string;
}
type Fields = { [name: string]: Field };

const IPVS = 'IPVS mode is not offered by this proxy';
const WINDOWS = 'Windows only';

/** The v1alpha1 schema, field by field, with what this proxy does with each. */
export const FIELDS: Fields = {
  apiVersion: { type: 'string', doc: `must be ${API_VERSION}` },
  kind: { type: 'string', doc: `must be ${KIND}` },
  featureGates: { type: 'boolMap', doc: 'accepted', ignored: "upstream's feature gates do not change this proxy" },
  clientConnection: {
    type: {
      kubeconfig: { type: 'string', doc: 'the kubeconfig to reach the API server (tokenFile and rotated tokens included)' },
      acceptContentTypes: {
        type: 'string',
        doc: 'applied: when it names application/vnd.kubernetes.protobuf, Service and EndpointSlice lists are read in protobuf (empty: as contentType says)',
      },
      contentType: {
        type: 'string',
        doc: 'applied: application/vnd.kubernetes.protobuf (the default, as upstream) reads Service and EndpointSlice lists in protobuf; watches and anything else are JSON',
      },
      qps: { type: 'float', doc: 'applied: client-side rate limit of API requests (default 5)' },
      burst: { type: 'int', doc: 'applied: burst of that rate limit (default 10)' },
    },
    doc: '',
  },
  logging: {
    type: {
      format: { type: 'string', doc: 'applied: json (default here) or text (klog-style lines)' },
      flushFrequency: { type: 'durationOrNanos', doc: 'accepted', ignored: 'logs are written at once, unbuffered' },
      verbosity: { type: 'int', doc: 'applied: 0-3 info, 4-5 debug, 6 and more trace' },
      vmodule: { type: 'vmodule', doc: 'accepted', ignored: 'per-file verbosity has no meaning here' },
      options: {
        type: {
          json: {
            type: {
              splitStream: { type: 'bool', doc: 'accepted', ignored: 'every log line goes to stderr' },
              infoBufferSize: { type: 'quantity', doc: 'accepted', ignored: 'logs are written at once, unbuffered' },
            },
            doc: '',
          },
          text: {
            type: {
              splitStream: { type: 'bool', doc: 'accepted', ignored: 'every log line goes to stderr' },
              infoBufferSize: { type: 'quantity', doc: 'accepted', ignored: 'logs are written at once, unbuffered' },
            },
            doc: '',
          },
        },
        doc: '',
      },
    },
    doc: '',
  },
  hostnameOverride: { type: 'string', doc: "applied: this node's name, trimmed and lower-cased (a --hostname-override flag wins)" },
  bindAddress: {
    type: 'string',
    doc: "applied: the node's primary IP of its family (for nodePortAddresses: primary) and the family of the default server addresses",
  },
  healthzBindAddress: { type: 'string', doc: 'applied (default 0.0.0.0:10256; IP alone: port 10256)' },
  metricsBindAddress: { type: 'string', doc: 'applied (default 127.0.0.1:10249; IP alone: port 10249)' },
  bindAddressHardFail: { type: 'bool', doc: 'applied: a health or metrics port that cannot be bound ends the process (else: logged, retried every 5 s)' },
  enableProfiling: { type: 'bool', doc: 'accepted', ignored: 'no /debug/pprof in a Node.js process (use node --inspect or --cpu-prof)' },
  showHiddenMetricsForVersion: { type: 'string', doc: 'accepted', ignored: 'this proxy has no hidden metrics' },
  serviceProxyName: { type: 'string', doc: 'applied: only Services and EndpointSlices labelled service.kubernetes.io/service-proxy-name=<this>' },
  mode: { type: 'string', doc: 'applied: iptables (default), nftables, or userspace; ipvs runs the iptables mode, with a warning' },
  iptables: {
    type: {
      masqueradeBit: {
        type: 'int',
        nullable: true,
        doc: "applied: the iptables mode's masquerade mark is 1 << bit (default 14, 0x4000)",
      },
      masqueradeAll: { type: 'bool', doc: 'applied in the iptables and userspace modes' },
      localhostNodePorts: { type: 'bool', nullable: true, doc: 'applied (default true): IPv4 NodePorts on 127.0.0.1, iptables mode' },
      syncPeriod: { type: 'duration', doc: 'applied in the iptables and userspace modes (0 or unset: 30s)' },
      minSyncPeriod: { type: 'duration', doc: 'applied in the iptables and userspace modes (0 or unset: 1s)' },
    },
    doc: '',
  },
  ipvs: {
    type: {
      syncPeriod: { type: 'duration', doc: 'accepted', ignored: IPVS },
      minSyncPeriod: { type: 'duration', doc: 'accepted', ignored: IPVS },
      scheduler: { type: 'string', doc: 'accepted', ignored: IPVS },
      excludeCIDRs: { type: 'stringList', nullable: true, doc: 'accepted', ignored: IPVS },
      strictARP: { type: 'bool', doc: 'accepted', ignored: IPVS },
      tcpTimeout: { type: 'duration', doc: 'accepted', ignored: IPVS },
      tcpFinTimeout: { type: 'duration', doc: 'accepted', ignored: IPVS },
      udpTimeout: { type: 'duration', doc: 'accepted', ignored: IPVS },
    },
    doc: '',
  },
  nftables: {
    type: {
      masqueradeBit: {
        type: 'int',
        nullable: true,
        doc: "applied: the nftables mode's masquerade mark is 1 << bit (default 14, 0x4000)",
      },
      masqueradeAll: { type: 'bool', doc: 'applied in the nftables mode' },
      syncPeriod: { type: 'duration', doc: 'applied in the nftables mode (0 or unset: 30s)' },
      minSyncPeriod: { type: 'duration', doc: 'applied in the nftables mode (0 or unset: 1s)' },
      tableName: { type: 'string', doc: 'accepted', ignored: 'the nftables mode always uses its own table kube-proxy-ts' },
    },
    doc: '',
  },
  winkernel: {
    type: {
      networkName: { type: 'string', doc: 'accepted', ignored: WINDOWS },
      sourceVip: { type: 'string', doc: 'accepted', ignored: WINDOWS },
      enableDSR: { type: 'bool', doc: 'accepted', ignored: WINDOWS },
      rootHnsEndpointName: { type: 'string', doc: 'accepted', ignored: WINDOWS },
      forwardHealthCheckVip: { type: 'bool', doc: 'accepted', ignored: WINDOWS },
    },
    doc: '',
  },
  detectLocalMode: {
    type: 'string',
    doc: 'applied: ClusterCIDR (default), NodeCIDR, BridgeInterface, InterfaceNamePrefix, as --detect-local-mode',
  },
  detectLocal: {
    type: {
      bridgeInterface: { type: 'string', doc: 'applied: the bridge of detectLocalMode BridgeInterface' },
      interfaceNamePrefix: { type: 'string', doc: 'applied: the prefix of detectLocalMode InterfaceNamePrefix' },
    },
    doc: '',
  },
  clusterCIDR: { type: 'string', doc: 'applied: pod CIDRs, comma-separated, one per family' },
  nodePortAddresses: { type: 'stringList', nullable: true, doc: "applied: CIDRs, or 'primary' (the node's primary IPs; the nftables mode's default)" },
  oomScoreAdj: { type: 'int', nullable: true, doc: 'applied (default -999)' },
  conntrack: {
    type: {
      maxPerCore: { type: 'int', nullable: true, doc: 'applied: nf_conntrack_max = max(maxPerCore x CPUs, min) (default 32768; 0 leaves it)' },
      min: { type: 'int', nullable: true, doc: 'applied (default 131072)' },
      tcpEstablishedTimeout: { type: 'duration', nullable: true, doc: 'applied: nf_conntrack_tcp_timeout_established (default 24h; 0 leaves it)' },
      tcpCloseWaitTimeout: { type: 'duration', nullable: true, doc: 'applied: nf_conntrack_tcp_timeout_close_wait (default 1h; 0 leaves it)' },
      tcpBeLiberal: { type: 'bool', doc: 'applied: nf_conntrack_tcp_be_liberal = 1' },
      udpTimeout: { type: 'duration', doc: 'applied: nf_conntrack_udp_timeout (0 leaves it)' },
      udpStreamTimeout: { type: 'duration', doc: 'applied: nf_conntrack_udp_timeout_stream (0 leaves it)' },
    },
    doc: '',
  },
  configSyncPeriod: {
    type: 'duration',
    doc: 'accepted (default 15m)',
    ignored: "informer resyncs re-deliver cached objects; this proxy's full sync every syncPeriod covers them",
  },
  portRange: { type: 'string', doc: 'accepted', ignored: 'unused upstream too (the old userspace proxy)' },
  windowsRunAsService: { type: 'bool', doc: 'accepted', ignored: WINDOWS },
};

/** The zero value (what Go decodes for a missing field). */
export function zeroConfiguration(): KubeProxyConfiguration {
  return {
    featureGates: {},
    clientConnection: { kubeconfig: '', acceptContentTypes: '', contentType: '', qps: 0, burst: 0 },
    logging: {
      format: '',
      flushFrequency: 0,
      verbosity: 0,
      vmodule: [],
      options: { json: { splitStream: false, infoBufferSize: '0' }, text: { splitStream: false, infoBufferSize: '0' } },
    },
    hostnameOverride: '',
    bindAddress: '',
    healthzBindAddress: '',
    metricsBindAddress: '',
    bindAddressHardFail: false,
    enableProfiling: false,
    showHiddenMetricsForVersion: '',
    serviceProxyName: '',
    mode: '',
    iptables: { masqueradeBit: null, masqueradeAll: false, localhostNodePorts: null, syncPeriod: 0, minSyncPeriod: 0 },
    ipvs: { syncPeriod: 0, minSyncPeriod: 0, scheduler: '', excludeCIDRs: null, strictARP: false, tcpTimeout: 0, tcpFinTimeout: 0, udpTimeout: 0 },
    nftables: { masqueradeBit: null, masqueradeAll: false, syncPeriod: 0, minSyncPeriod: 0, tableName: '' },
    winkernel: { networkName: '', sourceVip: '', enableDSR: false, rootHnsEndpointName: '', forwardHealthCheckVip: false },
    detectLocalMode: '',
    detectLocal: { bridgeInterface: '', interfaceNamePrefix: '' },
    clusterCIDR: '',
    nodePortAddresses: null,
    oomScoreAdj: null,
    conntrack: { maxPerCore: null, min: null, tcpEstablishedTimeout: null, tcpCloseWaitTimeout: null, tcpBeLiberal: false, udpTimeout: 0, udpStreamTimeout: 0 },
    configSyncPeriod: 0,
    portRange: '',
    windowsRunAsService: false,
  };
}

/** Upstream's ports (pkg/cluster/ports): ProxyHealthzPort and ProxyStatusPort. */
export const HEALTHZ_PORT = 10256;
export const METRICS_PORT = 10249;

/** IPv6 when the address is one (a bare or bracketed IPv6 literal). */
const isIPv6 = (ip: string): boolean => ip.includes(':');

/** proxyutil.AppendPortIfNeeded: an address without a port gets one. */
export function appendPortIfNeeded(addr: string, port: number): string {
  if (/^\[.*\]:\d+$/.test(addr) || /^[^:]*:\d+$/.test(addr)) return addr;
  const host = addr.replace(/^\[(.*)\]$/, '$1');
  return isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * SetDefaults_KubeProxyConfiguration: every zero value that has a default gets it, in place. The logging format
 * stays '' when unset (this proxy's default, json, applies; upstream's is text).
 */
export function applyDefaults(c: KubeProxyConfiguration): KubeProxyConfiguration {
  if (c.bindAddress === '') c.bindAddress = '0.0.0.0';
  const v6 = isIPv6(c.bindAddress);
  c.healthzBindAddress = c.healthzBindAddress === '' ? `${v6 ? '[::]' : '0.0.0.0'}:${HEALTHZ_PORT}` : appendPortIfNeeded(c.healthzBindAddress, HEALTHZ_PORT);
  c.metricsBindAddress = c.metricsBindAddress === '' ? `${v6 ? '[::1]' : '127.0.0.1'}:${METRICS_PORT}` : appendPortIfNeeded(c.metricsBindAddress, METRICS_PORT);
  c.oomScoreAdj ??= -999;
  for (const section of [c.iptables, c.ipvs, c.nftables]) {
    if (section.syncPeriod === 0) section.syncPeriod = 30_000;
    if (section.minSyncPeriod === 0 && section !== c.ipvs) section.minSyncPeriod = 1000;
  }
  c.conntrack.maxPerCore ??= 32 * 1024;
  c.conntrack.min ??= 128 * 1024;
  c.conntrack.tcpEstablishedTimeout ??= 24 * 3_600_000;
  c.conntrack.tcpCloseWaitTimeout ??= 3_600_000;
  c.iptables.masqueradeBit ??= DEFAULT_MASQUERADE_BIT;
  c.nftables.masqueradeBit ??= DEFAULT_MASQUERADE_BIT;
  c.iptables.localhostNodePorts ??= true;
  if (c.configSyncPeriod === 0) c.configSyncPeriod = 15 * 60_000;
  if (c.clientConnection.contentType === '') c.clientConnection.contentType = 'application/vnd.kubernetes.protobuf';
  if (c.clientConnection.qps === 0) c.clientConnection.qps = 5;
  if (c.clientConnection.burst === 0) c.clientConnection.burst = 10;
  if (c.logging.flushFrequency === 0) c.logging.flushFrequency = 5000;
  return c;
}

/**
 * platformApplyDefaults (cmd/kube-proxy/app/server_linux.go), after the flags or the file: the mode, the nftables
 * mode's NodePorts on the primary IPs only, and the local traffic detection.
 */
export function applyPlatformDefaults(c: KubeProxyConfiguration): KubeProxyConfiguration {
  if (c.mode === '') c.mode = 'iptables';
  if (c.mode === 'nftables' && (c.nodePortAddresses ?? []).length === 0) c.nodePortAddresses = ['primary'];
  if (c.detectLocalMode === '') c.detectLocalMode = 'ClusterCIDR';
  return c;
}

/** A problem with one field of the file that does not stop the proxy: logged once at start. */
export interface ConfigWarning {
  field: string;
  message: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Whether a decoded value is its type's zero value (unset as far as upstream is concerned). */
function isZero(v: unknown): boolean {
  if (v === null || v === '' || v === false || v === 0 || v === '0') return true;
  if (Array.isArray(v)) return v.length === 0;
  if (isObject(v)) return Object.values(v).every(isZero);
  return false;
}

/** Decodes one value of the schema; a wrong type is an error (upstream's decoder fails on it too). */
function decodeValue(type: Scalar, v: unknown, path: string): unknown {
  const bad = (want: string) => new UsageError(`${path}: ${JSON.stringify(v)} is not ${want}`);
  switch (type) {
    case 'string':
      if (typeof v !== 'string') throw bad('a string');
      return v;
    case 'bool':
      if (typeof v !== 'boolean') throw bad('true or false');
      return v;
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v) || Math.abs(v) >= 2 ** 31) throw bad('an integer');
      return v;
    case 'float':
      if (typeof v !== 'number' || !Number.isFinite(v)) throw bad('a number');
      return v;
    case 'durationOrNanos':
      // logging.flushFrequency (TimeOrMetaDuration): a duration, or an integer of nanoseconds.
      if (typeof v === 'number' && Number.isInteger(v)) return v / 1e6;
      return decodeValue('duration', v, path);
    case 'duration':
      // metav1.Duration is a string.
      if (typeof v !== 'string') throw bad('a duration (like 30s)');
      return parseDuration(v, path);
    case 'quantity':
      if (typeof v === 'number') return String(v);
      if (typeof v !== 'string' || !/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[numkMGTPE])?$/.test(v)) throw bad('a quantity (like 0, 64Ki)');
      return v;
    case 'stringList':
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw bad('a list of strings');
      return v;
    case 'boolMap':
      if (!isObject(v) || Object.values(v).some((x) => typeof x !== 'boolean')) throw bad('a map of names to true or false');
      return v;
    case 'vmodule':
      if (!Array.isArray(v) || v.some((x) => !isObject(x))) throw bad('a list of {filePattern, verbosity}');
      return v;
  }
}

/**
 * Decodes an object of the schema into `into`, collecting warnings for unknown fields and for fields not applied
 * here that ask for something (`defaults`: the same object defaulted).
 */
function decodeObject(
  fields: Fields,
  src: Record<string, unknown>,
  into: Record<string, unknown>,
  defaults: Record<string, unknown>,
  path: string,
  warnings: ConfigWarning[],
): void {
  for (const [name, v] of Object.entries(src)) {
    const where = path ? `${path}.${name}` : name;
    const f = fields[name];
    if (!f) {
      warnings.push({ field: where, message: 'unknown field: ignored (upstream ignores it too, with a warning)' });
      continue;
    }
    if (v === null || v === undefined) {
      // null is "unset" for pointers and the zero value for anything else, as in Go's JSON decoding.
      if (f.nullable) into[name] = null;
      continue;
    }
    if (typeof f.type === 'object') {
      if (!isObject(v)) throw new UsageError(`${where}: ${JSON.stringify(v)} is not an object`);
      decodeObject(f.type, v, into[name] as Record<string, unknown>, defaults[name] as Record<string, unknown>, where, warnings);
      continue;
    }
    const value = decodeValue(f.type, v, where);
    into[name] = value;
    if (f.ignored && !isZero(value) && JSON.stringify(value) !== JSON.stringify(defaults[name]))
      warnings.push({ field: where, message: `set, but ${f.ignored}: ignored` });
  }
}

/** Decodes a KubeProxyConfiguration document (not yet defaulted). */
export function decodeConfiguration(text: string, file: string): { config: KubeProxyConfiguration; warnings: ConfigWarning[] } {
  let doc: unknown;
  try {
    doc = parseYamlDocument(text);
  } catch (e) {
    throw new UsageError(`--config ${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!isObject(doc)) throw new UsageError(`--config ${file}: not a ${KIND}`);
  if (doc.kind !== KIND) throw new UsageError(`--config ${file}: kind is ${JSON.stringify(doc.kind ?? null)}, not ${KIND}`);
  if (doc.apiVersion !== API_VERSION) throw new UsageError(`--config ${file}: apiVersion is ${JSON.stringify(doc.apiVersion ?? null)}, not ${API_VERSION}`);
  const config = zeroConfiguration();
  const warnings: ConfigWarning[] = [];
  try {
    const defaults = applyDefaults(zeroConfiguration()) as unknown as Record<string, unknown>;
    decodeObject(FIELDS, doc, config as unknown as Record<string, unknown>, defaults, '', warnings);
  } catch (e) {
    if (e instanceof UsageError) throw new UsageError(`--config ${file}: ${e.message}`);
    throw e;
  }
  delete (config as unknown as Record<string, unknown>).apiVersion;
  delete (config as unknown as Record<string, unknown>).kind;
  return { config, warnings };
}

/** Reads, decodes and defaults --config; warnings for what is unknown or not applied. */
export async function readConfigFile(file: string): Promise<{ config: KubeProxyConfiguration; warnings: ConfigWarning[]; text: string }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new UsageError(`--config ${file}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
  }
  const { config, warnings } = decodeConfiguration(text, file);
  return { config: applyDefaults(config), warnings, text };
}

/** The configuration as a v1alpha1 document, as upstream's --write-config-to writes it (durations as Go prints them). */
export function encodeConfiguration(c: KubeProxyConfiguration): string {
  const encode = (fields: Fields, obj: Record<string, unknown>): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const [name, f] of Object.entries(fields)) {
      if (name === 'apiVersion' || name === 'kind') continue;
      const v = obj[name];
      if (typeof f.type === 'object') out[name] = encode(f.type, v as Record<string, unknown>);
      else if ((f.type === 'duration' || f.type === 'durationOrNanos') && typeof v === 'number') out[name] = formatDuration(v);
      else out[name] = v;
    }
    return out;
  };
  return yamlDocument({ apiVersion: API_VERSION, kind: KIND, ...encode(FIELDS, c as unknown as Record<string, unknown>) });
}

/** Every field's dotted path with its doc line and what is ignored, in schema order (the docs' table). */
export function describeFields(fields: Fields = FIELDS, prefix = ''): { field: string; doc: string }[] {
  const out: { field: string; doc: string }[] = [];
  for (const [name, f] of Object.entries(fields)) {
    const path = prefix ? `${prefix}.${name}` : name;
    if (typeof f.type === 'object') out.push(...describeFields(f.type, path));
    else out.push({ field: path, doc: f.ignored ? `${f.doc}; ignored: ${f.ignored}` : f.doc });
  }
  return out;
}

/**
 * Follows --config and calls onChange once when its content differs from `initial` (what the proxy started
 * with): upstream exits then, so that the pod restarts with the new configuration. Polls, because a ConfigMap
 * update swaps a symlink, which an inotify watch on the file itself misses. A file that cannot be read (being
 * replaced, or gone) is not a change. Returns a stop function.
 */
export function watchConfigFile(file: string, initial: string, onChange: () => void, intervalMs = 2000): () => void {
  let fired = false;
  const timer = setInterval(() => {
    void readFile(file, 'utf8').then(
      (now) => {
        if (fired || now === initial) return;
        fired = true;
        clearInterval(timer);
        onChange();
      },
      () => {},
    );
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
