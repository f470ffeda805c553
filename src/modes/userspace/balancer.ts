// Endpoint choice for one service port: round robin and ClientIP session affinity over the endpoints the
// model decided (ServicePort.internalEndpoints, externalEndpoints, clusterEndpoints). Pure apart from the clock.
import type { Endpoint, ServicePort } from '../../model/types.ts';

/**
 * Which frontends of a service port a listener serves. A service port gets one listener ('all')
 * unless its internal and external frontends choose endpoints differently (a Local traffic policy
 * on an externally accessible port): then one for the ClusterIPs ('internal') and one for NodePort,
 * externalIPs and LB IPs ('external'). After REDIRECT the listener is the only way to tell them apart.
 */
export type ListenerClass = 'all' | 'internal' | 'external';

/** The listeners a service port needs. */
export function listenerClasses(sp: ServicePort): ListenerClass[] {
  const split = sp.externallyAccessible && (sp.internalPolicyLocal || sp.externalPolicyLocal);
  return split ? ['internal', 'external'] : ['all'];
}

/** Tells pod and node-local clients from outside ones (see sources.ts). */
export interface ClientClassifier {
  isPod(ip: string): boolean;
  isNodeLocal(ip: string): boolean;
}

interface AffinityEntry {
  endpointId: string;
  expiresAt: number;
}

/** How often expired affinity entries are swept (they are also ignored once expired). */
const AFFINITY_SWEEP_MS = 10_000;
/** How long round robin passes over an endpoint after a connection to it failed. */
export const FAILED_ENDPOINT_BACKOFF_MS = 2000;

export class Balancer {
  #sp: ServicePort;
  readonly #clients: ClientClassifier;
  readonly #now: () => number;
  /** Next round-robin position in clusterEndpoints and localEndpoints. */
  #next = { cluster: 0, local: 0 };
  readonly #affinity = new Map<string, AffinityEntry>();
  /** Endpoints that failed recently, with the time until which round robin passes over them. */
  readonly #backoff = new Map<string, number>();
  #sweptAt: number;

  constructor(sp: ServicePort, clients: ClientClassifier, now: () => number = Date.now) {
    this.#sp = sp;
    this.#clients = clients;
    this.#now = now;
    this.#sweptAt = now();
  }

  get servicePort(): ServicePort {
    return this.#sp;
  }

  /** Number of clients with a live affinity entry (for tests and logs). */
  get affinityEntries(): number {
    return this.#affinity.size;
  }

  /** Takes a new version of the service port; affinity to endpoints that are gone is forgotten. */
  update(sp: ServicePort): void {
    this.#sp = sp;
    for (const id of this.#backoff.keys()) if (!this.hasEndpoint(id)) this.#backoff.delete(id);
    if (sp.affinityTimeoutSeconds === null) {
      this.#affinity.clear();
      return;
    }
    const now = this.#now();
    for (const [client, entry] of this.#affinity) {
      if (entry.expiresAt <= now || !this.hasEndpoint(entry.endpointId)) this.#affinity.delete(client);
    }
  }

  /** Whether any current endpoint set of the service port holds this endpoint id. */
  hasEndpoint(id: string): boolean {
    return this.#sp.clusterEndpoints.some((e) => e.id === id) || this.#sp.localEndpoints.some((e) => e.id === id);
  }

  /**
   * The endpoints a client may reach through a listener of this class: ClusterIP traffic uses
   * internalEndpoints, outside traffic to an external frontend externalEndpoints. Under a Local external
   * policy, pods and the node itself reaching an external frontend use clusterEndpoints instead
   * (upstream's short circuit: as if they went out to a load balancer and came back in).
   * `kind` names the list, so that round robin keeps one position per list.
   */
  candidates(cls: ListenerClass, client: string): { kind: 'cluster' | 'local'; endpoints: readonly Endpoint[] } {
    const sp = this.#sp;
    if (cls !== 'external') return { kind: sp.internalPolicyLocal ? 'local' : 'cluster', endpoints: sp.internalEndpoints };
    if (!sp.externalPolicyLocal) return { kind: 'cluster', endpoints: sp.externalEndpoints };
    if (this.#clients.isPod(client) || this.#clients.isNodeLocal(client)) return { kind: 'cluster', endpoints: sp.clusterEndpoints };
    return { kind: 'local', endpoints: sp.externalEndpoints };
  }

  /** Whether pick() looks at the client address for this class (affinity, or a Local external policy). */
  needsClient(cls: ListenerClass): boolean {
    return this.#sp.affinityTimeoutSeconds !== null || (cls === 'external' && this.#sp.externalPolicyLocal);
  }

  /**
   * Records that a connection to an endpoint failed: for a short while round robin passes over it
   * (unless every candidate failed), so one dead endpoint does not cost every new connection a
   * connect attempt before failover.
   */
  failed(id: string): void {
    this.#backoff.set(id, this.#now() + FAILED_ENDPOINT_BACKOFF_MS);
  }

  /**
   * Picks an endpoint for a new connection (or UDP session) from `client`, skipping `exclude`
   * (endpoints that already failed for this connection) and, while others are left, endpoints in
   * backoff. With ClientIP affinity, a client keeps its endpoint while it stays a candidate and its
   * entry has not expired; each use renews the entry.
   */
  pick(cls: ListenerClass, client: string, exclude?: ReadonlySet<string>): Endpoint | null {
    const { kind, endpoints } = this.candidates(cls, client);
    if (endpoints.length === 0) return null;
    const timeout = this.#sp.affinityTimeoutSeconds;
    const now = this.#now();
    if (timeout !== null) {
      this.#sweep(now);
      const entry = this.#affinity.get(client);
      if (entry && entry.expiresAt > now && !exclude?.has(entry.endpointId)) {
        const ep = endpoints.find((e) => e.id === entry.endpointId);
        if (ep) {
          entry.expiresAt = now + timeout * 1000;
          return ep;
        }
      }
    }
    const n = endpoints.length;
    const start = this.#next[kind] % n;
    for (const skipBackoff of this.#backoff.size > 0 ? [true, false] : [false]) {
      for (let i = 0; i < n; i++) {
        const index = (start + i) % n;
        const ep = endpoints[index];
        if (exclude?.has(ep.id) || (skipBackoff && this.#inBackoff(ep.id, now))) continue;
        this.#next[kind] = index + 1;
        if (timeout !== null) this.#affinity.set(client, { endpointId: ep.id, expiresAt: now + timeout * 1000 });
        return ep;
      }
    }
    return null;
  }

  #inBackoff(id: string, now: number): boolean {
    const until = this.#backoff.get(id);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#backoff.delete(id);
    return false;
  }

  #sweep(now: number): void {
    if (now - this.#sweptAt < AFFINITY_SWEEP_MS) return;
    this.#sweptAt = now;
    for (const [client, entry] of this.#affinity) if (entry.expiresAt <= now) this.#affinity.delete(client);
  }
}
