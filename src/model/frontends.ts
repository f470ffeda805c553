// Who owns a frontend. Any namespace owner can write a Service whose externalIPs (or, through a controller,
// LB IPs) name another Service's ClusterIP or LB IP: the CVE-2020-8554 shape. Every mode and explain must
// route such a frontend to ONE service, decided here once and the same everywhere:
//   - a ClusterIP always owns its own traffic;
//   - then a load-balancer IP (so an LB keeps its loadBalancerSourceRanges);
//   - then an externalIP;
//   - between claims of the same kind (which the API server's allocators never let happen), the service
//     whose key ("namespace/name") sorts first.
// The losing claim is left out of the losing service (and reported); the rest of that service still routes.
// NodePorts are frontends too (the port on every node address): the same rule, keyed by protocol and port.
import { hostPort } from './addr.ts';
import type { Protocol } from './types.ts';

export type FrontendRole = 'clusterIP' | 'loadBalancerIP' | 'externalIP' | 'nodePort';

const RANK: Record<FrontendRole, number> = { clusterIP: 0, loadBalancerIP: 1, externalIP: 2, nodePort: 0 };

/** The key of a frontend: an address, a port and a protocol (a NodePort has no address). */
export function frontendKey(ip: string | null, port: number, protocol: Protocol): string {
  return ip === null ? `nodePort ${port}/${protocol}` : `${hostPort(ip, port)}/${protocol}`;
}

export interface Claim {
  key: string;
  role: FrontendRole;
}

/** Every service's claims on frontends; answers who owns one. Incremental: claims are replaced per service. */
export class FrontendClaims {
  /** frontend key -> service key -> the strongest role the service claims it with */
  private readonly byFrontend = new Map<string, Map<string, FrontendRole>>();
  private readonly byService = new Map<string, Claim[]>();

  /**
   * Replaces a service's claims (none: the service is gone). Returns the services whose ownership may have
   * changed: every other claimant of a frontend this service claimed before or claims now.
   */
  set(service: string, claims: readonly Claim[]): Set<string> {
    const touched = new Set<string>();
    for (const c of this.byService.get(service) ?? []) {
      const m = this.byFrontend.get(c.key);
      if (!m) continue;
      m.delete(service);
      if (m.size === 0) this.byFrontend.delete(c.key);
      else for (const s of m.keys()) touched.add(s);
    }
    if (claims.length === 0) this.byService.delete(service);
    else this.byService.set(service, [...claims]);
    for (const c of claims) {
      let m = this.byFrontend.get(c.key);
      if (!m) this.byFrontend.set(c.key, (m = new Map()));
      const prev = m.get(service);
      if (prev === undefined || RANK[c.role] < RANK[prev]) m.set(service, c.role);
      for (const s of m.keys()) if (s !== service) touched.add(s);
    }
    return touched;
  }

  /** The owner of a frontend: its service and the role that won. */
  owner(key: string): { service: string; role: FrontendRole } | null {
    const m = this.byFrontend.get(key);
    if (!m) return null;
    let best: { service: string; role: FrontendRole } | null = null;
    for (const [service, role] of m) {
      if (best === null || RANK[role] < RANK[best.role] || (RANK[role] === RANK[best.role] && service < best.service)) best = { service, role };
    }
    return best;
  }

  /** Whether `service` owns the frontend `key` in `role`. */
  owns(service: string, key: string, role: FrontendRole): boolean {
    const o = this.owner(key);
    return o !== null && o.service === service && o.role === role;
  }
}
