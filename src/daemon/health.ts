// kube-proxy's health endpoints (pkg/proxy/healthcheck/proxy_health.go): /healthz and /livez on
// --healthz-bind-address with upstream's JSON bodies and per-family status, and one health-check server per
// service with externalTrafficPolicy: Local on its healthCheckNodePort, for cloud load balancers.
import type { Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import { cidrContains, familyOf } from '../model/addr.ts';
import { StartupError } from '../errors.ts';
import { boundedServer, listen } from './http.ts';
import { log } from '../log.ts';
import type { DesiredState, IPFamily } from '../model/types.ts';

/** What the proxier health server needs to know about one family's sync loop. */
export interface SyncStatus {
  /** When the oldest change not yet synced was queued (ms), or null when nothing waits. */
  oldestPendingAt: number | null;
  /** When the last sync completed (ms), or null before the first. */
  lastSuccessAt: number | null;
}

/** upstream's ProxyHealth JSON (field order as Go marshals the struct; status keys sorted). */
export interface ProxyHealthBody {
  lastUpdated: string;
  currentTime: string;
  nodeEligible?: boolean;
  healthy: boolean;
  status: Record<string, { lastUpdated: string; healthy: boolean }>;
}

const JSON_HEADERS = { 'content-type': 'application/json', 'x-content-type-options': 'nosniff' };

export interface ProxierHealthOptions {
  /** One sync loop per family. */
  families: ReadonlyMap<IPFamily, SyncStatus>;
  /** kube-proxy uses twice the sync period. */
  timeoutMs: number;
  /** Whether the node may get traffic (/healthz only): the NodeWatch. Default: always. */
  node?: { eligible(): boolean };
  now?: () => number;
}

/**
 * upstream's ProxyHealthServer. A family is healthy unless a change has waited longer than the timeout without a
 * completed sync; its lastUpdated is its last sync, or the start (upstream marks a proxier updated when its
 * loop starts). Two more rules than upstream, so that a proxy that cannot program anything does not answer 200
 * for long: the first sync is due within the timeout of the start, and a family whose every sync so far failed
 * is unhealthy at once.
 */
export class ProxierHealth {
  readonly #o: ProxierHealthOptions;
  readonly #now: () => number;
  readonly #startedAt: number;
  readonly #failingFromStart = new Set<IPFamily>();

  constructor(o: ProxierHealthOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#startedAt = this.#now();
  }

  /** A sync of this family failed (the daemon's onFailed). */
  syncFailed(family: IPFamily): void {
    if (this.#o.families.get(family)?.lastSuccessAt === null) this.#failingFromStart.add(family);
  }

  #familyHealthy(family: IPFamily, s: SyncStatus): boolean {
    if (s.lastSuccessAt === null && this.#failingFromStart.has(family)) return false;
    // Before its first sync a family waits for one since the start, even when nothing was queued yet (the API
    // server not reached): upstream would answer 200 then, with no rules.
    const pendingSince = s.oldestPendingAt ?? (s.lastSuccessAt === null ? this.#startedAt : null);
    return pendingSince === null || this.#now() - pendingSince < this.#o.timeoutMs;
  }

  /** Healthy when every family is. */
  isHealthy(): boolean {
    return [...this.#o.families].every(([f, s]) => this.#familyHealthy(f, s));
  }

  nodeEligible(): boolean {
    return this.#o.node?.eligible() ?? true;
  }

  /** upstream Health(): the body before the endpoint's own touches. */
  health(): ProxyHealthBody {
    const now = this.#now();
    const iso = (ms: number) => new Date(ms).toISOString();
    const status: ProxyHealthBody['status'] = {};
    let lastUpdated = 0;
    for (const [family, s] of [...this.#o.families].sort(([a], [b]) => a.localeCompare(b))) {
      const last = s.lastSuccessAt ?? this.#startedAt;
      lastUpdated = Math.max(lastUpdated, last);
      status[family] = { lastUpdated: iso(last), healthy: this.#familyHealthy(family, s) };
    }
    return { lastUpdated: iso(lastUpdated), currentTime: iso(now), healthy: Object.values(status).every((x) => x.healthy), status };
  }

  /**
   * The answer of /healthz (withNode) or /livez. As upstream, a healthy answer's lastUpdated is the current time
   * (older kube-proxy reported its last loop run; clients compare it with currentTime).
   */
  report(withNode: boolean): { code: number; body: string } {
    const h = this.health();
    const eligible = this.nodeEligible();
    const ok = h.healthy && (!withNode || eligible);
    const body: ProxyHealthBody = {
      lastUpdated: ok ? h.currentTime : h.lastUpdated,
      currentTime: h.currentTime,
      ...(withNode ? { nodeEligible: eligible } : {}),
      healthy: h.healthy,
      status: h.status,
    };
    return { code: ok ? 200 : 503, body: JSON.stringify(body) };
  }
}

/** Counts the answers (kubeproxy_proxy_healthz_total / _livez_total{code}). */
export type HealthRecorder = (endpoint: 'healthz' | 'livez', code: number) => void;

export async function serveHealth(health: ProxierHealth, host: string, port: number, record?: HealthRecorder): Promise<Server> {
  const server = boundedServer('healthz', (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/healthz' && path !== '/livez') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found\n');
      return;
    }
    const r = health.report(path === '/healthz');
    record?.(path === '/healthz' ? 'healthz' : 'livez', r.code);
    res.writeHead(r.code, JSON_HEADERS).end(r.body);
  });
  await listen(server, host, port, 'healthz');
  return server;
}

/** upstream's retry of a server that could not start (wait.Until, every 5 s). */
export const SERVER_RETRY_MS = 5000;

/**
 * Starts a server (health or metrics) as upstream: when its address cannot be bound, with
 * --bind-address-hard-fail the proxy cannot start (a StartupError: one line, exit 1); without, the failure is
 * logged and the server retried every 5 s while the proxy runs. onFailure hears of each failure (upstream records
 * an Event). Returns what closes it (or stops the retries).
 */
export async function startServer(
  what: string,
  address: string,
  start: () => Promise<Server>,
  hardFail: boolean,
  onFailure: (err: Error) => void = () => {},
  retryMs = SERVER_RETRY_MS,
): Promise<{ close(): void }> {
  let server: Server | null = null;
  let timer: NodeJS.Timeout | null = null;
  let closed = false;
  const attempt = async (): Promise<void> => {
    try {
      const s = await start();
      if (closed) s.close();
      else server = s;
    } catch (e) {
      onFailure(e as Error);
      if (hardFail) throw new StartupError(`cannot serve ${what} on ${address}: ${(e as Error).message} (--bind-address-hard-fail)`);
      log.error({ event: 'server-failed', server: what, address, err: (e as Error).message }, `cannot serve ${what}; retrying every ${retryMs / 1000} s`);
      if (!closed) {
        timer = setTimeout(() => void attempt(), retryMs);
        timer.unref();
      }
    }
  };
  await attempt();
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      server?.close();
    },
  };
}

interface ServiceHealthEntry {
  namespace: string;
  name: string;
  localEndpoints: number;
}

/**
 * Where the health-check node ports listen, as upstream's service health server: the node's addresses within
 * nodePortAddresses, or every address when that is empty.
 */
export function healthCheckHosts(nodePortCIDRs: readonly string[], interfaces = networkInterfaces()): string[] {
  if (nodePortCIDRs.length === 0) return ['0.0.0.0'];
  const out: string[] = [];
  for (const list of Object.values(interfaces)) {
    for (const a of list ?? []) {
      if (nodePortCIDRs.some((c) => familyOf(c) === (a.family === 'IPv6' ? 'IPv6' : 'IPv4') && cidrContains(c, a.address)) && !out.includes(a.address))
        out.push(a.address);
    }
  }
  return out;
}

/**
 * Health-check node ports: for each service with externalTrafficPolicy Local and a healthCheckNodePort,
 * a server per listen address answering 200 when this node has ready local endpoints (and the proxy is healthy),
 * 503 otherwise, with kube-proxy's JSON body and X-Load-Balancing-Endpoint-Weight header.
 */
export class ServiceHealthServers {
  private readonly servers = new Map<number, { servers: Server[]; entry: ServiceHealthEntry }>();
  private readonly health: ProxierHealth;
  private readonly hosts: () => string[];

  /** hosts: where to listen (healthCheckHosts), asked again for each port opened. */
  constructor(health: ProxierHealth, hosts: string | (() => string[]) = '0.0.0.0') {
    this.health = health;
    this.hosts = typeof hosts === 'string' ? () => [hosts] : hosts;
  }

  /** Opens, updates and closes servers to match the states (one per family: a service's port serves both). */
  async sync(states: Iterable<DesiredState>): Promise<void> {
    const want = new Map<number, ServiceHealthEntry>();
    for (const state of states)
      for (const sp of state.servicePorts.values()) {
        if (sp.healthCheckNodePort === null || sp.externalTrafficPolicy !== 'Local') continue;
        const local = sp.localEndpoints.filter((e) => e.ready).length;
        const prev = want.get(sp.healthCheckNodePort);
        // The ports of one service share its health check port; report the largest local count among them.
        want.set(sp.healthCheckNodePort, { namespace: sp.namespace, name: sp.name, localEndpoints: Math.max(prev?.localEndpoints ?? 0, local) });
      }
    for (const [port, s] of this.servers) {
      if (!want.has(port)) {
        this.servers.delete(port);
        for (const server of s.servers) server.close();
        log.info({ event: 'service-health-closed', port }, 'closed a service health check server');
      }
    }
    for (const [port, entry] of want) {
      const cur = this.servers.get(port);
      if (cur) {
        cur.entry = entry;
        continue;
      }
      const holder: { servers: Server[]; entry: ServiceHealthEntry } = { servers: [], entry };
      for (const host of this.hosts()) {
        const server = boundedServer(`health-check-node-port ${port}`, (_req, res) => {
          const e = holder.entry;
          const ok = e.localEndpoints > 0 && this.health.isHealthy();
          res.writeHead(ok ? 200 : 503, { ...JSON_HEADERS, 'x-load-balancing-endpoint-weight': String(e.localEndpoints) });
          res.end(
            JSON.stringify(
              { service: { namespace: e.namespace, name: e.name }, localEndpoints: e.localEndpoints, serviceProxyHealthy: this.health.isHealthy() },
              null,
              2,
            ),
          );
        });
        try {
          await listen(server, host, port, `service health (${entry.namespace}/${entry.name})`);
          holder.servers.push(server);
        } catch (err) {
          log.error({ event: 'service-health-failed', port, host, err: (err as Error).message }, 'could not open a service health check port');
        }
      }
      if (holder.servers.length > 0) this.servers.set(port, holder);
    }
  }

  ports(): number[] {
    return [...this.servers.keys()].sort((a, b) => a - b);
  }

  async close(): Promise<void> {
    for (const s of this.servers.values()) for (const server of s.servers) server.close();
    this.servers.clear();
  }
}
