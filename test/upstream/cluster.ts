// What upstream kube-proxy makes of the API objects before it writes any rule, for one IP family, ported from
// kubernetes/kubernetes pkg/proxy: the service ports (servicechangetracker.go, serviceport.go newBaseServiceInfo,
// pkg/api/v1/service helpers), the endpoints (endpointslicecache.go, endpointschangetracker.go) and their
// categorisation (topology.go CategorizeEndpoints). Test-only and independent of this project's model: it is the
// "before" state of a node that upstream kube-proxy programmed, so nothing here may come from src/.
import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';

export type Family = 'IPv4' | 'IPv6';

/** kube-proxy's own settings that shape its rules (flags of cmd/kube-proxy and what it detects on the node). */
export interface UpstreamConfig {
  family: Family;
  /** --hostname-override: endpoints with this nodeName are local. */
  nodeName: string;
  /** The node IP of this family (loadBalancerSourceRanges admit the node when a range holds it); default: the Node's InternalIP. */
  nodeIP?: string;
  /** --detect-local-mode ClusterCIDR with this family's --cluster-cidr; none: no local-traffic detection (upstream's no-op detector). */
  clusterCIDR?: string;
  /** --masquerade-all. */
  masqueradeAll?: boolean;
  /** --iptables-masquerade-bit / --nftables-masquerade-bit (default 14). */
  masqueradeBit?: number;
  /** The mark as written into rules; default fmt.Sprintf("%#08x", 1<<bit), i.e. "0x00004000". Upstream's tests use "0x4000". */
  masqueradeMark?: string;
  /** --nodeport-addresses (CIDRs of both families; only this family's count); empty: every local address. */
  nodePortAddresses?: string[];
  /** The node's interface addresses, from which nodePortAddresses select the NodePort IPs (upstream's GetNodeIPs). */
  localAddresses?: string[];
  /** The cluster's ServiceCIDRs (nftables: traffic to an unallocated ClusterIP in them is dropped); none by default. */
  serviceCIDRs?: string[];
  /** iptables: --iptables-localhost-nodeports (default true; upstream forces false for IPv6). */
  localhostNodePorts?: boolean;
  /** iptables: whether the node's nfacct counters exist (then rules count into them); default false. */
  nfacct?: boolean;
  /** iptables: whether the iptables binary supports MASQUERADE --random-fully (1.6.2 and later); default true. */
  randomFully?: boolean;
  /** nf_conntrack_tcp_be_liberal is set: no rule drops INVALID packets. Default false. */
  conntrackTCPLiberal?: boolean;
  /** The PreferSameTrafficDistribution feature gate (node hints); default on. */
  preferSameTrafficDistribution?: boolean;
}

/** upstream's BaseEndpointInfo, as the proxiers read it. */
export interface UpstreamEndpoint {
  ip: string;
  port: number;
  /** Endpoint.String(): net.JoinHostPort(ip, port). */
  id: string;
  isLocal: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  zoneHints: ReadonlySet<string>;
  nodeHints: ReadonlySet<string>;
}

/** upstream's BaseServicePortInfo with its ServicePortName, and the categorised endpoints of the port. */
export interface UpstreamServicePort {
  namespace: string;
  name: string;
  portName: string;
  /** ServicePortName.String(): "ns/name:port", or "ns/name" for an unnamed port. */
  nameString: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  clusterIP: string;
  port: number;
  nodePort: number;
  externalIPs: string[];
  loadBalancerVIPs: string[];
  /** Normalised CIDRs (network address / prefix), as net.IPNet.String() prints them. */
  loadBalancerSourceRanges: string[];
  healthCheckNodePort: number;
  sessionAffinityClientIP: boolean;
  stickyMaxAgeSeconds: number;
  externalPolicyLocal: boolean;
  internalPolicyLocal: boolean;
  externallyAccessible: boolean;
  usesClusterEndpoints: boolean;
  usesLocalEndpoints: boolean;
  /** Every endpoint of the port (upstream's endpointsMap entry), before categorisation. */
  endpoints: UpstreamEndpoint[];
  /** CategorizeEndpoints' four results. */
  clusterEndpoints: UpstreamEndpoint[];
  localEndpoints: UpstreamEndpoint[];
  allReachableEndpoints: UpstreamEndpoint[];
  hasEndpoints: boolean;
}

/** A Kubernetes object as the API serves it (only the fields kube-proxy reads are looked at). */
export type KubeObject = Record<string, any>;

// ---------------------------------------------------------------------------------------------------------
// Addresses, as Go's net and k8s.io/utils/net treat them.

/** netutils.ParseIPSloppy(s).String(), or null: IPv4 in four decimal parts (leading zeros allowed), or IPv6. */
export function parseIPSloppy(s: string): { ip: string; family: Family } | null {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(s)) {
    const parts = s.split('.').map(Number);
    return parts.every((p) => p <= 255) ? { ip: parts.join('.'), family: 'IPv4' } : null;
  }
  if (!s.includes(':') || !ipaddr.IPv6.isValid(s)) return null;
  const v6 = ipaddr.IPv6.parse(s);
  // Go prints an IPv4-mapped address as the IPv4 address.
  if (v6.isIPv4MappedAddress()) return { ip: v6.toIPv4Address().toString(), family: 'IPv4' };
  return { ip: v6.toRFC5952String(), family: 'IPv6' };
}

/** netutils.ParseCIDRSloppy: the network as net.IPNet.String() prints it (address masked), or null. */
export function parseCIDRSloppy(s: string): { cidr: string; family: Family } | null {
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const addr = parseIPSloppy(s.slice(0, slash));
  const bits = /^\d{1,3}$/.test(s.slice(slash + 1)) ? Number(s.slice(slash + 1)) : NaN;
  if (!addr || !(bits <= (addr.family === 'IPv4' ? 32 : 128))) return null;
  const network = addr.family === 'IPv4' ? ipaddr.IPv4.networkAddressFromCIDR(`${addr.ip}/${bits}`) : ipaddr.IPv6.networkAddressFromCIDR(`${addr.ip}/${bits}`);
  const text = network.kind() === 'ipv6' ? (network as ipaddr.IPv6).toRFC5952String() : network.toString();
  return { cidr: `${text}/${bits}`, family: addr.family };
}

/** Whether `ip` lies in `cidr` (both already normalised, same family or not). */
export function cidrContains(cidr: string, ip: string): boolean {
  const a = ipaddr.parse(ip);
  const [net, bits] = ipaddr.parseCIDR(cidr);
  return a.kind() === net.kind() && a.match(net, bits);
}

/** net.JoinHostPort. */
export function joinHostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** base32.StdEncoding.EncodeToString(sha256(s)): the hash both proxiers build chain names from. */
export function sha256Base32(s: string): string {
  const bytes = createHash('sha256').update(s).digest();
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += alphabet[(acc >>> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += alphabet[(acc << (5 - bits)) & 31];
  return out.padEnd(Math.ceil(out.length / 8) * 8, '=');
}

/** NodePortAddresses (pkg/proxy/util/nodeport_addresses.go): which local IPs accept NodePorts. */
export interface NodePortAddresses {
  matchAll: boolean;
  /** The local addresses of this family inside the CIDRs (GetNodeIPs); every one when matchAll. */
  nodeIPs: string[];
  /** ContainsIPv4Loopback: iptables serves NodePorts on 127.0.0.1 only then. */
  containsIPv4Loopback: boolean;
}

export function nodePortAddresses(cfg: UpstreamConfig): NodePortAddresses {
  const cidrs = (cfg.nodePortAddresses ?? []).map((c) => parseCIDRSloppy(c)).filter((c) => c !== null && c.family === cfg.family);
  const matchAll = cidrs.length === 0 || cidrs.some((c) => c!.cidr.endsWith('/0'));
  const local = (cfg.localAddresses ?? []).map((a) => parseIPSloppy(a)).filter((a) => a !== null && a.family === cfg.family);
  const nodeIPs = local.map((a) => a!.ip).filter((ip) => matchAll || cidrs.some((c) => cidrContains(c!.cidr, ip)));
  const containsIPv4Loopback = matchAll || cidrs.some((c) => c!.family === 'IPv4' && cidrContains(c!.cidr, '127.0.0.1'));
  return { matchAll, nodeIPs, containsIPv4Loopback };
}

/** "0x00004000" for bit 14: fmt.Sprintf("%#08x", 1<<bit) pads the digits to 8. */
export function masqueradeMark(cfg: UpstreamConfig): string {
  if (cfg.masqueradeMark) return cfg.masqueradeMark;
  return `0x${(1 << (cfg.masqueradeBit ?? 14)).toString(16).padStart(8, '0')}`;
}

// ---------------------------------------------------------------------------------------------------------
// Services (servicechangetracker.go, serviceport.go, pkg/api/v1/service/util.go).

const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
const HEADLESS_LABEL = 'service.kubernetes.io/headless';
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** proxyutil.GetClusterIPByFamily. */
function clusterIPByFamily(family: Family, spec: KubeObject): string {
  const families: string[] = spec.ipFamilies ?? [];
  if (families.length === 0) {
    const ip: string = spec.clusterIP ?? '';
    if (ip === '' || ip === 'None') return '';
    return parseIPSloppy(ip)?.family === family ? ip : '';
  }
  const idx = families.indexOf(family);
  return idx >= 0 && idx < (spec.clusterIPs ?? []).length ? spec.clusterIPs[idx] : '';
}

function externallyAccessible(spec: KubeObject): boolean {
  const type = spec.type ?? 'ClusterIP';
  return type === 'LoadBalancer' || type === 'NodePort' || (type === 'ClusterIP' && (spec.externalIPs ?? []).length > 0);
}

/** The service ports kube-proxy proxies for one Service, without endpoints yet. */
function servicePorts(
  svc: KubeObject,
  family: Family,
): Omit<UpstreamServicePort, 'endpoints' | 'clusterEndpoints' | 'localEndpoints' | 'allReachableEndpoints' | 'hasEndpoints'>[] {
  const spec = svc.spec ?? {};
  // The informer's label selector leaves out services of another proxy; ShouldSkipService the rest.
  if (svc.metadata?.labels?.[SERVICE_PROXY_NAME_LABEL] !== undefined) return [];
  if (spec.clusterIP === undefined || spec.clusterIP === '' || spec.clusterIP === 'None' || spec.type === 'ExternalName') return [];
  const clusterIPText = clusterIPByFamily(family, spec);
  const clusterIP = clusterIPText ? parseIPSloppy(clusterIPText) : null;
  if (!clusterIP) return [];

  const accessible = externallyAccessible(spec);
  const externalPolicyLocal = accessible && spec.externalTrafficPolicy === 'Local';
  const internalPolicyLocal = spec.internalTrafficPolicy === 'Local';
  const clientIP = spec.sessionAffinity === 'ClientIP';
  const externalIPs = ((spec.externalIPs ?? []) as string[])
    .map((s) => parseIPSloppy(s))
    .filter((a) => a?.family === family)
    .map((a) => a!.ip);
  const sourceRanges = ((spec.loadBalancerSourceRanges ?? []) as string[])
    .map((s) => parseCIDRSloppy(s.trim()))
    .filter((c) => c?.family === family)
    .map((c) => c!.cidr);
  const vips: string[] = [];
  for (const ing of svc.status?.loadBalancer?.ingress ?? []) {
    if (!ing.ip || (ing.ipMode !== undefined && ing.ipMode !== 'VIP')) continue;
    const ip = parseIPSloppy(ing.ip);
    if (ip?.family === family) vips.push(ip.ip);
  }
  const needsHealthCheck = spec.type === 'LoadBalancer' && externalPolicyLocal;
  const namespace: string = svc.metadata?.namespace ?? 'default';
  const name: string = svc.metadata?.name ?? '';
  return ((spec.ports ?? []) as KubeObject[]).map((p) => {
    const portName: string = p.name ?? '';
    const nodePort = Number(p.nodePort ?? 0);
    const info = {
      namespace,
      name,
      portName,
      nameString: `${namespace}/${name}${portName ? `:${portName}` : ''}`,
      protocol: (p.protocol ?? 'TCP') as UpstreamServicePort['protocol'],
      clusterIP: clusterIP.ip,
      port: Number(p.port),
      nodePort,
      externalIPs,
      loadBalancerVIPs: vips,
      loadBalancerSourceRanges: sourceRanges,
      healthCheckNodePort: needsHealthCheck ? Number(spec.healthCheckNodePort ?? 0) : 0,
      sessionAffinityClientIP: clientIP,
      // The API server defaults the timeout to 10800 s.
      stickyMaxAgeSeconds: clientIP ? Number(spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800) : 0,
      externalPolicyLocal,
      internalPolicyLocal,
      externallyAccessible: nodePort !== 0 || vips.length > 0 || externalIPs.length > 0,
    };
    return {
      ...info,
      // Cluster endpoints also serve the short circuit of external traffic under a Local policy.
      usesClusterEndpoints: !internalPolicyLocal || info.externallyAccessible,
      usesLocalEndpoints: internalPolicyLocal || (externalPolicyLocal && info.externallyAccessible),
    };
  });
}

// ---------------------------------------------------------------------------------------------------------
// Endpoints (endpointslicecache.go).

/** Endpoints per "namespace/service|portName|protocol", sorted by Endpoint.String() as upstream sorts them. */
function endpointsByServicePort(slices: KubeObject[], cfg: UpstreamConfig): Map<string, UpstreamEndpoint[]> {
  const sets = new Map<string, Map<string, UpstreamEndpoint>>();
  for (const slice of slices) {
    const serviceName = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (!serviceName || slice.metadata?.labels?.[HEADLESS_LABEL] !== undefined) continue;
    // The change tracker keeps slices of its family only (FQDN slices never).
    if (slice.addressType !== cfg.family) continue;
    for (const port of slice.ports ?? []) {
      // A port without a name (nil, not "") or a number is ignored, as upstream logs and skips it.
      if (port.name === undefined || port.name === null || !port.port) continue;
      const key = `${slice.metadata.namespace ?? 'default'}/${serviceName}|${port.name}|${port.protocol ?? 'TCP'}`;
      let set = sets.get(key);
      if (!set) sets.set(key, (set = new Map()));
      for (const ep of slice.endpoints ?? []) {
        if (!ep.addresses?.length) continue;
        const address = parseIPSloppy(ep.addresses[0]);
        if (!address) continue;
        const c = ep.conditions ?? {};
        const terminating = c.terminating === true;
        const gate = cfg.preferSameTrafficDistribution ?? true;
        const info: UpstreamEndpoint = {
          ip: address.ip,
          port: Number(port.port),
          id: joinHostPort(address.ip, Number(port.port)),
          isLocal: cfg.nodeName !== '' && ep.nodeName === cfg.nodeName,
          ready: c.ready !== false,
          serving: c.serving !== false,
          terminating,
          zoneHints: new Set(((ep.hints?.forZones ?? []) as KubeObject[]).map((z) => z.name)),
          nodeHints: new Set(gate ? ((ep.hints?.forNodes ?? []) as KubeObject[]).map((n) => n.name) : []),
        };
        // The same address twice (a pod IP reused while the old pod terminates): the running one wins.
        if (!set.has(info.id) || !terminating) set.set(info.id, info);
      }
    }
  }
  const out = new Map<string, UpstreamEndpoint[]>();
  for (const [key, set] of sets)
    out.set(
      key,
      [...set.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
    );
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// CategorizeEndpoints (topology.go).

function topologyModeFromHints(endpoints: UpstreamEndpoint[], nodeName: string, zone: string, cfg: UpstreamConfig): '' | 'PreferSameNode' | 'PreferSameZone' {
  const ready = endpoints.filter((e) => e.ready);
  if (ready.length === 0) return '';
  if ((cfg.preferSameTrafficDistribution ?? true) && ready.every((e) => e.nodeHints.size > 0) && ready.some((e) => e.nodeHints.has(nodeName))) {
    return 'PreferSameNode';
  }
  if (ready.every((e) => e.zoneHints.size > 0) && ready.some((e) => e.zoneHints.has(zone))) return 'PreferSameZone';
  return '';
}

function availableForTopology(e: UpstreamEndpoint, mode: string, nodeName: string, zone: string): boolean {
  if (mode === 'PreferSameNode') return e.nodeHints.has(nodeName);
  if (mode === 'PreferSameZone') return e.zoneHints.has(zone);
  return true;
}

function categorize(
  endpoints: UpstreamEndpoint[],
  sp: { usesClusterEndpoints: boolean; usesLocalEndpoints: boolean },
  nodeName: string,
  zone: string,
  cfg: UpstreamConfig,
): Pick<UpstreamServicePort, 'clusterEndpoints' | 'localEndpoints' | 'allReachableEndpoints' | 'hasEndpoints'> {
  const none = { clusterEndpoints: [], localEndpoints: [], allReachableEndpoints: [], hasEndpoints: false };
  if (endpoints.length === 0) return none;
  let clusterEndpoints: UpstreamEndpoint[] = [];
  let localEndpoints: UpstreamEndpoint[] = [];
  let hasEndpoints = false;
  let topologyMode = '';
  let useServingTerminating = false;
  if (sp.usesClusterEndpoints) {
    topologyMode = topologyModeFromHints(endpoints, nodeName, zone, cfg);
    clusterEndpoints = endpoints.filter((e) => e.ready && availableForTopology(e, topologyMode, nodeName, zone));
    // No ready endpoint anywhere: fall back to serving-and-terminating ones.
    if (clusterEndpoints.length === 0) clusterEndpoints = endpoints.filter((e) => e.serving && e.terminating);
    if (clusterEndpoints.length > 0) hasEndpoints = true;
  }
  if (!sp.usesLocalEndpoints) return { clusterEndpoints, localEndpoints, allReachableEndpoints: clusterEndpoints, hasEndpoints };

  let localReady = false;
  let localServingTerminating = false;
  for (const e of endpoints) {
    if (e.ready) {
      hasEndpoints = true;
      if (e.isLocal) localReady = true;
    } else if (e.serving && e.terminating) {
      hasEndpoints = true;
      if (e.isLocal) localServingTerminating = true;
    }
  }
  if (localReady) localEndpoints = endpoints.filter((e) => e.isLocal && e.ready);
  else if (localServingTerminating) {
    useServingTerminating = true;
    localEndpoints = endpoints.filter((e) => e.isLocal && e.serving && e.terminating);
  }
  if (!sp.usesClusterEndpoints) return { clusterEndpoints, localEndpoints, allReachableEndpoints: localEndpoints, hasEndpoints };
  if (topologyMode === '' && !useServingTerminating) return { clusterEndpoints, localEndpoints, allReachableEndpoints: clusterEndpoints, hasEndpoints };
  // Upstream merges through a map (random order); sorted here so the output is stable.
  const merged = new Map<string, UpstreamEndpoint>();
  for (const e of [...clusterEndpoints, ...localEndpoints]) merged.set(e.id, e);
  const allReachableEndpoints = [...merged.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { clusterEndpoints, localEndpoints, allReachableEndpoints, hasEndpoints };
}

/**
 * Every service port upstream kube-proxy proxies in this family, with its categorised endpoints, in a stable
 * order (upstream walks a Go map; its tests sort what it writes).
 */
export function upstreamServicePorts(objects: readonly KubeObject[], cfg: UpstreamConfig): UpstreamServicePort[] {
  const node = objects.find((o) => o.kind === 'Node' && o.metadata?.name === cfg.nodeName);
  const zone: string = node?.metadata?.labels?.[ZONE_LABEL] ?? '';
  const endpoints = endpointsByServicePort(
    objects.filter((o) => o.kind === 'EndpointSlice'),
    cfg,
  );
  const out: UpstreamServicePort[] = [];
  for (const svc of objects.filter((o) => o.kind === 'Service')) {
    for (const sp of servicePorts(svc, cfg.family)) {
      const eps = endpoints.get(`${sp.namespace}/${sp.name}|${sp.portName}|${sp.protocol}`) ?? [];
      out.push({ ...sp, endpoints: eps, ...categorize(eps, sp, cfg.nodeName, zone, cfg) });
    }
  }
  return out.sort((a, b) => (a.nameString + a.protocol < b.nameString + b.protocol ? -1 : 1));
}

/** The node IP of the config's family: given, else the Node's first InternalIP of that family. */
export function nodeIP(objects: readonly KubeObject[], cfg: UpstreamConfig): string | null {
  if (cfg.nodeIP) return parseIPSloppy(cfg.nodeIP)?.ip ?? null;
  const node = objects.find((o) => o.kind === 'Node' && o.metadata?.name === cfg.nodeName);
  for (const a of node?.status?.addresses ?? []) {
    const ip = a.type === 'InternalIP' ? parseIPSloppy(a.address) : null;
    if (ip?.family === cfg.family) return ip.ip;
  }
  return null;
}
