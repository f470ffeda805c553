// kube-proxy's health endpoints: /healthz and /livez on --healthz-bind-address, and one health-check server
// per service with externalTrafficPolicy: Local on its healthCheckNodePort, for cloud load balancers.
import type { Server } from 'node:http';
import { boundedServer, listen } from './http.ts';
import { log } from '../log.ts';
import type { DesiredState } from '../model/types.ts';

/** What the proxier health server needs to know about the sync loop. */
export interface SyncStatus {
  /** When the oldest change not yet synced was queued (ms), or null when nothing waits. */
  oldestPendingAt: number | null;
  /** When the last sync completed (ms), or null before the first. */
  lastSuccessAt: number | null;
}

const JSON_HEADERS = { 'content-type': 'application/json', 'x-content-type-options': 'nosniff' };

export class ProxierHealth {
  private readonly status: SyncStatus;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  /** Set while this node's Node object has a deletionTimestamp. */
  nodeDeleting = false;

  /** timeoutMs: kube-proxy uses twice the sync period. */
  constructor(status: SyncStatus, timeoutMs: number, now: () => number = Date.now) {
    this.status = status;
    this.timeoutMs = timeoutMs;
    this.now = now;
  }

  /** Healthy unless an update has waited longer than the timeout without a completed sync. */
  isHealthy(): boolean {
    const pending = this.status.oldestPendingAt;
    return pending === null || this.now() - pending < this.timeoutMs;
  }

  report(withNode: boolean): { code: number; body: string } {
    const healthy = this.isHealthy();
    const eligible = !this.nodeDeleting;
    const last = this.status.lastSuccessAt;
    const fields = [
      `"lastUpdated": ${JSON.stringify(last === null ? '' : new Date(last).toISOString())}`,
      `"currentTime": ${JSON.stringify(new Date(this.now()).toISOString())}`,
    ];
    if (withNode) fields.push(`"nodeEligible": ${eligible}`);
    return { code: healthy && (!withNode || eligible) ? 200 : 503, body: `{${fields.join(',')}}` };
  }
}

export async function serveHealth(health: ProxierHealth, host: string, port: number): Promise<Server> {
  const server = boundedServer('healthz', (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/healthz' && path !== '/livez') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found\n');
      return;
    }
    const r = health.report(path === '/healthz');
    res.writeHead(r.code, JSON_HEADERS).end(r.body);
  });
  await listen(server, host, port, 'healthz');
  return server;
}

interface ServiceHealthEntry {
  namespace: string;
  name: string;
  localEndpoints: number;
}

/**
 * Health-check node ports: for each service with externalTrafficPolicy Local and a healthCheckNodePort,
 * a server answering 200 when this node has ready local endpoints (and the proxy is healthy), 503 otherwise,
 * with kube-proxy's JSON body and X-Load-Balancing-Endpoint-Weight header.
 */
export class ServiceHealthServers {
  private readonly servers = new Map<number, { server: Server; entry: ServiceHealthEntry }>();
  private readonly health: ProxierHealth;
  private readonly host: string;

  constructor(health: ProxierHealth, host = '0.0.0.0') {
    this.health = health;
    this.host = host;
  }

  /** Opens, updates and closes servers to match the state. */
  async sync(state: DesiredState): Promise<void> {
    const want = new Map<number, ServiceHealthEntry>();
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
        s.server.close();
        log.info({ event: 'service-health-closed', port }, 'closed a service health check server');
      }
    }
    for (const [port, entry] of want) {
      const cur = this.servers.get(port);
      if (cur) {
        cur.entry = entry;
        continue;
      }
      const holder = { server: null as unknown as Server, entry };
      holder.server = boundedServer(`health-check-node-port ${port}`, (_req, res) => {
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
        await listen(holder.server, this.host, port, `service health (${entry.namespace}/${entry.name})`);
        this.servers.set(port, holder);
      } catch (err) {
        log.error({ event: 'service-health-failed', port, err: (err as Error).message }, 'could not open a service health check port');
      }
    }
  }

  ports(): number[] {
    return [...this.servers.keys()].sort((a, b) => a - b);
  }

  async close(): Promise<void> {
    for (const s of this.servers.values()) s.server.close();
    this.servers.clear();
  }
}
