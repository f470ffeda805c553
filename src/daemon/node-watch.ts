// This node's Node object as upstream kube-proxy's NodeManager (pkg/proxy/node.go) and health server
// (pkg/proxy/healthcheck/proxy_health.go) read it: whether the node is eligible for traffic (/healthz: it
// exists, is not being deleted, is not tainted ToBeDeletedByClusterAutoscaler), and the two changes upstream
// restarts for: the node's IPs changed, the Node was deleted.
import type { KubeObject } from '../model/k8s.ts';
import { familyOf, parseCIDR, parseIP } from '../model/addr.ts';
import { requestRestart } from './lifecycle.ts';

/** The Cluster Autoscaler's taint before it deletes a node (upstream's ToBeDeletedTaint). */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/**
 * utilnode.GetNodeHostIPs: the first InternalIP (else ExternalIP), plus the first address of the other family;
 * the node's primary IPs, one per family.
 */
export function nodeHostIPs(node: KubeObject | null): string[] {
  const addresses = ((node as { status?: { addresses?: unknown } } | null)?.status?.addresses ?? []) as { type?: unknown; address?: unknown }[];
  if (!Array.isArray(addresses)) return [];
  const all: string[] = [];
  for (const type of ['InternalIP', 'ExternalIP']) {
    for (const a of addresses) {
      const ip = a?.type === type ? parseIP(a.address) : null;
      if (ip) all.push(ip.ip);
    }
  }
  if (all.length === 0) return [];
  const other = all.find((ip) => familyOf(ip) !== familyOf(all[0]!));
  return other ? [all[0]!, other] : [all[0]!];
}

/**
 * The Node's spec.podCIDRs (spec.podCIDR when only that is set), canonical; [] without any. What is not a CIDR
 * is left out: these go into rules and logs.
 */
export function nodePodCIDRs(node: KubeObject | null): string[] {
  const spec = (node as { spec?: { podCIDRs?: unknown; podCIDR?: unknown } } | null)?.spec;
  const given: unknown[] = Array.isArray(spec?.podCIDRs) && spec.podCIDRs.length > 0 ? spec.podCIDRs : [spec?.podCIDR];
  return given.map((c) => parseCIDR(c)?.cidr).filter((c): c is string => c !== undefined);
}

function taintKeys(node: KubeObject): string[] {
  const taints = (node as { spec?: { taints?: unknown } }).spec?.taints;
  return Array.isArray(taints) ? taints.map((t: { key?: unknown }) => String(t?.key ?? '')) : [];
}

export interface NodeWatchOptions {
  /**
   * The source watches the Node (the API server): a missing Node makes /healthz 503, and a deleted Node or
   * changed node IPs restart the process, as upstream. False for a file source, which follows the file as given.
   */
  watched: boolean;
  /**
   * --detect-local-mode NodeCIDR: the podCIDRs the rules were built with; a Node with others restarts the process
   * (upstream's NodePodCIDRHandler), so the new ones are read at start.
   */
  podCIDRs?: readonly string[];
  /** Called instead of requestRestart (tests). */
  restart?: (why: string, fields: Record<string, unknown>) => void;
}

export class NodeWatch {
  readonly #o: NodeWatchOptions;
  #node: KubeObject | null = null;
  #seen = false;
  #hostIPs: string[] = [];

  constructor(o: NodeWatchOptions) {
    this.#o = o;
  }

  /** The Node as the source delivers it now; null when it is gone (a delete event, or a list without it). */
  observe(node: KubeObject | null): void {
    const restart = this.#o.restart ?? requestRestart;
    if (node === null) {
      if (this.#seen && this.#node !== null && this.#o.watched) restart("this node's Node object was deleted", { node: this.#node.metadata?.name });
      this.#node = null;
      return;
    }
    const ips = nodeHostIPs(node);
    if (this.#seen && this.#o.watched && this.#hostIPs.length > 0 && ips.join(',') !== this.#hostIPs.join(',')) {
      restart("this node's IPs changed", { node: node.metadata?.name, old: this.#hostIPs, new: ips });
    }
    const podCIDRs = this.#o.podCIDRs;
    if (podCIDRs && this.#o.watched && nodePodCIDRs(node).join(',') !== podCIDRs.join(',')) {
      restart("this node's podCIDRs changed (detect-local-mode NodeCIDR)", { node: node.metadata?.name, old: podCIDRs, new: nodePodCIDRs(node) });
    }
    if (!this.#seen || this.#hostIPs.length === 0) this.#hostIPs = ips;
    this.#node = node;
    this.#seen = true;
  }

  /** The node's primary IPs as first seen (what the proxy started with). */
  get hostIPs(): readonly string[] {
    return this.#hostIPs;
  }

  /** upstream NodeEligible: the Node exists, is not being deleted and is not tainted for deletion. */
  eligible(): boolean {
    const n = this.#node;
    if (n === null) return !this.#o.watched;
    if (n.metadata?.deletionTimestamp) return false;
    return !taintKeys(n).includes(TO_BE_DELETED_TAINT);
  }
}
