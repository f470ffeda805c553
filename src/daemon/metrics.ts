// Prometheus metrics with kube-proxy's names and buckets, so existing dashboards and alerts keep working.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { boundedServer, listen } from './http.ts';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DesiredState } from '../model/types.ts';
import type { ModeName } from '../modes/types.ts';
import type { SyncEvent } from '../sync/loop.ts';

/** kube-proxy: metrics.ExponentialBuckets(0.001, 2, 15) */
const SYNC_BUCKETS = Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i);
/** kube-proxy's network programming buckets: 0.25 s .. 5 min. */
const NPL_BUCKETS = [
  0.25,
  0.5,
  ...Array.from({ length: 59 }, (_, i) => i + 1),
  ...Array.from({ length: 12 }, (_, i) => 60 + 5 * i),
  ...Array.from({ length: 7 }, (_, i) => 120 + 30 * i),
];

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly syncDuration = new Histogram({
    name: 'kubeproxy_sync_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds',
    buckets: SYNC_BUCKETS,
    registers: [this.registry],
  });
  readonly fullSyncDuration = new Histogram({
    name: 'kubeproxy_sync_full_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds for full resyncs',
    buckets: SYNC_BUCKETS,
    registers: [this.registry],
  });
  readonly partialSyncDuration = new Histogram({
    name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds for partial resyncs',
    buckets: SYNC_BUCKETS,
    registers: [this.registry],
  });
  readonly networkProgramming = new Histogram({
    name: 'kubeproxy_network_programming_duration_seconds',
    help: 'In Cluster Network Programming Latency in seconds',
    buckets: NPL_BUCKETS,
    registers: [this.registry],
  });
  readonly lastSync = new Gauge({
    name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
    help: 'The last time proxy rules were successfully synced',
    registers: [this.registry],
  });
  readonly lastQueued = new Gauge({
    name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
    help: 'The last time a sync of proxy rules was queued',
    registers: [this.registry],
  });
  readonly endpointChanges = new Counter({
    name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
    help: 'Cumulative proxy rules Endpoint changes',
    registers: [this.registry],
  });
  readonly serviceChanges = new Counter({
    name: 'kubeproxy_sync_proxy_rules_service_changes_total',
    help: 'Cumulative proxy rules Service changes',
    registers: [this.registry],
  });
  readonly iptablesRestoreFailures = new Counter({
    name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
    help: 'Cumulative proxy iptables restore failures',
    registers: [this.registry],
  });
  readonly nftablesSyncFailures = new Counter({
    name: 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total',
    help: 'Cumulative proxy nftables sync failures',
    registers: [this.registry],
  });
  readonly noLocalEndpoints = new Gauge({
    name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
    help: 'Number of services with a Local traffic policy and no endpoints',
    labelNames: ['traffic_policy'],
    registers: [this.registry],
  });
  readonly conntrackCleanupFailures = new Counter({
    name: 'kubeproxy_conntrack_cleanup_failures_total',
    help: 'Cumulative failures to delete stale UDP conntrack entries (kube-proxy-ts)',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    this.noLocalEndpoints.set({ traffic_policy: 'internal' }, 0);
    this.noLocalEndpoints.set({ traffic_policy: 'external' }, 0);
  }

  recordSync(e: SyncEvent, state: DesiredState, nowMs = Date.now()): void {
    const s = e.result.durationMs / 1000;
    this.syncDuration.observe(s);
    (e.result.full ? this.fullSyncDuration : this.partialSyncDuration).observe(s);
    this.lastSync.set(nowMs / 1000);
    this.endpointChanges.inc(e.endpointChanges);
    this.serviceChanges.inc(e.serviceChanges);
    for (const t of e.triggerTimes) if (t <= nowMs) this.networkProgramming.observe((nowMs - t) / 1000);
    let internal = 0;
    let external = 0;
    for (const sp of state.servicePorts.values()) {
      // As kube-proxy: counted only where the service has endpoints, just none on this node.
      if (sp.localEndpoints.length > 0 || sp.clusterEndpoints.length === 0) continue;
      if (sp.internalTrafficPolicy === 'Local') internal++;
      if (sp.externalTrafficPolicy === 'Local') external++;
    }
    this.noLocalEndpoints.set({ traffic_policy: 'internal' }, internal);
    this.noLocalEndpoints.set({ traffic_policy: 'external' }, external);
  }

  recordFailure(mode: ModeName): void {
    if (mode === 'nftables') this.nftablesSyncFailures.inc();
    else this.iptablesRestoreFailures.inc();
  }
}

/** The metrics server; `extra` answers other paths first (the debug endpoints) and returns whether it did. */
export async function serveMetrics(
  metrics: ProxyMetrics,
  host: string,
  port: number,
  extra?: (req: IncomingMessage, res: ServerResponse) => boolean,
): Promise<Server> {
  const server = boundedServer('metrics', (req, res) => {
    if (extra?.(req, res)) return;
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found\n');
      return;
    }
    metrics.registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  await listen(server, host, port, 'metrics');
  return server;
}
