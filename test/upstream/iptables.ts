// Upstream kube-proxy's iptables mode, ported from kubernetes/kubernetes pkg/proxy/iptables/proxier.go
// (syncProxyRules and writeServiceToEndpointRules, a full sync of a node that holds none of its rules yet;
// iptablesJumpChains; the canary chains of utiliptables.Monitor). Test-only: the "before" state of a node run
// by upstream kube-proxy, and nothing here comes from this project's iptables mode.
import {
  cidrContains,
  type KubeObject,
  type UpstreamConfig,
  type UpstreamServicePort,
  masqueradeMark,
  nodeIP,
  nodePortAddresses,
  sha256Base32,
  upstreamServicePorts,
} from './cluster.ts';

const KUBE_SERVICES = 'KUBE-SERVICES';
const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
const KUBE_NODEPORTS = 'KUBE-NODEPORTS';
const KUBE_POSTROUTING = 'KUBE-POSTROUTING';
const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ';
const KUBE_FORWARD = 'KUBE-FORWARD';
const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
const KUBE_PROXY_CANARY = 'KUBE-PROXY-CANARY';
/** kubelet's chain, which kube-proxy duplicates (and never deletes). */
const KUBELET_FIREWALL = 'KUBE-FIREWALL';

/** metrics.IPTablesCTStateInvalidDroppedNFAcctCounter and LocalhostNodePortAcceptedNFAcctCounter. */
const NFACCT_INVALID = 'ct_state_invalid_dropped_pkts';
const NFACCT_LOCALHOST_NODEPORTS = 'localhost_nps_accepted_pkts';

interface JumpChain {
  table: 'filter' | 'nat';
  dstChain: string;
  srcChain: string;
  comment: string;
  extraArgs: string[];
}

const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'];

/** iptablesJumpChains: the jumps from the built-in chains, each ensured with EnsureRule(Prepend) in this order. */
const JUMP_CHAINS: readonly JumpChain[] = [
  { table: 'filter', dstChain: KUBE_EXTERNAL_SERVICES, srcChain: 'INPUT', comment: 'kubernetes externally-visible service portals', extraArgs: NEW },
  { table: 'filter', dstChain: KUBE_EXTERNAL_SERVICES, srcChain: 'FORWARD', comment: 'kubernetes externally-visible service portals', extraArgs: NEW },
  { table: 'filter', dstChain: KUBE_NODEPORTS, srcChain: 'INPUT', comment: 'kubernetes health check service ports', extraArgs: [] },
  { table: 'filter', dstChain: KUBE_SERVICES, srcChain: 'FORWARD', comment: 'kubernetes service portals', extraArgs: NEW },
  { table: 'filter', dstChain: KUBE_SERVICES, srcChain: 'OUTPUT', comment: 'kubernetes service portals', extraArgs: NEW },
  { table: 'filter', dstChain: KUBE_FORWARD, srcChain: 'FORWARD', comment: 'kubernetes forwarding rules', extraArgs: [] },
  { table: 'filter', dstChain: KUBE_PROXY_FIREWALL, srcChain: 'INPUT', comment: 'kubernetes load balancer firewall', extraArgs: NEW },
  { table: 'filter', dstChain: KUBE_PROXY_FIREWALL, srcChain: 'OUTPUT', comment: 'kubernetes load balancer firewall', extraArgs: NEW },
  { table: 'filter', dstChain: KUBE_PROXY_FIREWALL, srcChain: 'FORWARD', comment: 'kubernetes load balancer firewall', extraArgs: NEW },
  { table: 'nat', dstChain: KUBE_SERVICES, srcChain: 'OUTPUT', comment: 'kubernetes service portals', extraArgs: [] },
  { table: 'nat', dstChain: KUBE_SERVICES, srcChain: 'PREROUTING', comment: 'kubernetes service portals', extraArgs: [] },
  { table: 'nat', dstChain: KUBE_POSTROUTING, srcChain: 'POSTROUTING', comment: 'kubernetes postrouting rules', extraArgs: [] },
];

/** iptablesKubeletJumpChains: kubelet's jumps, which kube-proxy ensures too (without a comment). */
const KUBELET_JUMP_CHAINS: readonly JumpChain[] = [
  { table: 'filter', dstChain: KUBELET_FIREWALL, srcChain: 'INPUT', comment: '', extraArgs: [] },
  { table: 'filter', dstChain: KUBELET_FIREWALL, srcChain: 'OUTPUT', comment: '', extraArgs: [] },
];

/** Chains upstream's CleanupLeftovers removes per table (besides the service chains of nat), and its canary. */
export const UPSTREAM_FIXED_CHAINS: Readonly<Record<'nat' | 'filter' | 'mangle', readonly string[]>> = {
  nat: [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ, KUBE_PROXY_CANARY],
  filter: [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL, KUBE_PROXY_CANARY],
  mangle: [KUBE_PROXY_CANARY],
};

const SERVICE_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'];

/** Whether upstream kube-proxy owns this chain of this table (what its CleanupLeftovers removes). */
export function isUpstreamChain(table: string, chain: string): boolean {
  if ((UPSTREAM_FIXED_CHAINS as Record<string, readonly string[]>)[table]?.includes(chain)) return true;
  return table === 'nat' && SERVICE_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

/** portProtoHash: the 16 characters of every per-service-port chain name. */
function portProtoHash(nameString: string, protocol: string): string {
  return sha256Base32(nameString + protocol).slice(0, 16);
}

function endpointChain(sp: UpstreamServicePort, endpointId: string): string {
  return `KUBE-SEP-${sha256Base32(sp.nameString + sp.protocol.toLowerCase() + endpointId).slice(0, 16)}`;
}

/** proxyutil.LineBuffer: words joined by spaces, one line per write. */
class LineBuffer {
  readonly lines: string[] = [];
  write(...words: (string | number | readonly string[])[]): void {
    this.lines.push(words.flat().join(' '));
  }
}

/** utiliptables.MakeChainLine. */
const chainLine = (chain: string) => `:${chain} - [0:0]`;

export interface UpstreamIptables {
  /** The iptables-restore input of the first sync, as upstream writes it (filter, then nat; --noflush). */
  restore: string;
  /**
   * What upstream runs besides that restore, in order, as argv after the binary (iptables or ip6tables):
   * its canary chains (utiliptables.Monitor), then EnsureChain + EnsureRule(Prepend) of every jump.
   */
  commands: string[][];
  /** One `iptables-restore --noflush` input giving a node without kube-proxy's rules exactly that state. */
  loadable: string;
}

/** What upstream kube-proxy in iptables mode programs on a node for these objects, in `cfg.family`. */
export function upstreamIptables(objects: readonly KubeObject[], cfg: UpstreamConfig): UpstreamIptables {
  const isIPv6 = cfg.family === 'IPv6';
  const mark = masqueradeMark(cfg);
  const npa = nodePortAddresses(cfg);
  // NewProxier: localhost NodePorts need an IPv4 loopback in --nodeport-addresses; NewDualStackProxier passes false for IPv6.
  const localhostNodePorts = !isIPv6 && (cfg.localhostNodePorts ?? true) && npa.containsIPv4Loopback;
  const nfacct = cfg.nfacct ?? false;
  const node = nodeIP(objects, cfg);
  const detectLocal = cfg.clusterCIDR ? { ifLocal: ['-s', cfg.clusterCIDR], ifNotLocal: ['!', '-s', cfg.clusterCIDR] } : null;

  const filterChains = new LineBuffer();
  const filterRules = new LineBuffer();
  const natChains = new LineBuffer();
  const natRules = new LineBuffer();
  for (const c of [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]) filterChains.write(chainLine(c));
  for (const c of [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]) natChains.write(chainLine(c));

  natRules.write('-A', KUBE_POSTROUTING, '-m', 'mark', '!', '--mark', `${mark}/${mark}`, '-j', 'RETURN');
  natRules.write('-A', KUBE_POSTROUTING, '-j', 'MARK', '--xor-mark', mark);
  natRules.write(
    '-A',
    KUBE_POSTROUTING,
    '-m',
    'comment',
    '--comment',
    '"kubernetes service traffic requiring SNAT"',
    '-j',
    'MASQUERADE',
    ...((cfg.randomFully ?? true) ? ['--random-fully'] : []),
  );
  natRules.write('-A', KUBE_MARK_MASQ, '-j', 'MARK', '--or-mark', mark);

  if (localhostNodePorts) {
    // The guard against martian packets that route_localnet lets in (kubelet writes the same rule).
    filterChains.write(chainLine(KUBELET_FIREWALL));
    filterRules.write(
      '-A',
      KUBELET_FIREWALL,
      '-m',
      'comment',
      '--comment',
      '"block incoming localnet connections"',
      '-d',
      '127.0.0.0/8',
      '!',
      '-s',
      '127.0.0.0/8',
      '-m',
      'conntrack',
      '!',
      '--ctstate',
      'RELATED,ESTABLISHED,DNAT',
      '-j',
      'DROP',
    );
  }

  const servicePorts = upstreamServicePorts(objects, cfg);
  const totalEndpoints = servicePorts.reduce((n, sp) => n + sp.endpoints.length, 0);
  // Above 1000 endpoints upstream drops the per-endpoint comments.
  const largeClusterMode = totalEndpoints > 1000;
  const serviceComment = (comment: string): string[] => (largeClusterMode ? [] : ['-m', 'comment', '--comment', comment]);

  for (const sp of servicePorts) {
    const protocol = sp.protocol.toLowerCase();
    const hash = portProtoHash(sp.nameString, protocol);
    const clusterPolicyChain = `KUBE-SVC-${hash}`;
    const localPolicyChain = `KUBE-SVL-${hash}`;
    const externalTrafficChain = `KUBE-EXT-${hash}`;
    const fwChain = `KUBE-FW-${hash}`;
    const name = sp.nameString;
    const { hasEndpoints } = sp;

    const usesClusterPolicyChain = sp.clusterEndpoints.length > 0 && sp.usesClusterEndpoints;
    const usesLocalPolicyChain = sp.localEndpoints.length > 0 && sp.usesLocalEndpoints;
    const internalTrafficChain = sp.internalPolicyLocal ? localPolicyChain : clusterPolicyChain;
    const hasInternalEndpoints = hasEndpoints && !(sp.internalPolicyLocal && sp.localEndpoints.length === 0);
    const externalPolicyChain = sp.externalPolicyLocal ? localPolicyChain : clusterPolicyChain;
    const hasExternalEndpoints = hasEndpoints && !(sp.externalPolicyLocal && sp.localEndpoints.length === 0);
    // Needed even without externally usable endpoints: it holds the short circuit of local traffic.
    const usesExternalTrafficChain = hasEndpoints && sp.externallyAccessible;
    const usesFWChain = hasEndpoints && sp.loadBalancerVIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;
    const loadBalancerTrafficChain = usesFWChain ? fwChain : externalTrafficChain;

    let internalFilterTarget = '';
    let internalFilterComment = '';
    let externalFilterTarget = '';
    let externalFilterComment = '';
    if (!hasEndpoints) {
      internalFilterTarget = externalFilterTarget = 'REJECT';
      internalFilterComment = externalFilterComment = `"${name} has no endpoints"`;
    } else {
      if (!hasInternalEndpoints) {
        internalFilterTarget = 'DROP';
        internalFilterComment = `"${name} has no local endpoints"`;
      }
      if (!hasExternalEndpoints) {
        externalFilterTarget = 'DROP';
        externalFilterComment = `"${name} has no local endpoints"`;
      }
    }
    const dport = String(sp.port);

    // Capture the clusterIP.
    if (hasInternalEndpoints) {
      natRules.write(
        '-A',
        KUBE_SERVICES,
        '-m',
        'comment',
        '--comment',
        `"${name} cluster IP"`,
        '-m',
        protocol,
        '-p',
        protocol,
        '-d',
        sp.clusterIP,
        '--dport',
        dport,
        '-j',
        internalTrafficChain,
      );
    } else {
      filterRules.write(
        '-A',
        KUBE_SERVICES,
        '-m',
        'comment',
        '--comment',
        internalFilterComment,
        '-m',
        protocol,
        '-p',
        protocol,
        '-d',
        sp.clusterIP,
        '--dport',
        dport,
        '-j',
        internalFilterTarget,
      );
    }
    // Capture externalIPs.
    for (const ip of sp.externalIPs) {
      if (hasEndpoints) {
        natRules.write(
          '-A',
          KUBE_SERVICES,
          '-m',
          'comment',
          '--comment',
          `"${name} external IP"`,
          '-m',
          protocol,
          '-p',
          protocol,
          '-d',
          ip,
          '--dport',
          dport,
          '-j',
          externalTrafficChain,
        );
      }
      if (!hasExternalEndpoints) {
        filterRules.write(
          '-A',
          KUBE_EXTERNAL_SERVICES,
          '-m',
          'comment',
          '--comment',
          externalFilterComment,
          '-m',
          protocol,
          '-p',
          protocol,
          '-d',
          ip,
          '--dport',
          dport,
          '-j',
          externalFilterTarget,
        );
      }
    }
    // Capture load-balancer ingress.
    for (const ip of sp.loadBalancerVIPs) {
      if (hasEndpoints) {
        natRules.write(
          '-A',
          KUBE_SERVICES,
          '-m',
          'comment',
          '--comment',
          `"${name} loadbalancer IP"`,
          '-m',
          protocol,
          '-p',
          protocol,
          '-d',
          ip,
          '--dport',
          dport,
          '-j',
          loadBalancerTrafficChain,
        );
      }
      if (usesFWChain) {
        filterRules.write(
          '-A',
          KUBE_PROXY_FIREWALL,
          '-m',
          'comment',
          '--comment',
          `"${name} traffic not accepted by ${fwChain}"`,
          '-m',
          protocol,
          '-p',
          protocol,
          '-d',
          ip,
          '--dport',
          dport,
          '-j',
          'DROP',
        );
      }
    }
    if (!hasExternalEndpoints) {
      for (const ip of sp.loadBalancerVIPs) {
        filterRules.write(
          '-A',
          KUBE_EXTERNAL_SERVICES,
          '-m',
          'comment',
          '--comment',
          externalFilterComment,
          '-m',
          protocol,
          '-p',
          protocol,
          '-d',
          ip,
          '--dport',
          dport,
          '-j',
          externalFilterTarget,
        );
      }
    }
    // Capture nodeports.
    if (sp.nodePort !== 0) {
      const nodePort = String(sp.nodePort);
      if (hasEndpoints) {
        if (localhostNodePorts && nfacct) {
          natRules.write(
            '-A',
            KUBE_NODEPORTS,
            '-m',
            'comment',
            '--comment',
            name,
            '-m',
            protocol,
            '-p',
            protocol,
            '-d',
            '127.0.0.0/8',
            '--dport',
            nodePort,
            '-m',
            'nfacct',
            '--nfacct-name',
            NFACCT_LOCALHOST_NODEPORTS,
            '-j',
            externalTrafficChain,
          );
        }
        natRules.write(
          '-A',
          KUBE_NODEPORTS,
          '-m',
          'comment',
          '--comment',
          name,
          '-m',
          protocol,
          '-p',
          protocol,
          '--dport',
          nodePort,
          '-j',
          externalTrafficChain,
        );
      }
      if (!hasExternalEndpoints) {
        filterRules.write(
          '-A',
          KUBE_EXTERNAL_SERVICES,
          '-m',
          'comment',
          '--comment',
          externalFilterComment,
          '-m',
          'addrtype',
          '--dst-type',
          'LOCAL',
          '-m',
          protocol,
          '-p',
          protocol,
          '--dport',
          nodePort,
          '-j',
          externalFilterTarget,
        );
      }
    }
    // Capture healthCheckNodePorts.
    if (sp.healthCheckNodePort !== 0) {
      filterRules.write(
        '-A',
        KUBE_NODEPORTS,
        '-m',
        'comment',
        '--comment',
        `"${name} health check node port"`,
        '-m',
        'tcp',
        '-p',
        'tcp',
        '--dport',
        String(sp.healthCheckNodePort),
        '-j',
        'ACCEPT',
      );
    }

    // Internal traffic handling.
    if (hasInternalEndpoints) {
      const args = ['-m', 'comment', '--comment', `"${name} cluster IP"`, '-m', protocol, '-p', protocol, '-d', sp.clusterIP, '--dport', dport];
      if (cfg.masqueradeAll) natRules.write('-A', internalTrafficChain, args, '-j', KUBE_MARK_MASQ);
      else if (detectLocal) natRules.write('-A', internalTrafficChain, args, detectLocal.ifNotLocal, '-j', KUBE_MARK_MASQ);
    }
    // External traffic handling.
    if (usesExternalTrafficChain) {
      natChains.write(chainLine(externalTrafficChain));
      if (!sp.externalPolicyLocal) {
        natRules.write(
          '-A',
          externalTrafficChain,
          '-m',
          'comment',
          '--comment',
          `"masquerade traffic for ${name} external destinations"`,
          '-j',
          KUBE_MARK_MASQ,
        );
      } else {
        if (detectLocal) {
          natRules.write(
            '-A',
            externalTrafficChain,
            '-m',
            'comment',
            '--comment',
            `"pod traffic for ${name} external destinations"`,
            detectLocal.ifLocal,
            '-j',
            clusterPolicyChain,
          );
        }
        natRules.write(
          '-A',
          externalTrafficChain,
          '-m',
          'comment',
          '--comment',
          `"masquerade LOCAL traffic for ${name} external destinations"`,
          '-m',
          'addrtype',
          '--src-type',
          'LOCAL',
          '-j',
          KUBE_MARK_MASQ,
        );
        natRules.write(
          '-A',
          externalTrafficChain,
          '-m',
          'comment',
          '--comment',
          `"route LOCAL traffic for ${name} external destinations"`,
          '-m',
          'addrtype',
          '--src-type',
          'LOCAL',
          '-j',
          clusterPolicyChain,
        );
      }
      if (hasExternalEndpoints) natRules.write('-A', externalTrafficChain, '-j', externalPolicyChain);
    }
    // Firewall chain (loadBalancerSourceRanges).
    if (usesFWChain) {
      natChains.write(chainLine(fwChain));
      const args = ['-A', fwChain, '-m', 'comment', '--comment', `"${name} loadbalancer IP"`];
      let allowFromNode = false;
      for (const cidr of sp.loadBalancerSourceRanges) {
        natRules.write(args, '-s', cidr, '-j', externalTrafficChain);
        if (node && cidrContains(cidr, node)) allowFromNode = true;
      }
      // A VIP routed locally loops back with the VIP as its source: let the node through.
      if (allowFromNode) for (const ip of sp.loadBalancerVIPs) natRules.write(args, '-s', ip, '-j', externalTrafficChain);
      // What reaches the end was not DNATed, and KUBE-PROXY-FIREWALL drops it.
      natRules.write('-A', fwChain, '-m', 'comment', '--comment', `"other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL"`);
    }
    if (usesClusterPolicyChain) {
      natChains.write(chainLine(clusterPolicyChain));
      writeServiceToEndpointRules(natRules, sp, clusterPolicyChain, sp.clusterEndpoints, serviceComment);
    }
    if (usesLocalPolicyChain) {
      natChains.write(chainLine(localPolicyChain));
      writeServiceToEndpointRules(natRules, sp, localPolicyChain, sp.localEndpoints, serviceComment);
    }
    // The per-endpoint chains.
    for (const ep of sp.allReachableEndpoints) {
      const chain = endpointChain(sp, ep.id);
      natChains.write(chainLine(chain));
      const args = ['-A', chain, ...serviceComment(name)];
      natRules.write(args, '-s', ep.ip, '-j', KUBE_MARK_MASQ);
      const affinity = sp.sessionAffinityClientIP ? ['-m', 'recent', '--name', chain, '--set'] : [];
      natRules.write(args, affinity, '-m', protocol, '-p', protocol, '-j', 'DNAT', '--to-destination', ep.id);
    }
  }

  // The tail call to the NodePorts chain, last in KUBE-SERVICES.
  const lastRule = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"';
  if (npa.matchAll) {
    const destinations = ['-m', 'addrtype', '--dst-type', 'LOCAL'];
    if (isIPv6) destinations.push('!', '-d', '::1/128');
    else if (!localhostNodePorts) destinations.push('!', '-d', '127.0.0.0/8');
    natRules.write('-A', KUBE_SERVICES, '-m', 'comment', '--comment', lastRule, destinations, '-j', KUBE_NODEPORTS);
  } else {
    for (const ip of npa.nodeIPs) {
      const loopback = isIPv6 ? ip === '::1' : ip.startsWith('127.');
      if (loopback && (isIPv6 || !localhostNodePorts)) continue;
      natRules.write('-A', KUBE_SERVICES, '-m', 'comment', '--comment', lastRule, '-d', ip, '-j', KUBE_NODEPORTS);
    }
  }
  if (!cfg.conntrackTCPLiberal) {
    filterRules.write(
      '-A',
      KUBE_FORWARD,
      '-m',
      'conntrack',
      '--ctstate',
      'INVALID',
      nfacct ? ['-m', 'nfacct', '--nfacct-name', NFACCT_INVALID] : [],
      '-j',
      'DROP',
    );
  }
  filterRules.write(
    '-A',
    KUBE_FORWARD,
    '-m',
    'comment',
    '--comment',
    '"kubernetes forwarding rules"',
    '-m',
    'mark',
    '--mark',
    `${mark}/${mark}`,
    '-j',
    'ACCEPT',
  );
  filterRules.write(
    '-A',
    KUBE_FORWARD,
    '-m',
    'comment',
    '--comment',
    '"kubernetes forwarding conntrack rule"',
    '-m',
    'conntrack',
    '--ctstate',
    'RELATED,ESTABLISHED',
    '-j',
    'ACCEPT',
  );

  const restore = ['*filter', ...filterChains.lines, ...filterRules.lines, 'COMMIT', '*nat', ...natChains.lines, ...natRules.lines, 'COMMIT', ''].join('\n');

  const commands: string[][] = [];
  for (const table of ['mangle', 'nat', 'filter']) commands.push(['-t', table, '-N', KUBE_PROXY_CANARY]);
  for (const j of [...JUMP_CHAINS, ...KUBELET_JUMP_CHAINS]) {
    commands.push(['-t', j.table, '-N', j.dstChain]);
    commands.push(['-t', j.table, '-I', j.srcChain, '1', ...jumpArgs(j)]);
  }
  return { restore, commands, loadable: loadable(restore, commands) };
}

/** A jump's arguments as EnsureRule receives them: extra matches, the comment (when any), the target. */
function jumpArgs(j: JumpChain): string[] {
  return [...j.extraArgs, ...(j.comment ? ['-m', 'comment', '--comment', j.comment] : []), '-j', j.dstChain];
}

/** Quotes an argv word for restore input (the comments hold spaces). */
const restoreWord = (w: string): string => (/[\s"]/.test(w) ? `"${w.replace(/"/g, '\\"')}"` : w);

/**
 * Folds the commands into the restore input: per table, every chain declared once (under --noflush a
 * declaration creates or flushes it), the prepends as `-I CHAIN 1` in the order upstream runs them, then
 * upstream's own rules.
 */
function loadable(restore: string, commands: readonly string[][]): string {
  const tables = new Map<string, { chains: string[]; rules: string[] }>();
  const table = (name: string) => {
    let t = tables.get(name);
    if (!t) tables.set(name, (t = { chains: [], rules: [] }));
    return t;
  };
  const declare = (name: string, chain: string) => {
    const t = table(name);
    if (!t.chains.includes(chain)) t.chains.push(chain);
  };
  for (const c of commands) {
    const [, name, op, chain, ...rest] = c as [string, string, string, string, ...string[]];
    if (op === '-N') declare(name, chain);
    else table(name).rules.push([op, chain, ...rest].map(restoreWord).join(' '));
  }
  let current = '';
  for (const line of restore.split('\n')) {
    if (line.startsWith('*')) current = line.slice(1);
    else if (line.startsWith(':')) declare(current, line.slice(1).split(' ')[0]!);
    else if (line.startsWith('-')) table(current).rules.push(line);
  }
  const out: string[] = [];
  for (const name of ['mangle', 'filter', 'nat']) {
    const t = tables.get(name);
    if (!t) continue;
    out.push(`*${name}`, ...t.chains.map(chainLine), ...t.rules, 'COMMIT');
  }
  return `${out.join('\n')}\n`;
}

/** writeServiceToEndpointRules: affinity checks first, then one statistic rule per endpoint (the last one always matches). */
function writeServiceToEndpointRules(
  natRules: LineBuffer,
  sp: UpstreamServicePort,
  svcChain: string,
  endpoints: UpstreamServicePort['clusterEndpoints'],
  serviceComment: (c: string) => string[],
): void {
  if (sp.sessionAffinityClientIP) {
    for (const ep of endpoints) {
      const chain = endpointChain(sp, ep.id);
      natRules.write(
        '-A',
        svcChain,
        serviceComment(`"${sp.nameString} -> ${ep.id}"`),
        '-m',
        'recent',
        '--name',
        chain,
        '--rcheck',
        '--seconds',
        String(sp.stickyMaxAgeSeconds),
        '--reap',
        '-j',
        chain,
      );
    }
  }
  endpoints.forEach((ep, i) => {
    const probability = i < endpoints.length - 1 ? ['-m', 'statistic', '--mode', 'random', '--probability', (1 / (endpoints.length - i)).toFixed(10)] : [];
    natRules.write('-A', svcChain, serviceComment(`"${sp.nameString} -> ${ep.id}"`), probability, '-j', endpointChain(sp, ep.id));
  });
}
