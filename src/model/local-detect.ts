// How a packet is known to come from a pod on this node: upstream's LocalTrafficDetector
// (pkg/proxy/util/localdetector.go, chosen in cmd/kube-proxy/app/server_linux.go getLocalDetectors). The one
// decision, per family; every mode renders it in its own syntax (IfLocal / IfNotLocal) wherever upstream
// uses the detector: the masquerade of ClusterIP traffic that does not come from a pod, and the short
// circuit of pods to the external frontends of a service port with externalTrafficPolicy Local.
import { InvalidValueError, familyCIDR, ruleInterfaceName } from './addr.ts';
import type { DetectLocal, IPFamily, ProxyConfig } from './types.ts';

export type LocalDetector =
  /** Nothing tells a pod apart (no CIDR of this family): upstream's NoOpLocalDetector, IsImplemented false. */
  | { kind: 'none'; reason: string }
  /** A source address in one of these CIDRs (canonical). Upstream takes one per family; a list costs nothing. */
  | { kind: 'cidr'; cidrs: string[] }
  /** The packet came in on this interface (the pods' bridge). */
  | { kind: 'interface'; name: string }
  /** The packet came in on an interface whose name starts with this prefix (the pods' veths). */
  | { kind: 'prefix'; prefix: string };

/** The detect-local configuration, ClusterCIDR when absent. */
export function detectLocalOf(config: ProxyConfig): DetectLocal {
  return config.detectLocal ?? { mode: 'ClusterCIDR' };
}

/**
 * Checks the interface settings of a detect-local configuration as rules will need them; throws
 * InvalidValueError naming the bad value (the configuration is refused at start, not half applied).
 */
export function checkDetectLocal(d: DetectLocal): void {
  if (d.mode === 'BridgeInterface') ruleInterfaceName(d.bridgeInterface);
  if (d.mode === 'InterfaceNamePrefix') ruleInterfaceName(d.interfaceNamePrefix, 1);
}

/**
 * The detector of one family. ClusterCIDR: --cluster-cidr of the family; NodeCIDR: the Node's spec.podCIDRs of
 * the family, as resolved at start (DetectLocal.podCIDRs; upstream waits for them and restarts when they
 * change); the interface modes serve both families alike.
 */
export function localDetector(config: ProxyConfig, family: IPFamily): LocalDetector {
  const d = detectLocalOf(config);
  switch (d.mode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': {
      const source = d.mode === 'ClusterCIDR' ? config.clusterCIDRs : (d.podCIDRs ?? []);
      const cidrs = [...new Set(source.map((c) => familyCIDR(c, family)).filter((c): c is string => c !== null))];
      if (cidrs.length > 0) return { kind: 'cidr', cidrs };
      const what = d.mode === 'ClusterCIDR' ? 'no --cluster-cidr' : "no podCIDR on this node's Node";
      return { kind: 'none', reason: `${what} of ${family}: local traffic is not detected` };
    }
    case 'BridgeInterface':
      return { kind: 'interface', name: ruleInterfaceName(d.bridgeInterface) };
    case 'InterfaceNamePrefix':
      return { kind: 'prefix', prefix: ruleInterfaceName(d.interfaceNamePrefix, 1) };
    default:
      throw new InvalidValueError(`detect-local mode ${JSON.stringify((d as { mode: unknown }).mode)}`);
  }
}

/** The detector in words, for logs and /debug output. */
export function describeDetector(d: LocalDetector): string {
  switch (d.kind) {
    case 'none':
      return d.reason;
    case 'cidr':
      return `source in ${d.cidrs.join(', ')}`;
    case 'interface':
      return `input interface ${d.name}`;
    case 'prefix':
      return `input interface ${d.prefix}*`;
  }
}
