// Upstream kube-proxy's nftables mode, ported from kubernetes/kubernetes pkg/proxy/nftables/proxier.go
// (setupNFTables, syncProxyRules, writeServiceToEndpointRules), with the base chains of the current release as
// its proxier_test.go baseRules pins them (filter chains before DNAT at priority -110 and after it at 0). The
// output is the table `kube-proxy` in the form knftables' Fake.Dump() prints and upstream's tests compare: `add`
// commands that `nft -f` loads on a node without the table, giving the state of upstream's first sync.
// Test-only: nothing here comes from this project's nftables mode.
import {
  type KubeObject,
  type UpstreamConfig,
  type UpstreamServicePort,
  cidrContains,
  masqueradeMark,
  nodeIP,
  nodePortAddresses,
  sha256Base32,
  upstreamServicePorts,
} from './cluster.ts';

export const UPSTREAM_NFT_TABLE = 'kube-proxy';

// Base chains ("${type}-${hook}") and the other fixed chains.
const FILTER_PREROUTING_PRE_DNAT = 'filter-prerouting-pre-dnat';
const FILTER_OUTPUT_PRE_DNAT = 'filter-output-pre-dnat';
const FILTER_INPUT = 'filter-input';
const FILTER_FORWARD = 'filter-forward';
const FILTER_OUTPUT = 'filter-output';
const NAT_PREROUTING = 'nat-prerouting';
const NAT_OUTPUT = 'nat-output';
const NAT_POSTROUTING = 'nat-postrouting';
const SERVICES = 'services';
const SERVICE_IPS = 'service-ips';
const SERVICE_NODEPORTS = 'service-nodeports';
const NODEPORT_IPS = 'nodeport-ips';
const CLUSTER_IPS = 'cluster-ips';
const SERVICE_ENDPOINTS_CHECK = 'service-endpoints-check';
const NODEPORT_ENDPOINTS_CHECK = 'nodeport-endpoints-check';
const NO_ENDPOINT_SERVICES = 'no-endpoint-services';
const NO_ENDPOINT_NODEPORTS = 'no-endpoint-nodeports';
const REJECT_CHAIN = 'reject-chain';
const CLUSTER_IPS_CHECK = 'cluster-ips-check';
const FIREWALL_IPS = 'firewall-ips';
const FIREWALL_CHECK = 'firewall-check';
const MARK_MASQ = 'mark-for-masquerade';
const MASQUERADING = 'masquerading';

/** nftablesBaseChains: name, type, hook, priority (as a number: dstnat is -100, srcnat 100, filter 0). */
const BASE_CHAINS: readonly [string, 'filter' | 'nat', string, number][] = [
  [FILTER_PREROUTING_PRE_DNAT, 'filter', 'prerouting', -110],
  [FILTER_OUTPUT_PRE_DNAT, 'filter', 'output', -110],
  [FILTER_INPUT, 'filter', 'input', 0],
  [FILTER_FORWARD, 'filter', 'forward', 0],
  [FILTER_OUTPUT, 'filter', 'output', 0],
  [NAT_PREROUTING, 'nat', 'prerouting', -100],
  [NAT_OUTPUT, 'nat', 'output', -100],
  [NAT_POSTROUTING, 'nat', 'postrouting', 100],
];

/** nftablesJumpChains: [destination, source, extra matches], in upstream's order. */
const JUMP_CHAINS: readonly [string, string, string][] = [
  [NODEPORT_ENDPOINTS_CHECK, FILTER_INPUT, 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, FILTER_INPUT, 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, FILTER_FORWARD, 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, FILTER_OUTPUT, 'ct state new'],
  [FIREWALL_CHECK, FILTER_PREROUTING_PRE_DNAT, 'ct state new'],
  [FIREWALL_CHECK, FILTER_OUTPUT_PRE_DNAT, 'ct state new'],
  [SERVICES, NAT_OUTPUT, ''],
  [SERVICES, NAT_PREROUTING, ''],
  [MASQUERADING, NAT_POSTROUTING, ''],
  [CLUSTER_IPS_CHECK, FILTER_FORWARD, 'ct state new'],
  [CLUSTER_IPS_CHECK, FILTER_OUTPUT, 'ct state new'],
];

/** hashAndTruncate: 8 hash characters, a dash, the name (never truncated for valid Kubernetes names). */
function hashAndTruncate(name: string): string {
  const full = `${sha256Base32(name).slice(0, 8)}-${name}`;
  // knftables.NameLengthMax (256) less the longest prefix (16).
  return full.length > 240 ? `${full.slice(0, 237)}...` : full;
}

/** servicePortChainNameBase: "HASH-namespace/name/protocol/portName". */
function chainBase(sp: UpstreamServicePort): string {
  return hashAndTruncate(`${sp.namespace}/${sp.name}/${sp.protocol.toLowerCase()}/${sp.portName}`);
}

/** servicePortEndpointChainNameBase: "HASH-namespace/name/protocol/portName__ip/port" (IPv6 colons as dots). */
function endpointBase(sp: UpstreamServicePort, ep: { ip: string; port: number }): string {
  return hashAndTruncate(`${sp.namespace}/${sp.name}/${sp.protocol.toLowerCase()}/${sp.portName}__${ep.ip.replaceAll(':', '.')}/${ep.port}`);
}

/** What upstream kube-proxy in nftables mode programs on a node for these objects: table `kube-proxy` of `cfg.family`. */
export function upstreamNftables(objects: readonly KubeObject[], cfg: UpstreamConfig): string {
  const fam = cfg.family === 'IPv6' ? 'ip6' : 'ip';
  const addrType = cfg.family === 'IPv6' ? 'ipv6_addr' : 'ipv4_addr';
  const noLocalhost = cfg.family === 'IPv6' ? 'ip6 daddr != ::1' : 'ip daddr != 127.0.0.0/8';
  const mark = masqueradeMark(cfg);
  const npa = nodePortAddresses(cfg);
  const node = nodeIP(objects, cfg);
  const ifLocal = cfg.clusterCIDR ? `${fam} saddr ${cfg.clusterCIDR}` : null;
  const ifNotLocal = cfg.clusterCIDR ? `${fam} saddr != ${cfg.clusterCIDR}` : null;
  const t = `${fam} ${UPSTREAM_NFT_TABLE}`;

  // Kept apart so the output loads in one pass: containers first, then chains, then rules, then elements.
  const sets: string[] = [];
  const chains: string[] = [];
  const rules: string[] = [];
  const elements: string[] = [];
  const chain = (name: string, comment?: string) => chains.push(`add chain ${t} ${name}${comment ? ` { comment "${comment}" ; }` : ''}`);
  const rule = (c: string, text: string, comment?: string) => rules.push(`add rule ${t} ${c} ${text}${comment ? ` comment "${comment}"` : ''}`);
  const element = (container: string, key: string, value?: string, comment?: string) =>
    elements.push(`add element ${t} ${container} { ${key}${comment ? ` comment "${comment}"` : ''}${value ? ` : ${value}` : ''} }`);

  // setupNFTables.
  for (const [name, type, hook, priority] of BASE_CHAINS) chains.push(`add chain ${t} ${name} { type ${type} hook ${hook} priority ${priority} ; }`);
  const created = new Set<string>();
  const ensureChain = (name: string) => {
    if (created.has(name)) return;
    created.add(name);
    chain(name);
  };
  for (const [dst, src, extra] of JUMP_CHAINS) {
    ensureChain(dst);
    rule(src, `${extra ? `${extra} ` : ''}jump ${dst}`);
  }
  for (const name of [SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ]) ensureChain(name);
  rule(MARK_MASQ, `mark set mark or ${mark}`);
  rule(MASQUERADING, `mark and ${mark} == 0 return`);
  rule(MASQUERADING, `mark set mark xor ${mark}`);
  rule(MASQUERADING, 'masquerade fully-random');
  sets.push(`add set ${t} ${CLUSTER_IPS} { type ${addrType} ; comment "Active ClusterIPs" ; }`);
  rule(CLUSTER_IPS_CHECK, `${fam} daddr @${CLUSTER_IPS} reject`, 'Reject traffic to invalid ports of ClusterIPs');
  const serviceCIDRs = (cfg.serviceCIDRs ?? []).filter((c) => c.includes(':') === (cfg.family === 'IPv6'));
  if (serviceCIDRs.length > 0) rule(CLUSTER_IPS_CHECK, `${fam} daddr { ${serviceCIDRs.join(',')} } drop`, 'Drop traffic to unallocated ClusterIPs');
  // nodeport-ips exists only when --nodeport-addresses selects addresses (upstream adds and deletes it otherwise).
  if (!npa.matchAll) {
    sets.push(`add set ${t} ${NODEPORT_IPS} { type ${addrType} ; comment "IPs that accept NodePort traffic" ; }`);
    for (const ip of npa.nodeIPs) if (!(ip === '::1' || ip.startsWith('127.'))) element(NODEPORT_IPS, ip);
  }
  sets.push(
    `add map ${t} ${NO_ENDPOINT_SERVICES} { type ${addrType} . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }`,
  );
  sets.push(
    `add map ${t} ${NO_ENDPOINT_NODEPORTS} { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }`,
  );
  chain(REJECT_CHAIN, 'helper for @no-endpoint-services / @no-endpoint-nodeports');
  rule(REJECT_CHAIN, 'reject');
  rule(SERVICE_ENDPOINTS_CHECK, `${fam} daddr . meta l4proto . th dport vmap @${NO_ENDPOINT_SERVICES}`);
  if (npa.matchAll) rule(NODEPORT_ENDPOINTS_CHECK, `${noLocalhost} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS}`);
  else rule(NODEPORT_ENDPOINTS_CHECK, `${fam} daddr @${NODEPORT_IPS} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS}`);
  sets.push(
    `add map ${t} ${FIREWALL_IPS} { type ${addrType} . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }`,
  );
  ensureChain(FIREWALL_CHECK);
  rule(FIREWALL_CHECK, `${fam} daddr . meta l4proto . th dport vmap @${FIREWALL_IPS}`);
  sets.push(
    `add map ${t} ${SERVICE_IPS} { type ${addrType} . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`,
  );
  sets.push(`add map ${t} ${SERVICE_NODEPORTS} { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }`);
  rule(SERVICES, `${fam} daddr . meta l4proto . th dport vmap @${SERVICE_IPS}`);
  if (npa.matchAll) rule(SERVICES, `fib daddr type local ${noLocalhost} meta l4proto . th dport vmap @${SERVICE_NODEPORTS}`);
  else rule(SERVICES, `${fam} daddr @${NODEPORT_IPS} meta l4proto . th dport vmap @${SERVICE_NODEPORTS}`);

  // syncProxyRules, per service port.
  for (const sp of upstreamServicePorts(objects, cfg)) {
    const protocol = sp.protocol.toLowerCase();
    const base = chainBase(sp);
    const clusterPolicyChain = `service-${base}`;
    const localPolicyChain = `local-${base}`;
    const externalTrafficChain = `external-${base}`;
    const fwChain = `firewall-${base}`;
    const epChain = (ep: { ip: string; port: number }) => `endpoint-${endpointBase(sp, ep)}`;
    const affinitySet = (ep: { ip: string; port: number }) => `affinity-${endpointBase(sp, ep)}`;
    const { hasEndpoints } = sp;
    const usesClusterPolicyChain = sp.clusterEndpoints.length > 0 && sp.usesClusterEndpoints;
    const usesLocalPolicyChain = sp.localEndpoints.length > 0 && sp.usesLocalEndpoints;
    const internalTrafficChain = sp.internalPolicyLocal ? localPolicyChain : clusterPolicyChain;
    const hasInternalEndpoints = hasEndpoints && !(sp.internalPolicyLocal && sp.localEndpoints.length === 0);
    const externalPolicyChain = sp.externalPolicyLocal ? localPolicyChain : clusterPolicyChain;
    const hasExternalEndpoints = hasEndpoints && !(sp.externalPolicyLocal && sp.localEndpoints.length === 0);
    const usesExternalTrafficChain = hasEndpoints && sp.externallyAccessible;
    const usesFWChain = sp.loadBalancerVIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;

    for (const ep of sp.allReachableEndpoints) chain(epChain(ep));
    if (usesClusterPolicyChain) chain(clusterPolicyChain);
    if (usesLocalPolicyChain) chain(localPolicyChain);
    if (usesExternalTrafficChain) chain(externalTrafficChain);
    if (usesFWChain) chain(fwChain);

    const internalVerdict = !hasEndpoints ? `goto ${REJECT_CHAIN}` : !hasInternalEndpoints ? 'drop' : '';
    const externalVerdict = !hasEndpoints ? `goto ${REJECT_CHAIN}` : !hasExternalEndpoints ? 'drop' : '';
    const dest = (ip: string) => `${ip} . ${protocol} . ${sp.port}`;

    element(CLUSTER_IPS, sp.clusterIP);
    if (hasInternalEndpoints) element(SERVICE_IPS, dest(sp.clusterIP), `goto ${internalTrafficChain}`);
    else element(NO_ENDPOINT_SERVICES, dest(sp.clusterIP), internalVerdict, sp.nameString);
    for (const ip of sp.externalIPs) {
      if (hasEndpoints) element(SERVICE_IPS, dest(ip), `goto ${externalTrafficChain}`);
      if (!hasExternalEndpoints) element(NO_ENDPOINT_SERVICES, dest(ip), externalVerdict, sp.nameString);
    }
    for (const ip of sp.loadBalancerVIPs) {
      if (hasEndpoints) element(SERVICE_IPS, dest(ip), `goto ${externalTrafficChain}`);
      if (usesFWChain) element(FIREWALL_IPS, dest(ip), `goto ${fwChain}`);
    }
    if (!hasExternalEndpoints) for (const ip of sp.loadBalancerVIPs) element(NO_ENDPOINT_SERVICES, dest(ip), externalVerdict, sp.nameString);
    if (sp.nodePort !== 0) {
      if (hasEndpoints) element(SERVICE_NODEPORTS, `${protocol} . ${sp.nodePort}`, `goto ${externalTrafficChain}`);
      if (!hasExternalEndpoints) element(NO_ENDPOINT_NODEPORTS, `${protocol} . ${sp.nodePort}`, externalVerdict, sp.nameString);
    }

    // Internal traffic handling. (The service chain is reached through service-ips for its own IP, protocol
    // and port only, so the current release matches the ClusterIP alone; older ones added "tcp dport N".)
    if (hasInternalEndpoints) {
      const match = `${fam} daddr ${sp.clusterIP}`;
      if (cfg.masqueradeAll) rule(internalTrafficChain, `${match} jump ${MARK_MASQ}`);
      else if (ifNotLocal) rule(internalTrafficChain, `${match} ${ifNotLocal} jump ${MARK_MASQ}`);
    }
    // External traffic handling.
    if (usesExternalTrafficChain) {
      if (!sp.externalPolicyLocal) {
        rule(externalTrafficChain, `jump ${MARK_MASQ}`);
      } else {
        if (ifLocal) rule(externalTrafficChain, `${ifLocal} goto ${clusterPolicyChain}`, 'short-circuit pod traffic');
        rule(externalTrafficChain, `fib saddr type local jump ${MARK_MASQ}`, 'masquerade local traffic');
        rule(externalTrafficChain, `fib saddr type local goto ${clusterPolicyChain}`, 'short-circuit local traffic');
      }
      if (hasExternalEndpoints) rule(externalTrafficChain, `goto ${externalPolicyChain}`);
    }
    if (usesFWChain) {
      const sources = [...sp.loadBalancerSourceRanges];
      // A VIP routed locally loops back with the VIP as its source: let the node through.
      if (node && sp.loadBalancerSourceRanges.some((c) => cidrContains(c, node))) sources.push(...sp.loadBalancerVIPs);
      rule(fwChain, `${fam} saddr != { ${sources.join(' , ')} } drop`);
    }
    if (sp.sessionAffinityClientIP) {
      for (const ep of sp.allReachableEndpoints) {
        sets.push(`add set ${t} ${affinitySet(ep)} { type ${addrType} ; flags dynamic,timeout ; timeout ${sp.stickyMaxAgeSeconds}s ; }`);
      }
    }
    const writeServiceToEndpointRules = (svcChain: string, endpoints: UpstreamServicePort['clusterEndpoints']) => {
      if (sp.sessionAffinityClientIP) for (const ep of endpoints) rule(svcChain, `${fam} saddr @${affinitySet(ep)} goto ${epChain(ep)}`);
      const entries = endpoints.map((ep, i) => `${i} : goto ${epChain(ep)}`).join(' , ');
      rule(svcChain, `numgen random mod ${endpoints.length} vmap { ${entries} }`);
    };
    if (usesClusterPolicyChain) writeServiceToEndpointRules(clusterPolicyChain, sp.clusterEndpoints);
    if (usesLocalPolicyChain) writeServiceToEndpointRules(localPolicyChain, sp.localEndpoints);
    for (const ep of sp.allReachableEndpoints) {
      rule(epChain(ep), `${fam} saddr ${ep.ip} jump ${MARK_MASQ}`);
      if (sp.sessionAffinityClientIP) rule(epChain(ep), `update @${affinitySet(ep)} { ${fam} saddr }`);
      rule(epChain(ep), `meta l4proto ${protocol} dnat to ${ep.id}`);
    }
  }

  const table = `add table ${t} { comment "rules for kube-proxy" ; }`;
  return `${[table, ...sets, ...chains, ...rules, ...elements].join('\n')}\n`;
}
