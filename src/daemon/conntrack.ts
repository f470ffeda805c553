// UDP conntrack cleanup after each sync. UDP has no connection end, so a client that keeps sending from the
// same port (a DNS resolver) would stick to a dead endpoint through its conntrack entry: delete the entries
// whose NAT target left the service port, and entries created while a port had no endpoints (REJECTed).
import { run } from '../exec.ts';
import { log } from '../log.ts';
import type { ChangeSet, DesiredState, ServicePort } from '../model/types.ts';

interface UdpSnapshot {
  /** Frontend addresses: ClusterIPs, externalIPs, LB IPs (matched with the service port). */
  ips: string[];
  port: number;
  nodePort: number | null;
  /** Endpoint IPs that can receive traffic (cluster and local sets). */
  endpoints: Set<string>;
}

/** One conntrack deletion: `conntrack -D -p udp` plus these filters. */
export type ConntrackFilter = string[];

function snapshot(sp: ServicePort): UdpSnapshot {
  return {
    ips: [...sp.clusterIPs, ...sp.externalIPs, ...sp.loadBalancerIPs],
    port: sp.port,
    nodePort: sp.nodePort,
    endpoints: new Set([...sp.clusterEndpoints, ...sp.localEndpoints].map((e) => e.ip)),
  };
}

/** The deletions needed to go from `prev` to `next` (pure, for tests). */
export function staleFlows(prev: UdpSnapshot | undefined, next: UdpSnapshot | undefined): ConntrackFilter[] {
  if (!prev) {
    return [];
  }
  const out: ConntrackFilter[] = [];
  const gone = [...prev.endpoints].filter((ip) => !next?.endpoints.has(ip));
  for (const ep of gone) {
    for (const ip of prev.ips) out.push(['--orig-dst', ip, '--orig-port-dst', String(prev.port), '--dst-nat', ep]);
    if (prev.nodePort !== null) out.push(['--orig-port-dst', String(prev.nodePort), '--dst-nat', ep]);
  }
  // From no endpoints to some: entries made while traffic was rejected would keep failing.
  if (prev.endpoints.size === 0 && next && next.endpoints.size > 0) {
    for (const ip of next.ips) out.push(['--orig-dst', ip, '--orig-port-dst', String(next.port)]);
    if (next.nodePort !== null) out.push(['--orig-port-dst', String(next.nodePort)]);
  }
  return out;
}

export class ConntrackCleaner {
  private readonly known = new Map<string, UdpSnapshot>();
  private readonly binary: string;
  failures = 0;

  constructor(binary = 'conntrack') {
    this.binary = binary;
  }

  /** Call after each successful sync with the keys it carried (null after a full sync). */
  async afterSync(state: DesiredState, changes: ChangeSet | null): Promise<number> {
    const keys =
      changes === null ? new Set([...this.known.keys(), ...state.servicePorts.keys()]) : new Set([...changes.added, ...changes.updated, ...changes.removed]);
    const filters: ConntrackFilter[] = [];
    for (const key of keys) {
      const sp = state.servicePorts.get(key);
      const next = sp && sp.protocol === 'UDP' ? snapshot(sp) : undefined;
      filters.push(...staleFlows(this.known.get(key), next));
      if (next) this.known.set(key, next);
      else this.known.delete(key);
    }
    let deleted = 0;
    for (const f of filters) {
      const argv = [this.binary, '-D', '-p', 'udp', ...f];
      try {
        const r = await run(argv, { timeoutMs: 10_000 });
        // conntrack exits 1 with "0 flow entries have been deleted" when nothing matched: not an error.
        const m = /(\d+) flow entries have been deleted/.exec(r.stderr + r.stdout);
        if (r.code === 0 || m) deleted += m ? Number(m[1]) : 0;
        else throw new Error(r.stderr.trim() || `exit ${r.code}`);
      } catch (err) {
        this.failures++;
        log.warn({ event: 'conntrack-failed', filter: f.join(' '), err: (err as Error).message }, 'could not delete stale UDP conntrack entries');
      }
    }
    if (filters.length > 0) log.debug({ event: 'conntrack-cleanup', filters: filters.length, deleted }, 'deleted stale UDP conntrack entries');
    return deleted;
  }
}
