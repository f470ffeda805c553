// The userspace mode's kernel rules for one family, rendered as iptables-restore input (ip6tables-restore
// for IPv6: the same chains in that family's tables). Pure.
//
// nat (where traffic is sent to our listeners):
//   PREROUTING -> KUBE-PORTALS-CONTAINER  traffic from pods and from outside: REDIRECT to the listener
//                                         (the kernel rewrites the destination to the incoming
//                                         interface's address and the listener's port; for IPv6 its
//                                         first address of the destination's scope: an interface
//                                         without one drops the packet)
//   OUTPUT     -> KUBE-PORTALS-HOST       the node's own traffic: REDIRECT to the loopback address
//                                         (127.0.0.1, or ::1)
// filter (what is not redirected):
//   INPUT, FORWARD, OUTPUT -> KUBE-PORTALS-DENY   REJECT for service ports without endpoints, DROP for
//                                                 Local policies without local endpoints and for
//                                                 sources outside loadBalancerSourceRanges
//   INPUT -> KUBE-PORTALS-GUARD   refuses connections made to a listener port directly, so listeners
//                                 are reachable only through the frontends that redirect to them
// A frontend that is redirected never meets its deny rule: REDIRECT has rewritten the destination
// by the time filter looks at the packet. NodePorts come last in the portal chains, as in kube-proxy.
// REJECT is the kernel's default for the family: ICMP port unreachable, ICMPv6 port unreachable for IPv6.
import { InvalidValueError, ruleCIDR, ruleIP, rulePort, ruleProtocol } from '../../model/addr.ts';
import type { IPFamily, ProxyConfig, ServicePort } from '../../model/types.ts';
import { nodePortCIDRsOf } from '../../model/config.ts';
import { podSourceCIDRs } from './sources.ts';
import type { ListenerClass } from './balancer.ts';
import { listenerClasses } from './balancer.ts';
import { intersectCidrs } from './sources.ts';

export const CHAINS = {
  container: 'KUBE-PORTALS-CONTAINER',
  host: 'KUBE-PORTALS-HOST',
  deny: 'KUBE-PORTALS-DENY',
  guard: 'KUBE-PORTALS-GUARD',
} as const;

export type Table = 'filter' | 'nat';

/** Our chains per table, in restore order. */
export const TABLE_CHAINS: Readonly<Record<Table, readonly string[]>> = {
  filter: [CHAINS.deny, CHAINS.guard],
  nat: [CHAINS.container, CHAINS.host],
};

/** A jump from a built-in chain to one of ours, installed once (checked with -C, inserted with -I). */
export interface HookJump {
  table: Table;
  chain: string;
  /** The rule's arguments after the chain name, as argv. */
  rule: readonly string[];
}

const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'];
const tag = (what: string): string[] => ['-m', 'comment', '--comment', `kube-proxy-ts userspace ${what}`];

export const JUMPS: readonly HookJump[] = [
  { table: 'filter', chain: 'INPUT', rule: [...NEW, ...tag('listener guard'), '-j', CHAINS.guard] },
  { table: 'filter', chain: 'INPUT', rule: [...NEW, ...tag('service denials'), '-j', CHAINS.deny] },
  { table: 'filter', chain: 'FORWARD', rule: [...NEW, ...tag('service denials'), '-j', CHAINS.deny] },
  { table: 'filter', chain: 'OUTPUT', rule: [...NEW, ...tag('service denials'), '-j', CHAINS.deny] },
  { table: 'nat', chain: 'PREROUTING', rule: [...tag('portals'), '-j', CHAINS.container] },
  { table: 'nat', chain: 'OUTPUT', rule: [...tag('portals'), '-j', CHAINS.host] },
];

/** Where a listener receives redirected traffic. */
export interface PortalTarget {
  /** PREROUTING target (the wildcard socket). */
  port: number;
  /** OUTPUT target (TCP: the same port; UDP: the loopback socket's port). */
  hostPort: number;
}

/** What the rules take from the configuration, for one family. */
export interface FamilyConfig {
  family: IPFamily;
  /** The pod sources of this family (sources.ts podSourceCIDRs: the local-traffic detector's CIDRs). */
  clusterCIDRs: string[];
  /**
   * This family's --nodeport-addresses, or null for every local address: none given for this family, or a
   * /0 among them (upstream's NodePortAddresses: each family uses its own CIDRs, and MatchAll without any).
   */
  nodePortCIDRs: string[] | null;
}

/** The configuration as one family's rules use it (model/config.ts decides which CIDRs apply). */
export function familyConfig(config: ProxyConfig, family: IPFamily): FamilyConfig {
  const nodePort = nodePortCIDRsOf(config, family);
  return {
    family,
    clusterCIDRs: podSourceCIDRs(config, family).map((c) => ruleCIDR(c, family)),
    nodePortCIDRs: nodePort === null ? null : nodePort.map((c) => ruleCIDR(c, family)),
  };
}

export interface PortalRenderContext {
  config: FamilyConfig;
  /** The listener of a service port's class, or null when it has none (its frontends are then refused). */
  target(sp: ServicePort, cls: ListenerClass): PortalTarget | null;
}

export interface RenderInput extends PortalRenderContext {
  servicePorts: Iterable<ServicePort>;
  /** Ports of the wildcard sockets of every listener, for the guard chain. */
  listenerPorts: ListenerPorts;
}

export interface ListenerPorts {
  tcp: readonly number[];
  udp: readonly number[];
}

/** One service port's rules, by where they go. */
export interface ServicePortRules {
  container: string[];
  host: string[];
  /** NodePort rules go last in each portal chain. */
  nodePortContainer: string[];
  nodePortHost: string[];
  deny: string[];
  /** [listener port, nat line] of every UDP redirect. */
  udp: [number, string][];
}

export interface RenderedRules {
  /** "-A CHAIN ..." lines per table, in order. */
  filter: string[];
  nat: string[];
  /** For each UDP listener port (wildcard or loopback socket): the nat lines redirecting to it. */
  udpRedirects: Map<number, string[]>;
}

/** Quotes an argument for iptables-restore when it needs it (only comments have spaces). */
function quote(arg: string): string {
  return /^[A-Za-z0-9_.:/,!=+-]+$/.test(arg) ? arg : `"${arg}"`;
}

/** An iptables-restore rule line. */
export function ruleLine(op: '-A' | '-I', chain: string, args: readonly string[], position?: number): string {
  return [op, chain, ...(position === undefined ? [] : [String(position)]), ...args.map(quote)].join(' ');
}

/** Comment text: the service port key, restricted to characters that need no escaping. */
function commentText(text: string): string {
  return text.replace(/[^A-Za-z0-9 ._:/-]/g, '_').slice(0, 240);
}

/** One frontend of a service port as the rules match it. */
export interface Frontend {
  kind: 'internal' | 'external';
  /** Destination match: address (or local-address type) and port. */
  match: string[];
  /** loadBalancerSourceRanges, for LB IPs. */
  sourceRanges: string[];
  nodePort: boolean;
  comment: string;
}

/**
 * The frontends of a service port, every value checked for the family (model/addr.ts). Throws
 * InvalidValueError on a value that must not reach a rule: the caller leaves the whole service port out.
 */
export function frontendsOf(sp: ServicePort, config: FamilyConfig): Frontend[] {
  const { family } = config;
  if (sp.family !== family) throw new InvalidValueError(`an ${sp.family} service port in the ${family} rules`);
  const proto = ruleProtocol(sp.protocol);
  const svc = commentText(sp.key);
  const portMatch = (port: number) => ['-p', proto, '-m', proto, '--dport', rulePort(port)];
  const hostCIDR = (ip: string) => `${ruleIP(ip, family)}/${family === 'IPv4' ? 32 : 128}`;
  const out: Frontend[] = [];
  const add = (kind: Frontend['kind'], ip: string, what: string, ranges: string[] = []): void => {
    out.push({ kind, match: ['-d', hostCIDR(ip), ...portMatch(sp.port)], sourceRanges: ranges, nodePort: false, comment: `${svc} ${what}` });
  };
  for (const ip of sp.clusterIPs) add('internal', ip, 'cluster IP');
  for (const ip of sp.externalIPs) add('external', ip, 'external IP');
  const ranges = sp.loadBalancerSourceRanges.map((c) => ruleCIDR(c, family));
  for (const ip of sp.loadBalancerIPs) add('external', ip, 'load balancer IP', ranges);
  if (sp.nodePort !== null) {
    const local = ['-m', 'addrtype', '--dst-type', 'LOCAL'];
    const dsts = config.nodePortCIDRs?.map((c) => ['-d', c]) ?? [[]];
    for (const d of dsts) {
      out.push({ kind: 'external', match: [...d, ...local, ...portMatch(sp.nodePort)], sourceRanges: [], nodePort: true, comment: `${svc} node port` });
    }
  }
  return out;
}

/**
 * Renders one service port's rules from the model's endpoint decision: no endpoint anywhere REJECTs every
 * frontend; ClusterIPs without internalEndpoints DROP; external frontends without externalEndpoints (a Local
 * policy, no local endpoint) redirect only pods and the node itself (who use clusterEndpoints) and DROP the rest.
 * `frontends` are frontendsOf(sp), when the caller has them already.
 */
export function renderServicePort(sp: ServicePort, ctx: PortalRenderContext, frontends: readonly Frontend[] = frontendsOf(sp, ctx.config)): ServicePortRules {
  const out: ServicePortRules = { container: [], host: [], nodePortContainer: [], nodePortHost: [], deny: [], udp: [] };
  const redirect = (chain: 'container' | 'host', f: Frontend, source: string | null, port: number): void => {
    const args = [...(source ? ['-s', source] : []), ...f.match, '-m', 'comment', '--comment', f.comment, '-j', 'REDIRECT', '--to-ports', rulePort(port)];
    const line = ruleLine('-A', chain === 'container' ? CHAINS.container : CHAINS.host, args);
    if (chain === 'container') (f.nodePort ? out.nodePortContainer : out.container).push(line);
    else (f.nodePort ? out.nodePortHost : out.host).push(line);
    if (sp.protocol === 'UDP') out.udp.push([port, line]);
  };
  const refuse = (f: Frontend, verdict: 'REJECT' | 'DROP', why: string): void => {
    out.deny.push(ruleLine('-A', CHAINS.deny, [...f.match, '-m', 'comment', '--comment', `${f.comment} ${why}`, '-j', verdict]));
  };

  if (!sp.hasAnyEndpoints) {
    for (const f of frontends) refuse(f, 'REJECT', 'has no endpoints');
    return out;
  }
  const split = listenerClasses(sp)[0] !== 'all';
  const internalTarget = ctx.target(sp, split ? 'internal' : 'all');
  const externalTarget = split ? ctx.target(sp, 'external') : internalTarget;
  const noInternal = sp.internalEndpoints.length === 0;
  const noExternal = sp.externalEndpoints.length === 0;
  for (const f of frontends) {
    const target = f.kind === 'internal' ? internalTarget : externalTarget;
    if (!target) {
      refuse(f, 'REJECT', `cannot be proxied (${sp.protocol})`);
      continue;
    }
    if (f.kind === 'internal') {
      if (noInternal) {
        refuse(f, 'DROP', 'has no local endpoints');
        continue;
      }
      redirect('container', f, null, target.port);
      redirect('host', f, null, target.hostPort);
      continue;
    }
    const sources: (string | null)[] = f.sourceRanges.length > 0 ? f.sourceRanges : [null];
    // Without externalEndpoints only the short circuit is left: pods (the container chain sees them by
    // their cluster CIDR) and the node itself (the host chain).
    for (const src of noExternal ? intersectCidrs(sources, ctx.config.clusterCIDRs) : sources) redirect('container', f, src, target.port);
    for (const src of sources) redirect('host', f, src, target.hostPort);
    if (noExternal) refuse(f, 'DROP', 'has no local endpoints');
    else if (f.sourceRanges.length > 0) refuse(f, 'DROP', 'source not in loadBalancerSourceRanges');
  }
  return out;
}

/** Whether two renderings of a service port are the same. */
export function sameRules(a: ServicePortRules, b: ServicePortRules): boolean {
  const same = (x: readonly string[], y: readonly string[]) => x.length === y.length && x.every((l, i) => l === y[i]);
  return (
    same(a.container, b.container) &&
    same(a.host, b.host) &&
    same(a.nodePortContainer, b.nodePortContainer) &&
    same(a.nodePortHost, b.nodePortHost) &&
    same(a.deny, b.deny)
  );
}

/** The guard chain: refuses connections to listener ports that did not come through a redirect. */
export function renderGuard(ports: ListenerPorts): string[] {
  const guard: string[] = [];
  if (ports.tcp.length + ports.udp.length === 0) return guard;
  guard.push(ruleLine('-A', CHAINS.guard, ['-m', 'conntrack', '--ctstate', 'DNAT', '-m', 'comment', '--comment', 'redirected to a listener', '-j', 'RETURN']));
  for (const [proto, list, reject] of [
    ['tcp', ports.tcp, ['--reject-with', 'tcp-reset']],
    ['udp', ports.udp, []],
  ] as const) {
    const sorted = [...list].sort((a, b) => a - b).map(rulePort);
    // multiport takes at most 15 ports per rule.
    for (let i = 0; i < sorted.length; i += 15) {
      const dports = sorted.slice(i, i + 15).join(',');
      guard.push(
        ruleLine('-A', CHAINS.guard, [
          '-p',
          proto,
          '-m',
          'multiport',
          '--dports',
          dports,
          '-m',
          'comment',
          '--comment',
          'direct connection to a listener',
          '-j',
          'REJECT',
          ...reject,
        ]),
      );
    }
  }
  return guard;
}

/** Puts service ports' rules (in key order) and the guard together into the two tables. */
export function assembleRules(perServicePort: Iterable<ServicePortRules>, guard: readonly string[]): RenderedRules {
  const container: string[] = [];
  const host: string[] = [];
  const npContainer: string[] = [];
  const npHost: string[] = [];
  const deny: string[] = [];
  const udpRedirects = new Map<number, string[]>();
  for (const r of perServicePort) {
    container.push(...r.container);
    host.push(...r.host);
    npContainer.push(...r.nodePortContainer);
    npHost.push(...r.nodePortHost);
    deny.push(...r.deny);
    for (const [port, line] of r.udp) {
      const lines = udpRedirects.get(port);
      if (lines) lines.push(line);
      else udpRedirects.set(port, [line]);
    }
  }
  return { filter: [...deny, ...guard], nat: [...container, ...npContainer, ...host, ...npHost], udpRedirects };
}

/** Renders the rules of every service port, in the order given (callers sort by key). */
export function renderRules(input: RenderInput): RenderedRules {
  return assembleRules(
    [...input.servicePorts].map((sp) => renderServicePort(sp, input)),
    renderGuard(input.listenerPorts),
  );
}

/**
 * iptables-restore input for one table under --noflush: declaring our chains flushes them (and
 * creates them when missing), the built-in chains and everyone else's rules are left alone.
 * `extra` lines (the jumps, for --dry-run) come after the rules.
 */
export function tableText(table: Table, lines: readonly string[], extra: readonly string[] = []): string {
  const chains = TABLE_CHAINS[table].map((c) => `:${c} - [0:0]`);
  return [`*${table}`, ...chains, ...lines, ...extra, 'COMMIT', ''].join('\n');
}

/** The jumps as restore lines inserted at the head of the built-in chains (for a fresh node). */
export function jumpLines(table: Table): string[] {
  return JUMPS.filter((j) => j.table === table).map((j) => ruleLine('-I', j.chain, j.rule, 1));
}
