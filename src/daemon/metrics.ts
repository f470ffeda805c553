// Prometheus metrics with kube-proxy's families, types, buckets and labels (pkg/proxy/metrics/metrics.go and the
// Kubernetes metrics reference: ip_family where upstream has it), client-go's rest_client_* request metrics,
// build info, and the process; so that existing dashboards and alerts keep working. The metrics server also
// answers /healthz and /proxyMode (and /configz), as upstream's.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { boundedServer, listen } from './http.ts';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DesiredState, IPFamily } from '../model/types.ts';
import type { SyncEvent } from '../sync/loop.ts';
import type { RequestObserver, RequestRecord } from '../watch/api-client.ts';
import { VERSION } from '../version.ts';

/** metrics.ExponentialBuckets(0.001, 2, 15): 1 ms .. 16 s. */
const SYNC_BUCKETS = Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i);
/** metrics.MergeBuckets(...) starts with 0, then 0.25 s, 0.5 s, 1..59 s, 60..115 s by 5, 2..5 min by 30 s. */
const NPL_BUCKETS = [
  0,
  0.25,
  0.5,
  ...Array.from({ length: 59 }, (_, i) => i + 1),
  ...Array.from({ length: 12 }, (_, i) => 60 + 5 * i),
  ...Array.from({ length: 7 }, (_, i) => 120 + 30 * i),
];
/** client-go's request latency buckets. */
const REST_LATENCY_BUCKETS = [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60];
/** client-go's request/response size buckets: 64 bytes .. 16 MB. */
const REST_SIZE_BUCKETS = [64, 256, 512, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216];

export const IPTABLES_RESTORE_FAILURES = 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total';
export const NFTABLES_SYNC_FAILURES = 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total';

export interface ProxyMetricsOptions {
  /** The families the proxy serves: their failure counters and gauges start at 0. */
  families?: readonly IPFamily[];
}

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly #families: readonly IPFamily[];
  /** Changes queued per family since its last sync (the pending gauges show the largest). */
  readonly #pending = new Map<IPFamily, { services: number; endpoints: number }>();

  readonly syncDuration: Histogram<'ip_family'>;
  readonly fullSyncDuration: Histogram<'ip_family'>;
  readonly partialSyncDuration: Histogram<'ip_family'>;
  readonly networkProgramming: Histogram<'ip_family'>;
  readonly lastSync: Gauge<'ip_family'>;
  readonly lastQueued: Gauge<'ip_family'>;
  readonly endpointChangesPending: Gauge;
  readonly endpointChanges: Counter;
  readonly serviceChangesPending: Gauge;
  readonly serviceChanges: Counter;
  readonly iptablesRestoreFailures: Counter<'ip_family'>;
  readonly iptablesPartialRestoreFailures: Counter<'ip_family'>;
  readonly iptablesRulesTotal: Gauge<'ip_family' | 'table'>;
  readonly iptablesRulesLast: Gauge<'ip_family' | 'table'>;
  readonly nftablesSyncFailures: Counter<'ip_family'>;
  readonly nftablesCleanupFailures: Counter<'ip_family'>;
  readonly noLocalEndpoints: Gauge<'ip_family' | 'traffic_policy'>;
  readonly healthzTotal: Counter<'code'>;
  readonly livezTotal: Counter<'code'>;
  readonly conntrackReconcilerDuration: Histogram<'ip_family'>;
  readonly conntrackReconcilerDeleted: Counter<'ip_family'>;
  readonly conntrackCleanupFailures: Counter;
  readonly restRequestDuration: Histogram<'verb' | 'host'>;
  readonly restRequestSize: Histogram<'verb' | 'host'>;
  readonly restResponseSize: Histogram<'verb' | 'host'>;
  readonly restRateLimiterDuration: Histogram<'verb' | 'host'>;
  readonly restRequests: Counter<'code' | 'method' | 'host'>;
  readonly buildInfo: Gauge;

  constructor(o: ProxyMetricsOptions = {}) {
    this.#families = o.families ?? ['IPv4', 'IPv6'];
    const registers = [this.registry];
    const hist = <L extends string>(name: string, help: string, buckets: number[], labelNames: L[]) =>
      new Histogram<L>({ name, help, buckets, labelNames, registers });
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Counter<L>({ name, help, labelNames, registers });
    const gauge = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Gauge<L>({ name, help, labelNames, registers });
    const F = ['ip_family' as const];
    this.syncDuration = hist('kubeproxy_sync_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds', SYNC_BUCKETS, F);
    this.fullSyncDuration = hist('kubeproxy_sync_full_proxy_rules_duration_seconds', 'SyncProxyRules latency in seconds for full resyncs', SYNC_BUCKETS, F);
    this.partialSyncDuration = hist(
      'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      'SyncProxyRules latency in seconds for partial resyncs',
      SYNC_BUCKETS,
      F,
    );
    this.networkProgramming = hist('kubeproxy_network_programming_duration_seconds', 'In Cluster Network Programming Latency in seconds', NPL_BUCKETS, F);
    this.lastSync = gauge('kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'The last time proxy rules were successfully synced', F);
    this.lastQueued = gauge('kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', 'The last time a sync of proxy rules was queued', F);
    this.endpointChangesPending = gauge('kubeproxy_sync_proxy_rules_endpoint_changes_pending', 'Pending proxy rules Endpoint changes');
    this.endpointChanges = counter('kubeproxy_sync_proxy_rules_endpoint_changes_total', 'Cumulative proxy rules Endpoint changes');
    this.serviceChangesPending = gauge('kubeproxy_sync_proxy_rules_service_changes_pending', 'Pending proxy rules Service changes');
    this.serviceChanges = counter('kubeproxy_sync_proxy_rules_service_changes_total', 'Cumulative proxy rules Service changes');
    this.iptablesRestoreFailures = counter(IPTABLES_RESTORE_FAILURES, 'Cumulative proxy iptables restore failures', F);
    this.iptablesPartialRestoreFailures = counter(
      'kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total',
      'Cumulative proxy iptables partial restore failures',
      F,
    );
    this.iptablesRulesTotal = gauge('kubeproxy_sync_proxy_rules_iptables_total', 'Total number of iptables rules owned by kube-proxy', ['ip_family', 'table']);
    this.iptablesRulesLast = gauge('kubeproxy_sync_proxy_rules_iptables_last', 'Number of iptables rules written by kube-proxy in last sync', [
      'ip_family',
      'table',
    ]);
    this.nftablesSyncFailures = counter(NFTABLES_SYNC_FAILURES, 'Cumulative proxy nftables sync failures', F);
    this.nftablesCleanupFailures = counter('kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total', 'Cumulative proxy nftables cleanup failures', F);
    this.noLocalEndpoints = gauge('kubeproxy_sync_proxy_rules_no_local_endpoints_total', 'Number of services with a Local traffic policy and no endpoints', [
      'ip_family',
      'traffic_policy',
    ]);
    this.healthzTotal = counter('kubeproxy_proxy_healthz_total', 'Cumulative proxy healthz HTTP status', ['code']);
    this.livezTotal = counter('kubeproxy_proxy_livez_total', 'Cumulative proxy livez HTTP status', ['code']);
    this.conntrackReconcilerDuration = hist(
      'kubeproxy_conntrack_reconciler_sync_duration_seconds',
      'ReconcileConntrackFlowsLatency latency in seconds',
      SYNC_BUCKETS,
      F,
    );
    this.conntrackReconcilerDeleted = counter(
      'kubeproxy_conntrack_reconciler_deleted_entries_total',
      'Cumulative conntrack flows deleted by conntrack reconciler',
      F,
    );
    this.conntrackCleanupFailures = counter(
      'kubeproxy_conntrack_cleanup_failures_total',
      'Cumulative failures to delete stale UDP conntrack entries (kube-proxy-ts)',
    );
    this.restRequestDuration = hist(
      'rest_client_request_duration_seconds',
      'Request latency in seconds. Broken down by verb, and host.',
      REST_LATENCY_BUCKETS,
      ['verb', 'host'],
    );
    this.restRequestSize = hist('rest_client_request_size_bytes', 'Request size in bytes. Broken down by verb and host.', REST_SIZE_BUCKETS, ['verb', 'host']);
    this.restResponseSize = hist('rest_client_response_size_bytes', 'Response size in bytes. Broken down by verb and host.', REST_SIZE_BUCKETS, [
      'verb',
      'host',
    ]);
    this.restRateLimiterDuration = hist(
      'rest_client_rate_limiter_duration_seconds',
      'Client side rate limiter latency in seconds. Broken down by verb, and host.',
      REST_LATENCY_BUCKETS,
      ['verb', 'host'],
    );
    this.restRequests = counter('rest_client_requests_total', 'Number of HTTP requests, partitioned by status code, method, and host.', [
      'code',
      'method',
      'host',
    ]);
    // Kubernetes components' build info, with this proxy's own version (no Kubernetes version to claim).
    this.buildInfo = new Gauge({
      name: 'kubernetes_build_info',
      help: "A metric with a constant '1' value labeled by major, minor, git version, git commit, git tree state, build date, Go version, and compiler from which Kubernetes was built, and platform on which it is running.",
      labelNames: ['major', 'minor', 'git_version', 'git_commit', 'git_tree_state', 'build_date', 'go_version', 'compiler', 'platform'],
      registers,
    });
    const [major = '0', minor = '0'] = VERSION.split('.');
    this.buildInfo.set(
      {
        major,
        minor,
        git_version: `v${VERSION}-kube-proxy-ts`,
        git_commit: '',
        git_tree_state: '',
        build_date: '',
        go_version: `node ${process.version}`,
        compiler: 'node',
        platform: `${process.platform}/${process.arch === 'x64' ? 'amd64' : process.arch}`,
      },
      1,
    );
    collectDefaultMetrics({ register: this.registry });
    // prom-client's gauges named like counters: `promtool check metrics` flags them, and no dashboard reads them.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
    // Series a dashboard rates or alerts on exist from the start, at 0, for each family served.
    for (const ip_family of this.#families) {
      this.#pending.set(ip_family, { services: 0, endpoints: 0 });
      this.iptablesRestoreFailures.inc({ ip_family }, 0);
      this.iptablesPartialRestoreFailures.inc({ ip_family }, 0);
      this.nftablesSyncFailures.inc({ ip_family }, 0);
      this.nftablesCleanupFailures.inc({ ip_family }, 0);
      this.noLocalEndpoints.set({ ip_family, traffic_policy: 'internal' }, 0);
      this.noLocalEndpoints.set({ ip_family, traffic_policy: 'external' }, 0);
    }
  }

  /**
   * Objects to sync were queued (one event's object, or a whole list) for `families` (those whose model they
   * changed; every family served when absent): each Service and EndpointSlice counted as a change, as upstream's
   * change trackers count every add and update, and pending, with the queued timestamp, for those families.
   */
  queued(objects: readonly { kind?: string }[], families: readonly IPFamily[] = [...this.#families], nowMs = Date.now()): void {
    const services = objects.filter((o) => o.kind === 'Service').length;
    const endpoints = objects.filter((o) => o.kind === 'EndpointSlice').length;
    if (services > 0) this.serviceChanges.inc(services);
    if (endpoints > 0) this.endpointChanges.inc(endpoints);
    for (const ip_family of families) {
      this.lastQueued.set({ ip_family }, nowMs / 1000);
      const p = this.#pending.get(ip_family);
      if (!p) continue;
      p.services += services;
      p.endpoints += endpoints;
    }
    this.#updatePending();
  }

  #updatePending(): void {
    const all = [...this.#pending.values()];
    this.serviceChangesPending.set(Math.max(0, ...all.map((p) => p.services)));
    this.endpointChangesPending.set(Math.max(0, ...all.map((p) => p.endpoints)));
  }

  /** One family's successful sync. */
  recordSync(e: SyncEvent, state: DesiredState, family: IPFamily, nowMs = Date.now()): void {
    const labels = { ip_family: family };
    const s = e.result.durationMs / 1000;
    this.syncDuration.observe(labels, s);
    (e.result.full ? this.fullSyncDuration : this.partialSyncDuration).observe(labels, s);
    this.lastSync.set(labels, nowMs / 1000);
    for (const r of e.result.iptablesRules ?? []) this.recordIptablesRules(family, r.table, r.total, r.written);
    for (const t of e.triggerTimes) if (t <= nowMs) this.networkProgramming.observe(labels, (nowMs - t) / 1000);
    this.#pending.set(family, { services: 0, endpoints: 0 });
    this.#updatePending();
    // As upstream: service ports that have endpoints, but none for a Local policy on this node (that traffic DROPs).
    let internal = 0;
    let external = 0;
    for (const sp of state.servicePorts.values()) {
      if (!sp.hasAnyEndpoints) continue;
      if (sp.internalPolicyLocal && sp.internalEndpoints.length === 0) internal++;
      if (sp.externalPolicyLocal && sp.externalEndpoints.length === 0) external++;
    }
    this.noLocalEndpoints.set({ ip_family: family, traffic_policy: 'internal' }, internal);
    this.noLocalEndpoints.set({ ip_family: family, traffic_policy: 'external' }, external);
  }

  /**
   * One family's failed sync, counted in the mode's failure counter (its ModeDefinition.failureMetric); a failed
   * partial iptables restore is also a partial restore failure, as upstream counts it.
   */
  recordFailure(failureMetric: string, family: IPFamily, full: boolean): void {
    const labels = { ip_family: family };
    if (failureMetric === NFTABLES_SYNC_FAILURES) this.nftablesSyncFailures.inc(labels);
    else {
      this.iptablesRestoreFailures.inc(labels);
      if (!full) this.iptablesPartialRestoreFailures.inc(labels);
    }
  }

  /** The iptables rules a family owns and wrote in its last sync, per table (when the mode reports them). */
  recordIptablesRules(family: IPFamily, table: string, total: number, written: number): void {
    this.iptablesRulesTotal.set({ ip_family: family, table }, total);
    this.iptablesRulesLast.set({ ip_family: family, table }, written);
  }

  /** One pass of the stale-flow cleanup of a family (pkg/proxy/conntrack CleanStaleEntries). */
  conntrackReconciled(family: IPFamily, seconds: number, deleted: number): void {
    this.conntrackReconcilerDuration.observe({ ip_family: family }, seconds);
    this.conntrackReconcilerDeleted.inc({ ip_family: family }, deleted);
  }

  /** What /healthz and /livez answered. */
  readonly recordHealth = (endpoint: 'healthz' | 'livez', code: number): void => {
    (endpoint === 'healthz' ? this.healthzTotal : this.livezTotal).inc({ code: String(code) });
  };

  /** The API client's requests (rest_client_*). */
  readonly requests: RequestObserver = {
    rateLimited: (verb: string, host: string, seconds: number) => this.restRateLimiterDuration.observe({ verb, host }, seconds),
    request: (r: RequestRecord) => {
      this.restRequests.inc({ code: r.code, method: r.verb, host: r.host });
      this.restRequestDuration.observe({ verb: r.verb, host: r.host }, r.seconds);
      this.restRequestSize.observe({ verb: r.verb, host: r.host }, 0);
      if (r.responseBytes !== null) this.restResponseSize.observe({ verb: r.verb, host: r.host }, r.responseBytes);
    },
  };
}

export interface MetricsServerOptions {
  /** Answers other paths first (the debug endpoints) and returns whether it did. */
  extra?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** What /proxyMode answers (upstream: the mode's name). */
  proxyMode?: string;
  /** What /configz answers: the running configuration, as upstream's configz. */
  configz?: unknown;
}

const TEXT = { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' };

/** The metrics server: /metrics, and as upstream's /healthz (the process answers), /proxyMode, /configz. */
export async function serveMetrics(metrics: ProxyMetrics, host: string, port: number, o: MetricsServerOptions = {}): Promise<Server> {
  const server = boundedServer('metrics', (req, res) => {
    if (o.extra?.(req, res)) return;
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, TEXT).end('ok');
      return;
    }
    if (path === '/proxyMode' && o.proxyMode !== undefined) {
      res.writeHead(200, TEXT).end(o.proxyMode);
      return;
    }
    if (path === '/configz' && o.configz !== undefined) {
      res
        .writeHead(200, { 'content-type': 'application/json', 'x-content-type-options': 'nosniff' })
        .end(JSON.stringify({ 'kubeproxy.config.k8s.io': o.configz }));
      return;
    }
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
