// Pure rendering of the desired state into iptables-restore input, in kube-proxy's layout:
//
//   nat     PREROUTING/OUTPUT -> KUBE-SERVICES -> one rule per frontend (ClusterIP, external IP,
//           load-balancer IP) -> KUBE-SVC-* (cluster endpoints) / KUBE-SVL-* (local endpoints) /
//           KUBE-EXT-* (external traffic) / KUBE-FW-* (loadBalancerSourceRanges) -> KUBE-SEP-* (DNAT);
//           last rule of KUBE-SERVICES: local destinations -> KUBE-NODEPORTS -> KUBE-EXT-*;
//           POSTROUTING -> KUBE-POSTROUTING masquerades what KUBE-MARK-MASQ marked.
//   filter  REJECT/DROP for frontends without (local) endpoints, the source-range firewall,
//           KUBE-FORWARD accepting marked and established traffic, and with localhost NodePorts
//           the localnet guard in kubelet's KUBE-FIREWALL.
//
// Filter rules only ever see traffic that nat did not DNAT (after DNAT the destination is an
// endpoint, no longer the frontend); proxier.ts relies on that to order its writes.
import { cidrContains, familyAddress, hostPort, InvalidValueError, parseCIDR, ruleCIDR, ruleIP, rulePort, ruleProtocol } from '../../model/addr.ts';
import { type DesiredState, type Endpoint, type IPFamily, masqueradeMark, type ServicePort } from '../../model/types.ts';
import { nodePortCIDRsOf } from '../../model/config.ts';
import { describeDetector, type LocalDetector, localDetector } from '../../model/local-detect.ts';
import { commentSafe, fmtProbability, fmtSeconds, quoteComment } from './format.ts';
import type { TextBuffer } from './text-buffer.ts';
import {
  endpointChain,
  FILTER_FIXED_CHAINS,
  KUBE_EXTERNAL_SERVICES,
  KUBE_FORWARD,
  KUBE_MARK_MASQ,
  KUBE_MASQ_NON_POD,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  KUBELET_FIREWALL,
  NAT_FIXED_CHAINS,
  servicePortName,
  serviceChains,
} from './names.ts';

export type Table = 'nat' | 'filter';

/** One rule: `-A <chain> <spec>`. */
export interface Rule {
  chain: string;
  spec: string;
}

/** A chain this proxy owns whole: declared (created or flushed) and filled in one go. */
export interface ChainRules {
  name: string;
  rules: string[];
}

/** Everything one service port contributes to the two tables. */
export interface RenderedServicePort {
  key: string;
  /** nat rules in the shared chains KUBE-SERVICES and KUBE-NODEPORTS. */
  frontends: Rule[];
  /** KUBE-SVC/SVL/EXT/FW chains: rewritten whole whenever the service port changes. */
  chains: ChainRules[];
  /** KUBE-SEP chains: their content only depends on their name and on `affinity`. */
  endpoints: ChainRules[];
  /** filter rules in the shared filter chains. */
  filter: Rule[];
  /** ClientIP affinity (the SEP chains then record the client with -m recent --set). */
  affinity: boolean;
}

/** What rendering needs from the configuration, validated and reduced to one family. */
export interface RenderContext {
  family: IPFamily;
  /** How a packet from a local pod is told apart (model/local-detect.ts). */
  local: LocalDetector;
  /** The masquerade mark as iptables-save prints it (0x4000 for the default bit 14). */
  masqMark: string;
  masqueradeAll: boolean;
  /** CIDRs whose local addresses accept NodePorts; null: every local address. */
  nodePortCIDRs: string[] | null;
  /** This node's addresses of the family (a source range that holds one also admits the LB IPs as sources). */
  nodeIPs: string[];
  /**
   * Upstream's localhostNodePorts: NodePorts also answer on 127.0.0.1 from the node itself. IPv4 only (IPv6 has
   * no route_localnet), on unless the configuration turns it off or --nodeport-addresses leaves loopback out.
   * It needs net.ipv4.conf.all.route_localnet=1 (the proxier sets it) and the martian-packet guard in KUBE-FIREWALL.
   */
  localhostNodePorts: boolean;
  /** What is wrong with the configuration for this family (logged once per configuration). */
  warnings: string[];
}

/** The loopback range of each family and its first address. */
const LOOPBACK: Record<IPFamily, { cidr: string; ip: string; range: string }> = {
  IPv4: { cidr: '127.0.0.0/8', ip: '127.0.0.1', range: '127.0.0.0-127.255.255.255' },
  IPv6: { cidr: '::1/128', ip: '::1', range: '::1-::1' },
};

export function renderContext(state: DesiredState): RenderContext {
  const { family, config } = state;
  // Which configured CIDRs apply to this family: model/config.ts (null: NodePorts on every local address).
  const nodePortCIDRs = nodePortCIDRsOf(config, family)?.map((c) => ruleCIDR(c, family)) ?? null;
  const loopback = LOOPBACK[family];
  const localhostNodePorts =
    family === 'IPv4' && config.localhostNodePorts !== false && (nodePortCIDRs === null || nodePortCIDRs.some((c) => cidrContains(c, loopback.ip)));
  const warnings: string[] = [];
  const local = localDetector(config, family);
  // As upstream, which logs that it cannot tell local traffic (and so masquerades none of it) for the family.
  if (local.kind === 'none' && !config.masqueradeAll) warnings.push(describeDetector(local));
  for (const cidr of nodePortCIDRs ?? []) {
    if (!localhostNodePorts && onlyLoopback(cidr, family)) {
      warnings.push(
        family === 'IPv6'
          ? `--nodeport-addresses ${cidr} holds only loopback addresses, but localhost NodePorts are not supported on IPv6: left out`
          : `--nodeport-addresses ${cidr} holds only loopback addresses, but localhost NodePorts are off (iptables.localhostNodePorts false): left out`,
      );
    }
  }
  return {
    family,
    local: local.kind === 'cidr' ? { kind: 'cidr', cidrs: local.cidrs.map((c) => ruleCIDR(c, family)) } : local,
    masqMark: `0x${masqueradeMark(config).toString(16)}`,
    masqueradeAll: config.masqueradeAll,
    nodePortCIDRs,
    nodeIPs: (state.node?.addresses ?? []).map((a) => familyAddress(a, family)).filter((a) => a !== null),
    localhostNodePorts,
    warnings,
  };
}

/** Whether every address of `cidr` is a loopback address of its family. */
function onlyLoopback(cidr: string, family: IPFamily): boolean {
  const c = parseCIDR(cidr);
  const lo = parseCIDR(LOOPBACK[family].cidr)!;
  return c !== null && c.prefix >= lo.prefix && cidrContains(lo.cidr, c.network);
}

/**
 * Renders one service port. Throws InvalidValueError when a value would not make a valid rule;
 * the caller then leaves the whole service port out (never half of it).
 *
 * Which endpoints each kind of traffic uses is the model's one decision (ServicePort.internalEndpoints,
 * externalEndpoints, clusterEndpoints, localEndpoints, hasAnyEndpoints and the policy flags); this only
 * lays it out as kube-proxy does (pkg/proxy/iptables/proxier.go, syncProxyRules).
 */
export function renderServicePort(sp: ServicePort, ctx: RenderContext): RenderedServicePort {
  const f = ctx.family;
  if (sp.family !== f) throw new InvalidValueError(`an ${sp.family} service port in the ${f} rules`);
  const proto = ruleProtocol(sp.protocol);
  const name = servicePortName(sp);
  const ch = serviceChains(name, proto);
  /** The name as comments show it (sanitised once; every other part of a comment is safe already). */
  const cn = commentSafe(name);
  const port = rulePort(sp.port);
  const pm = `-m ${proto} -p ${proto}`;
  const clusterIPs = sp.clusterIPs.map((ip) => ruleIP(ip, f));
  const externalIPs = sp.externalIPs.map((ip) => ruleIP(ip, f));
  const lbIPs = sp.loadBalancerIPs.map((ip) => ruleIP(ip, f));
  const sourceRanges = sp.loadBalancerSourceRanges.map((c) => ruleCIDR(c, f));
  const nodePort = sp.nodePort !== null ? rulePort(sp.nodePort) : null;
  const healthCheckNodePort = sp.healthCheckNodePort !== null ? rulePort(sp.healthCheckNodePort) : null;
  const affinitySeconds = sp.affinityTimeoutSeconds !== null ? fmtSeconds(sp.affinityTimeoutSeconds) : null;

  // The chains upstream uses, from the model's decision. The Cluster chain also serves the short circuit
  // of pods and the node itself to external frontends under a Local external policy.
  const hasEndpoints = sp.hasAnyEndpoints;
  const hasInternal = sp.internalEndpoints.length > 0;
  const hasExternal = sp.externalEndpoints.length > 0;
  const usesClusterChain = sp.clusterEndpoints.length > 0 && (!sp.internalPolicyLocal || sp.externallyAccessible);
  const usesLocalChain = sp.localEndpoints.length > 0 && (sp.internalPolicyLocal || sp.externalPolicyLocal);
  const internalChain = sp.internalPolicyLocal ? ch.svl : ch.svc;
  const externalPolicyChain = sp.externalPolicyLocal ? ch.svl : ch.svc;
  // Based on hasEndpoints, not hasExternal: the short-circuit rules are needed even without local endpoints.
  const usesExtChain = hasEndpoints && sp.externallyAccessible;
  const usesFwChain = hasEndpoints && lbIPs.length > 0 && sourceRanges.length > 0;
  const lbChain = usesFwChain ? ch.fw : ch.ext;

  // Without any endpoint every frontend REJECTs; with some but none for a Local policy, that traffic is DROPped.
  const filterVerdict = hasEndpoints ? { target: 'DROP', comment: `${cn} has no local endpoints` } : { target: 'REJECT', comment: `${cn} has no endpoints` };
  const c = quoteComment;

  const frontends: Rule[] = [];
  const filter: Rule[] = [];
  const chains: ChainRules[] = [];

  for (const ip of clusterIPs) {
    if (hasInternal) {
      frontends.push({ chain: KUBE_SERVICES, spec: `-m comment --comment ${c(`${cn} cluster IP`)} ${pm} -d ${ip} --dport ${port} -j ${internalChain}` });
    } else {
      filter.push({
        chain: KUBE_SERVICES,
        spec: `-m comment --comment ${c(filterVerdict.comment)} ${pm} -d ${ip} --dport ${port} -j ${filterVerdict.target}`,
      });
    }
  }
  for (const ip of externalIPs) {
    if (hasEndpoints)
      frontends.push({ chain: KUBE_SERVICES, spec: `-m comment --comment ${c(`${cn} external IP`)} ${pm} -d ${ip} --dport ${port} -j ${ch.ext}` });
    if (!hasExternal) {
      filter.push({
        chain: KUBE_EXTERNAL_SERVICES,
        spec: `-m comment --comment ${c(filterVerdict.comment)} ${pm} -d ${ip} --dport ${port} -j ${filterVerdict.target}`,
      });
    }
  }
  for (const ip of lbIPs) {
    if (hasEndpoints)
      frontends.push({ chain: KUBE_SERVICES, spec: `-m comment --comment ${c(`${cn} loadbalancer IP`)} ${pm} -d ${ip} --dport ${port} -j ${lbChain}` });
    // What KUBE-FW-* did not accept was not DNATed and still has the LB IP as destination.
    if (usesFwChain) {
      filter.push({
        chain: KUBE_PROXY_FIREWALL,
        spec: `-m comment --comment ${c(`${cn} traffic not accepted by ${ch.fw}`)} ${pm} -d ${ip} --dport ${port} -j DROP`,
      });
    }
  }
  if (!hasExternal) {
    for (const ip of lbIPs) {
      filter.push({
        chain: KUBE_EXTERNAL_SERVICES,
        spec: `-m comment --comment ${c(filterVerdict.comment)} ${pm} -d ${ip} --dport ${port} -j ${filterVerdict.target}`,
      });
    }
  }
  if (nodePort !== null) {
    if (hasEndpoints) frontends.push({ chain: KUBE_NODEPORTS, spec: `-m comment --comment ${c(cn)} ${pm} --dport ${nodePort} -j ${ch.ext}` });
    if (!hasExternal) {
      filter.push({
        chain: KUBE_EXTERNAL_SERVICES,
        spec: `-m comment --comment ${c(filterVerdict.comment)} -m addrtype --dst-type LOCAL ${pm} --dport ${nodePort} -j ${filterVerdict.target}`,
      });
    }
  }
  if (healthCheckNodePort !== null) {
    filter.push({
      chain: KUBE_NODEPORTS,
      spec: `-m comment --comment ${c(`${cn} health check node port`)} -m tcp -p tcp --dport ${healthCheckNodePort} -j ACCEPT`,
    });
  }

  if (usesExtChain) {
    const rules: string[] = [];
    if (!sp.externalPolicyLocal) {
      // The endpoint may be on another node: masquerade so the reply comes back through this one.
      rules.push(`-m comment --comment ${c(`masquerade traffic for ${cn} external destinations`)} -j ${KUBE_MARK_MASQ}`);
    } else {
      // Pods and the node itself are not subject to the external policy: they use the Cluster endpoints.
      for (const match of ifLocal(ctx.local)) {
        rules.push(`-m comment --comment ${c(`pod traffic for ${cn} external destinations`)} ${match} -j ${ch.svc}`);
      }
      rules.push(`-m comment --comment ${c(`masquerade LOCAL traffic for ${cn} external destinations`)} -m addrtype --src-type LOCAL -j ${KUBE_MARK_MASQ}`);
      rules.push(`-m comment --comment ${c(`route LOCAL traffic for ${cn} external destinations`)} -m addrtype --src-type LOCAL -j ${ch.svc}`);
    }
    // Without a (local) endpoint the traffic falls through and the filter table drops/rejects it.
    if (hasExternal) rules.push(`-j ${externalPolicyChain}`);
    chains.push({ name: ch.ext, rules });
  }

  if (usesFwChain) {
    const cm = `-m comment --comment ${c(`${cn} loadbalancer IP`)}`;
    const rules = sourceRanges.map((r) => `${cm} -s ${r} -j ${ch.ext}`);
    // A VIP-like LB IP is often a local address: the node's own requests then come from the LB IP.
    if (ctx.nodeIPs.some((ip) => sourceRanges.some((r) => cidrContains(r, ip)))) {
      for (const ip of lbIPs) rules.push(`${cm} -s ${ip} -j ${ch.ext}`);
    }
    chains.push({ name: ch.fw, rules });
  }

  // Endpoint chain names, computed once per endpoint.
  const seps = new Map<string, { chain: string; ip: string; hostPort: string }>();
  const sepOf = (ep: Endpoint) => {
    const ip = ruleIP(ep.ip, f);
    const dest = hostPort(ip, Number(rulePort(ep.port)));
    let s = seps.get(dest);
    if (!s) {
      s = { chain: endpointChain(name, proto, dest), ip, hostPort: dest };
      seps.set(dest, s);
    }
    return s;
  };
  const policyChain = (chain: string, eps: readonly Endpoint[]): ChainRules => {
    const rules: string[] = [];
    if (chain === internalChain && hasInternal) rules.push(...clusterIPMasqRules(ctx, cn, pm, clusterIPs, port));
    const targets = eps.map(sepOf);
    // Affinity first: a client seen recently goes back to its endpoint.
    if (affinitySeconds !== null) {
      for (const s of targets) {
        rules.push(
          `-m comment --comment ${c(`${cn} -> ${s.hostPort}`)} -m recent --name ${s.chain} --rcheck --seconds ${affinitySeconds} --reap -j ${s.chain}`,
        );
      }
    }
    // Endpoint i of n is taken with probability 1/(n-i) of what is left: an equal share each.
    const n = targets.length;
    targets.forEach((s, i) => {
      const stat = i < n - 1 ? ` -m statistic --mode random --probability ${fmtProbability(n - i)}` : '';
      rules.push(`-m comment --comment ${c(`${cn} -> ${s.hostPort}`)}${stat} -j ${s.chain}`);
    });
    return { name: chain, rules };
  };
  if (usesClusterChain) chains.push(policyChain(ch.svc, sp.clusterEndpoints));
  if (usesLocalChain) chains.push(policyChain(ch.svl, sp.localEndpoints));

  const sepComment = `-m comment --comment ${c(cn)}`;
  const endpoints: ChainRules[] = [];
  for (const s of seps.values()) {
    const recent = affinitySeconds !== null ? ` -m recent --name ${s.chain} --set` : '';
    endpoints.push({
      name: s.chain,
      rules: [
        // Hairpin: an endpoint reaching itself through the service must be masqueraded.
        `${sepComment} -s ${s.ip} -j ${KUBE_MARK_MASQ}`,
        `${sepComment}${recent} ${pm} -j DNAT --to-destination ${s.hostPort}`,
      ],
    });
  }

  return { key: sp.key, frontends, chains, endpoints, filter, affinity: affinitySeconds !== null };
}

/**
 * The detector's IfLocal as iptables matches: any one of them matching means local traffic. Empty without a
 * detector (upstream's IsImplemented false: no rule at all).
 */
export function ifLocal(d: LocalDetector): string[] {
  switch (d.kind) {
    case 'none':
      return [];
    case 'cidr':
      return d.cidrs.map((cidr) => `-s ${cidr}`);
    case 'interface':
      return [`-i ${d.name}`];
    case 'prefix':
      return [`-i ${d.prefix}+`];
  }
}

/**
 * The detector's IfNotLocal as one iptables match, or null when one match cannot say it (more than one CIDR:
 * the KUBE-MASQ-NON-POD chain returns for each) or there is no detector.
 */
export function ifNotLocal(d: LocalDetector): string | null {
  if (d.kind === 'none' || (d.kind === 'cidr' && d.cidrs.length !== 1)) return null;
  return `! ${ifLocal(d)[0]!}`;
}

/** Whether not-local needs the KUBE-MASQ-NON-POD chain (several CIDRs of the family, no --masquerade-all). */
function needsNonPodChain(ctx: RenderContext): boolean {
  return !ctx.masqueradeAll && ctx.local.kind === 'cidr' && ctx.local.cidrs.length > 1;
}

/** Marks ClusterIP traffic that does not come from a local pod (or all of it with --masquerade-all). */
function clusterIPMasqRules(ctx: RenderContext, name: string /* comment-safe */, pm: string, clusterIPs: string[], port: string): string[] {
  const notLocal = ifNotLocal(ctx.local);
  if (!ctx.masqueradeAll && notLocal === null && !needsNonPodChain(ctx)) return [];
  return clusterIPs.map((ip) => {
    const head = `-m comment --comment ${quoteComment(`${name} cluster IP`)} ${pm} -d ${ip} --dport ${port}`;
    if (ctx.masqueradeAll) return `${head} -j ${KUBE_MARK_MASQ}`;
    if (notLocal !== null) return `${head} ${notLocal} -j ${KUBE_MARK_MASQ}`;
    return `${head} -j ${KUBE_MASQ_NON_POD}`;
  });
}

/** A jump from a built-in chain into ours, written exactly as iptables-save prints it. */
export interface Jump {
  table: Table;
  chain: string;
  spec: string;
}

const NEW = '-m conntrack --ctstate NEW';
const jump = (table: Table, chain: string, comment: string, target: string, extra = ''): Jump => ({
  table,
  chain,
  spec: `${extra ? `${extra} ` : ''}-m comment --comment "${comment}" -j ${target}`,
});

/** kube-proxy's jumps, in the order they end up in each built-in chain. */
export const JUMPS: readonly Jump[] = [
  jump('nat', 'PREROUTING', 'kubernetes service portals', KUBE_SERVICES),
  jump('nat', 'OUTPUT', 'kubernetes service portals', KUBE_SERVICES),
  jump('nat', 'POSTROUTING', 'kubernetes postrouting rules', KUBE_POSTROUTING),
  jump('filter', 'INPUT', 'kubernetes load balancer firewall', KUBE_PROXY_FIREWALL, NEW),
  jump('filter', 'INPUT', 'kubernetes health check service ports', KUBE_NODEPORTS),
  jump('filter', 'INPUT', 'kubernetes externally-visible service portals', KUBE_EXTERNAL_SERVICES, NEW),
  jump('filter', 'FORWARD', 'kubernetes load balancer firewall', KUBE_PROXY_FIREWALL, NEW),
  jump('filter', 'FORWARD', 'kubernetes forwarding rules', KUBE_FORWARD),
  jump('filter', 'FORWARD', 'kubernetes service portals', KUBE_SERVICES, NEW),
  jump('filter', 'FORWARD', 'kubernetes externally-visible service portals', KUBE_EXTERNAL_SERVICES, NEW),
  jump('filter', 'OUTPUT', 'kubernetes load balancer firewall', KUBE_PROXY_FIREWALL, NEW),
  jump('filter', 'OUTPUT', 'kubernetes service portals', KUBE_SERVICES, NEW),
];

/** The jumps into kubelet's KUBE-FIREWALL, first in INPUT and OUTPUT, without a comment (as kubelet and kube-proxy write them). */
const GUARD_JUMPS: readonly Jump[] = [
  { table: 'filter', chain: 'INPUT', spec: `-j ${KUBELET_FIREWALL}` },
  { table: 'filter', chain: 'OUTPUT', spec: `-j ${KUBELET_FIREWALL}` },
];

/** The jumps of one table for this configuration: JUMPS, and the martian-packet guard's with localhost NodePorts. */
export function jumpsFor(ctx: RenderContext, table: Table): Jump[] {
  return [...(ctx.localhostNodePorts ? GUARD_JUMPS : []), ...JUMPS].filter((j) => j.table === table);
}

/**
 * Restore lines inserting `jumps` at the top of their built-in chains, last first, so that they
 * end up in JUMPS order.
 */
export function jumpInserts(jumps: readonly Jump[]): string[] {
  return jumps.map((j) => `-I ${j.chain} 1 ${j.spec}`).reverse();
}

/** A generous guess of the size of the nat rules, so the buffer rarely grows (untouched pages cost no memory). */
export function estimateNatBytes(ports: Iterable<ServicePort>): number {
  let n = 8192;
  for (const sp of ports) n += 1200 + 600 * (sp.clusterEndpoints.length + sp.localEndpoints.length);
  return n;
}

const DECLARATION_BYTES = ':KUBE-SEP-XXXXXXXXXXXXXXXX - [0:0]\n'.length;

/** An upper bound of the size of the chain declarations of `ports` (see prependNatDeclarations). */
export function declarationBytes(ports: Iterable<ServicePort>): number {
  let chains = 16;
  for (const sp of ports) chains += 4 + sp.clusterEndpoints.length + sp.localEndpoints.length;
  return chains * DECLARATION_BYTES;
}

const NAT_HEAD = '*nat\n';
const DECLARED = ' - [0:0]\n';

/**
 * Puts `*nat` and the declaration of every chain of a full nat write (under --noflush a
 * declaration creates the chain, or flushes it) in front of its rules, sorted by name:
 * iptables-nft-restore takes several times longer to create tens of thousands of chains in any
 * other order (13 s instead of 35 s at 2,000 services x 10 endpoints, measured here).
 */
export function prependNatDeclarations(out: TextBuffer, chains: string[]): void {
  chains.sort();
  out.prependLines(chains, ':', DECLARED, NAT_HEAD);
}

/** What prependNatDeclarations puts in front of the rules, as pieces of text (output written as it is produced). */
export function* natDeclarations(chains: string[]): Generator<string> {
  chains.sort();
  yield NAT_HEAD;
  for (const chain of chains) yield `:${chain}${DECLARED}`;
}

/** The rules of the fixed nat chains (declared with the others, see natFixedChains), as `-A` lines. */
export function natFixedRules(ctx: RenderContext): string[] {
  const mark = ctx.masqMark;
  const lines = [
    `-A ${KUBE_POSTROUTING} -m mark ! --mark ${mark}/${mark} -j RETURN`,
    // Clear the mark so that a packet that is re-processed (e.g. by IPsec) is not masqueraded again.
    `-A ${KUBE_POSTROUTING} -j MARK --xor-mark ${mark}`,
    `-A ${KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
    `-A ${KUBE_MARK_MASQ} -j MARK --or-mark ${mark}`,
  ];
  if (needsNonPodChain(ctx)) {
    for (const match of ifLocal(ctx.local)) lines.push(`-A ${KUBE_MASQ_NON_POD} ${match} -j RETURN`);
    lines.push(`-A ${KUBE_MASQ_NON_POD} -j ${KUBE_MARK_MASQ}`);
  }
  return lines;
}

/** The fixed chains of nat that this configuration uses. */
export function natFixedChains(ctx: RenderContext): string[] {
  return needsNonPodChain(ctx) ? [...NAT_FIXED_CHAINS, KUBE_MASQ_NON_POD] : [...NAT_FIXED_CHAINS];
}

/** One service port's nat rules as lines of a full write, "" for none (its chains are declared by prependNatDeclarations). */
export function servicePortRules(r: RenderedServicePort): string {
  // One piece per service port: joining makes a single flat string of the parts.
  const lines: string[] = [];
  for (const ch of r.endpoints) for (const rule of ch.rules) lines.push(`-A ${ch.name} ${rule}`);
  for (const ch of r.chains) for (const rule of ch.rules) lines.push(`-A ${ch.name} ${rule}`);
  for (const fe of r.frontends) lines.push(`-A ${fe.chain} ${fe.spec}`);
  return lines.join('\n');
}

/**
 * The last rules of KUBE-SERVICES: NodePorts on local addresses (or the --nodeport-addresses ones). Loopback
 * destinations are left out unless localhost NodePorts are on (IPv4 with route_localnet): a DNATed packet
 * with a loopback source would be dropped as a martian, and local servers on 127.0.0.1/::1 keep their ports.
 */
export function nodePortJumps(ctx: RenderContext): string[] {
  const head = `-A ${KUBE_SERVICES} -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"`;
  const loopback = LOOPBACK[ctx.family];
  if (ctx.nodePortCIDRs === null) {
    const exclude = ctx.localhostNodePorts ? '' : ` ! -d ${loopback.cidr}`;
    return [`${head} -m addrtype --dst-type LOCAL${exclude} -j ${KUBE_NODEPORTS}`];
  }
  return ctx.nodePortCIDRs.flatMap((cidr) => {
    const rule = `${head} -d ${cidr} -m addrtype --dst-type LOCAL`;
    if (ctx.localhostNodePorts || !cidrContains(cidr, loopback.ip)) return [`${rule} -j ${KUBE_NODEPORTS}`];
    if (onlyLoopback(cidr, ctx.family)) return []; // reported in ctx.warnings
    // A range wider than loopback: -d takes one CIDR per rule, so the loopback part is cut out with iprange.
    return [`${rule} -m iprange ! --dst-range ${loopback.range} -j ${KUBE_NODEPORTS}`];
  });
}

/**
 * Upstream's guard for route_localnet (kubernetes issue 90259): with it, a packet from another host to
 * 127.0.0.1 would be accepted; drop those that are not replies and were not DNATed. Kubelet writes the
 * same rule in the same chain; kube-proxy flushes and rewrites it with its filter table, as here.
 */
const LOCALNET_GUARD = `-A ${KUBELET_FIREWALL} -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`;

/**
 * The whole filter table part: fixed chains (declared, so flushed under --noflush), KUBE-FORWARD, the
 * localnet guard, then every service port's filter rules in the given order, then `tail` (chain removals,
 * jump edits).
 */
export function filterText(ctx: RenderContext, rulesByPort: Iterable<readonly Rule[]>, tail: readonly string[] = []): string {
  const lines = ['*filter'];
  for (const chain of FILTER_FIXED_CHAINS) lines.push(`:${chain} - [0:0]`);
  if (ctx.localhostNodePorts) lines.push(`:${KUBELET_FIREWALL} - [0:0]`);
  lines.push(
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark ${ctx.masqMark}/${ctx.masqMark} -j ACCEPT`,
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  );
  if (ctx.localhostNodePorts) lines.push(LOCALNET_GUARD);
  for (const rules of rulesByPort) for (const r of rules) lines.push(`-A ${r.chain} ${r.spec}`);
  lines.push(...tail, 'COMMIT', '');
  return lines.join('\n');
}

/** Service ports in a stable order (by key), so that rendered text is deterministic. */
export function sortedPorts(state: DesiredState): ServicePort[] {
  return [...state.servicePorts.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
