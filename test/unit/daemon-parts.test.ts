import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { buildState } from '../../src/model/store.ts';
import { StartupError } from '../../src/errors.ts';
import { ProxierHealth, ServiceHealthServers, type SyncStatus, healthCheckHosts, serveHealth, startServer } from '../../src/daemon/health.ts';
import { ProxyMetrics, serveMetrics } from '../../src/daemon/metrics.ts';
import { NodeWatch, TO_BE_DELETED_TAINT, nodeHostIPs } from '../../src/daemon/node-watch.ts';
import type { SyncEvent } from '../../src/sync/loop.ts';
import type { DesiredState, IPFamily } from '../../src/model/types.ts';
import type { KubeObject } from '../../src/model/k8s.ts';
import { FileSource } from '../../src/watch/file.ts';
import type { SourceEvent } from '../../src/watch/types.ts';
import { CONFIG, ep, slice, svc } from './model-helpers.ts';

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const portOf = (s: Server) => (s.address() as AddressInfo).port;

function nodeObject(extra: { deletionTimestamp?: string; taints?: { key: string; effect: string }[]; addresses?: string[] } = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node-a', ...(extra.deletionTimestamp ? { deletionTimestamp: extra.deletionTimestamp } : {}) },
    spec: { ...(extra.taints ? { taints: extra.taints } : {}) },
    status: { addresses: (extra.addresses ?? ['198.18.0.2']).map((address) => ({ type: 'InternalIP', address })) },
  } as KubeObject;
}

describe('proxier health (/healthz, /livez)', () => {
  async function serve(h: ProxierHealth, counts: string[] = []) {
    const server = await serveHealth(h, '127.0.0.1', 0, (endpoint, code) => counts.push(`${endpoint} ${code}`));
    closers.push(() => server.close());
    return async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${portOf(server)}${path}`);
      return { code: r.status, text: await r.clone().text(), body: (await r.json()) as Record<string, any>, type: r.headers.get('content-type') };
    };
  }

  it("answers upstream's bodies, with the status of each family; unhealthy once a change waits longer than the timeout", async () => {
    let now = Date.parse('2026-01-02T03:04:05.000Z');
    const started = now;
    const v4: SyncStatus = { oldestPendingAt: null, lastSuccessAt: null };
    const v6: SyncStatus = { oldestPendingAt: null, lastSuccessAt: null };
    const node = new NodeWatch({ watched: true, restart: () => {} });
    node.observe(nodeObject());
    const counts: string[] = [];
    const h = new ProxierHealth({
      families: new Map<IPFamily, SyncStatus>([
        ['IPv6', v6],
        ['IPv4', v4],
      ]),
      timeoutMs: 60_000,
      node,
      now: () => now,
    });
    const get = await serve(h, counts);
    // Before any sync: healthy, each family "updated" at the start (upstream's SyncLoop marks it so).
    now += 500;
    const first = await get('/healthz');
    expect(first.code).toBe(200);
    expect(first.type).toBe('application/json');
    expect(first.text).toBe(
      JSON.stringify({
        lastUpdated: new Date(now).toISOString(),
        currentTime: new Date(now).toISOString(),
        nodeEligible: true,
        healthy: true,
        status: {
          IPv4: { lastUpdated: new Date(started).toISOString(), healthy: true },
          IPv6: { lastUpdated: new Date(started).toISOString(), healthy: true },
        },
      }),
    );
    v4.lastSuccessAt = now;
    v6.lastSuccessAt = now;
    // IPv6 has a change waiting: fine until the timeout, then 503 naming the family.
    v6.oldestPendingAt = now;
    now += 59_000;
    expect((await get('/healthz')).code).toBe(200);
    now += 2_000;
    const late = await get('/healthz');
    expect(late).toMatchObject({ code: 503, body: { healthy: false, nodeEligible: true, status: { IPv4: { healthy: true }, IPv6: { healthy: false } } } });
    // An unhealthy answer keeps the real last update.
    expect(late.body.lastUpdated).toBe(new Date(now - 61_000).toISOString());
    expect((await get('/livez')).code).toBe(503);
    v6.oldestPendingAt = null;
    v6.lastSuccessAt = now;
    const live = await get('/livez');
    expect(live.code).toBe(200);
    expect(live.body).not.toHaveProperty('nodeEligible');
    expect(counts).toEqual(['healthz 200', 'healthz 200', 'healthz 503', 'livez 503', 'livez 200']);
  });

  it('is unhealthy when no first sync came within the timeout of the start (the API server never answered)', () => {
    let now = 1_000_000;
    const h = new ProxierHealth({ families: new Map([['IPv4', { oldestPendingAt: null, lastSuccessAt: null }]]), timeoutMs: 60_000, now: () => now });
    now += 59_000;
    expect(h.report(false).code).toBe(200);
    now += 2_000;
    expect(h.report(false).code).toBe(503);
  });

  it('is unhealthy at once when every sync of a family so far failed (a proxy that cannot program anything)', async () => {
    const v4: SyncStatus = { oldestPendingAt: Date.now(), lastSuccessAt: null };
    const h = new ProxierHealth({ families: new Map([['IPv4', v4]]), timeoutMs: 60_000 });
    expect(h.isHealthy()).toBe(true);
    h.syncFailed('IPv4');
    expect(h.report(true)).toMatchObject({ code: 503 });
    v4.lastSuccessAt = Date.now();
    v4.oldestPendingAt = null;
    expect(h.report(true)).toMatchObject({ code: 200 });
  });

  it('503 on /healthz (not /livez) when the Node is missing, being deleted or tainted ToBeDeletedByClusterAutoscaler', async () => {
    const restarts: string[] = [];
    const node = new NodeWatch({ watched: true, restart: (why) => restarts.push(why) });
    const h = new ProxierHealth({ families: new Map([['IPv4', { oldestPendingAt: null, lastSuccessAt: Date.now() }]]), timeoutMs: 60_000, node });
    const get = await serve(h);
    expect(await get('/healthz')).toMatchObject({ code: 503, body: { nodeEligible: false, healthy: true } });
    expect((await get('/livez')).code).toBe(200);
    node.observe(nodeObject());
    expect(await get('/healthz')).toMatchObject({ code: 200, body: { nodeEligible: true } });
    node.observe(nodeObject({ taints: [{ key: TO_BE_DELETED_TAINT, effect: 'NoSchedule' }] }));
    expect(await get('/healthz')).toMatchObject({ code: 503, body: { nodeEligible: false } });
    node.observe(nodeObject({ taints: [{ key: 'other', effect: 'NoSchedule' }] }));
    expect((await get('/healthz')).code).toBe(200);
    node.observe(nodeObject({ deletionTimestamp: new Date().toISOString() }));
    expect(await get('/healthz')).toMatchObject({ code: 503, body: { nodeEligible: false } });
    expect((await get('/livez')).code).toBe(200);
    expect(restarts).toEqual([]);
  });

  it('restarts, as upstream, when the Node is deleted or its IPs change; a file source follows the file as given', () => {
    const restarts: string[] = [];
    const node = new NodeWatch({ watched: true, restart: (why) => restarts.push(why) });
    node.observe(nodeObject({ addresses: ['198.18.0.2', '2001:2::2'] }));
    expect(node.hostIPs).toEqual(['198.18.0.2', '2001:2::2']);
    node.observe(nodeObject({ addresses: ['198.18.0.2', '2001:2::2'] }));
    expect(restarts).toEqual([]);
    node.observe(nodeObject({ addresses: ['198.18.0.9', '2001:2::2'] }));
    expect(restarts).toEqual(["this node's IPs changed"]);
    node.observe(null);
    expect(restarts).toEqual(["this node's IPs changed", "this node's Node object was deleted"]);
    const file = new NodeWatch({ watched: false, restart: (why) => restarts.push(why) });
    expect(file.eligible()).toBe(true);
    file.observe(nodeObject());
    file.observe(null);
    expect(file.eligible()).toBe(true);
    expect(restarts).toHaveLength(2);
  });

  it("takes the node's primary IPs as upstream: InternalIP first, one per family", () => {
    const n = {
      kind: 'Node',
      metadata: { name: 'n' },
      status: {
        addresses: [
          { type: 'ExternalIP', address: '203.0.113.1' },
          { type: 'Hostname', address: 'n' },
          { type: 'InternalIP', address: '198.18.0.2' },
          { type: 'InternalIP', address: '198.18.0.3' },
          { type: 'ExternalIP', address: '2001:2::9' },
        ],
      },
    } as KubeObject;
    expect(nodeHostIPs(n)).toEqual(['198.18.0.2', '2001:2::9']);
    expect(nodeHostIPs(null)).toEqual([]);
  });

  it('a busy port: retried every few seconds without hard-fail, a StartupError with it', async () => {
    const blocker = createNetServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as AddressInfo).port;
    const h = new ProxierHealth({ families: new Map([['IPv4', { oldestPendingAt: null, lastSuccessAt: Date.now() }]]), timeoutMs: 60_000 });
    await expect(startServer('healthz', `127.0.0.1:${port}`, () => serveHealth(h, '127.0.0.1', port), true)).rejects.toThrow(StartupError);
    const failures: string[] = [];
    const handle = await startServer(
      'healthz',
      `127.0.0.1:${port}`,
      () => serveHealth(h, '127.0.0.1', port),
      false,
      (e) => failures.push(e.message),
      50,
    );
    expect(failures[0]).toMatch(/EADDRINUSE/);
    closers.push(() => handle.close());
    await new Promise((r) => blocker.close(r));
    let code = 0;
    for (let i = 0; i < 100 && code !== 200; i++) {
      await sleep(20);
      code = await fetch(`http://127.0.0.1:${port}/livez`).then(
        (r) => r.status,
        () => 0,
      );
    }
    expect(code).toBe(200);
  });
});

describe('service health check node ports', () => {
  it('answers 200 with the local endpoint count when there are local ready endpoints, 503 otherwise', async () => {
    const status = { oldestPendingAt: null, lastSuccessAt: Date.now() };
    const servers = new ServiceHealthServers(new ProxierHealth({ families: new Map([['IPv4', status]]), timeoutMs: 60_000 }), '127.0.0.1');
    closers.push(() => servers.close());
    // Free ports below the kernel's ephemeral range (32768 on): a port the kernel picked for another test's
    // listen(0) or connection, free again when it was tried here, was taken before the servers bound it.
    const free = async (not: number) => {
      const { createServer } = await import('node:net');
      for (;;) {
        const p = 24000 + Math.floor(Math.random() * 8000);
        if (p === not) continue;
        const s = createServer();
        const bound = await new Promise<boolean>((r) => {
          s.once('error', () => r(false));
          s.listen(p, '127.0.0.1', () => r(true));
        });
        if (!bound) continue;
        await new Promise((r) => s.close(r));
        return p;
      }
    };
    const p1 = await free(0);
    const p2 = await free(p1);
    // Each service its own ClusterIP and NodePort, whatever the random health check ports: derived from those, two
    // ports 200 apart once gave both services one ClusterIP, which only the first owns (model/frontends.ts), and the
    // second service, without a frontend, had no health check port.
    const lb = (name: string, hc: number, n: number) =>
      svc(name, {
        type: 'LoadBalancer',
        clusterIP: `198.18.100.${n}`,
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: hc,
        ports: [{ name: 'http', port: 80, nodePort: 30000 + n }],
      });
    const objects = [
      lb('has-local', p1, 1),
      slice(
        'has-local-1',
        'has-local',
        [{ name: 'http', port: 8080 }],
        [ep('198.19.1.11', 'node-a'), ep('198.19.1.12', 'node-a'), ep('198.19.2.11', 'node-b')],
      ),
      lb('remote', p2, 2),
      slice('remote-1', 'remote', [{ name: 'http', port: 8080 }], [ep('198.19.2.11', 'node-b')]),
    ];
    await servers.sync([buildState(objects, CONFIG).state]);
    expect(servers.ports()).toEqual([p1, p2].sort((a, b) => a - b));
    const r1 = await fetch(`http://127.0.0.1:${p1}/`);
    expect(r1.status).toBe(200);
    expect(r1.headers.get('x-load-balancing-endpoint-weight')).toBe('2');
    expect(await r1.json()).toEqual({ service: { namespace: 'shop', name: 'has-local' }, localEndpoints: 2, serviceProxyHealthy: true });
    const r2 = await fetch(`http://127.0.0.1:${p2}/`);
    expect(r2.status).toBe(503);
    expect(((await r2.json()) as { localEndpoints: number }).localEndpoints).toBe(0);
    // The service goes away: its port closes.
    await servers.sync([buildState(objects.slice(0, 2), CONFIG).state]);
    expect(servers.ports()).toEqual([p1]);
    await sleep(20);
    await expect(fetch(`http://127.0.0.1:${p2}/`)).rejects.toThrow();
  });
});

describe('health-check node port addresses', () => {
  it('are the node addresses within nodePortAddresses, or every address', () => {
    const ifaces = {
      lo: [{ address: '127.0.0.1', family: 'IPv4' }],
      eth0: [
        { address: '198.18.0.2', family: 'IPv4' },
        { address: '2001:2::2', family: 'IPv6' },
      ],
      eth1: [{ address: '203.0.113.5', family: 'IPv4' }],
    } as unknown as ReturnType<typeof import('node:os').networkInterfaces>;
    expect(healthCheckHosts([], ifaces)).toEqual(['0.0.0.0']);
    expect(healthCheckHosts(['198.18.0.0/24', '2001:2::/64'], ifaces)).toEqual(['198.18.0.2', '2001:2::2']);
    expect(healthCheckHosts(['10.0.0.0/8'], ifaces)).toEqual([]);
  });
});

function syncEvent(state: DesiredState, o: { full: boolean; durationMs: number; triggerTimes?: number[] }): SyncEvent {
  return {
    result: { full: o.full, durationMs: o.durationMs, bytes: 1, servicePortsWritten: 1 },
    state,
    changes: { added: [], updated: [], removed: [], previous: new Map() },
    servicePorts: state.servicePorts.size,
    changed: 1,
    serviceChanges: 0,
    endpointChanges: 0,
    triggerTimes: o.triggerTimes ?? [],
  };
}

/** Every family upstream kube-proxy exposes (metrics reference), with its type and labels. */
const UPSTREAM_FAMILIES: [string, string, string[]][] = [
  ['kubeproxy_sync_proxy_rules_duration_seconds', 'histogram', ['ip_family']],
  ['kubeproxy_sync_full_proxy_rules_duration_seconds', 'histogram', ['ip_family']],
  ['kubeproxy_sync_partial_proxy_rules_duration_seconds', 'histogram', ['ip_family']],
  ['kubeproxy_network_programming_duration_seconds', 'histogram', ['ip_family']],
  ['kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'gauge', ['ip_family']],
  ['kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', 'gauge', ['ip_family']],
  ['kubeproxy_sync_proxy_rules_endpoint_changes_pending', 'gauge', []],
  ['kubeproxy_sync_proxy_rules_endpoint_changes_total', 'counter', []],
  ['kubeproxy_sync_proxy_rules_service_changes_pending', 'gauge', []],
  ['kubeproxy_sync_proxy_rules_service_changes_total', 'counter', []],
  ['kubeproxy_sync_proxy_rules_iptables_restore_failures_total', 'counter', ['ip_family']],
  ['kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total', 'counter', ['ip_family']],
  ['kubeproxy_sync_proxy_rules_iptables_total', 'gauge', ['ip_family', 'table']],
  ['kubeproxy_sync_proxy_rules_iptables_last', 'gauge', ['ip_family', 'table']],
  ['kubeproxy_sync_proxy_rules_nftables_sync_failures_total', 'counter', ['ip_family']],
  ['kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total', 'counter', ['ip_family']],
  ['kubeproxy_sync_proxy_rules_no_local_endpoints_total', 'gauge', ['ip_family', 'traffic_policy']],
  ['kubeproxy_proxy_healthz_total', 'counter', ['code']],
  ['kubeproxy_proxy_livez_total', 'counter', ['code']],
  ['kubeproxy_conntrack_reconciler_sync_duration_seconds', 'histogram', ['ip_family']],
  ['kubeproxy_conntrack_reconciler_deleted_entries_total', 'counter', ['ip_family']],
  ['rest_client_requests_total', 'counter', ['code', 'method', 'host']],
  ['rest_client_request_duration_seconds', 'histogram', ['verb', 'host']],
  ['rest_client_rate_limiter_duration_seconds', 'histogram', ['verb', 'host']],
  ['rest_client_request_size_bytes', 'histogram', ['verb', 'host']],
  ['rest_client_response_size_bytes', 'histogram', ['verb', 'host']],
  ['kubernetes_build_info', 'gauge', ['major', 'minor', 'git_version', 'git_commit', 'git_tree_state', 'build_date', 'go_version', 'compiler', 'platform']],
];

/** The label names of a family's samples (the series that carry any). */
function labelNamesOf(text: string, family: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${family}(?:_bucket|_sum|_count)?\\{([^}]*)\\}`).exec(line);
    if (!m) continue;
    for (const pair of m[1]!.split(/,(?=[a-z_]+=")/)) names.add(pair.split('=')[0]!);
  }
  names.delete('le');
  return names;
}

describe('metrics', () => {
  it("has every upstream kubeproxy_* family, rest_client_* and build info, with upstream's types and labels", async () => {
    const m = new ProxyMetrics({ families: ['IPv4', 'IPv6'] });
    const { state } = buildState([svc('a', { clusterIP: '198.18.100.1', ports: [{ name: 'http', port: 80 }] })], CONFIG);
    m.recordSync(syncEvent(state, { full: true, durationMs: 5, triggerTimes: [Date.now() - 100] }), state, 'IPv4');
    m.recordSync(syncEvent(state, { full: false, durationMs: 5 }), state, 'IPv6');
    m.queued([{ kind: 'Service' }]);
    m.recordIptablesRules('IPv4', 'nat', 40, 12);
    m.conntrackReconciled('IPv4', 0.002, 3);
    m.recordHealth('healthz', 200);
    m.recordHealth('livez', 503);
    m.requests.rateLimited('GET', '198.18.0.1:6443', 0.01);
    m.requests.request({ verb: 'GET', host: '198.18.0.1:6443', code: '200', seconds: 0.02, responseBytes: 900 });
    const text = await m.registry.metrics();
    for (const [name, type, labels] of UPSTREAM_FAMILIES) {
      expect(text, name).toContain(`# TYPE ${name} ${type}\n`);
      expect([...labelNamesOf(text, name)].sort(), name).toEqual([...labels].sort());
    }
    expect(text).toContain('kubeproxy_network_programming_duration_seconds_bucket{le="0",ip_family="IPv4"} 0');
    expect(text).toContain('kubeproxy_network_programming_duration_seconds_bucket{le="0.25",ip_family="IPv4"} 1');
    expect(text).toMatch(/kubernetes_build_info\{major="0",minor="1",git_version="v0\.1\.0-kube-proxy-ts".*compiler="node".*\} 1/);
    expect(text).toContain('process_resident_memory_bytes');
    expect(text).toContain('nodejs_heap_size_used_bytes');
  });

  it("records each family under its ip_family; failures in the mode's counter; pending changes until the family syncs", async () => {
    const m = new ProxyMetrics({ families: ['IPv4', 'IPv6'] });
    const { state } = buildState(
      [
        svc('a', { clusterIP: '198.18.100.1', internalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80 }] }),
        slice('a-1', 'a', [{ name: 'http', port: 80 }], [ep('198.19.2.1', 'node-b')]),
      ],
      CONFIG,
    );
    const now = Date.now();
    m.recordSync(syncEvent(state, { full: true, durationMs: 12, triggerTimes: [now - 1500] }), state, 'IPv4', now);
    m.recordSync(syncEvent(state, { full: false, durationMs: 3 }), state, 'IPv4', now);
    m.recordFailure('kubeproxy_sync_proxy_rules_iptables_restore_failures_total', 'IPv4', false);
    m.recordFailure('kubeproxy_sync_proxy_rules_iptables_restore_failures_total', 'IPv6', true);
    m.recordFailure('kubeproxy_sync_proxy_rules_nftables_sync_failures_total', 'IPv6', true);
    m.queued([{ kind: 'EndpointSlice' }], undefined, now);
    m.queued([{ kind: 'EndpointSlice' }, { kind: 'Service' }, { kind: 'Node' }], undefined, now);
    const text = await m.registry.metrics();
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2');
    expect(text).toContain('kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1');
    expect(text).toContain('kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.016",ip_family="IPv4"} 2');
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004",ip_family="IPv4"} 1');
    expect(text).toContain('kubeproxy_network_programming_duration_seconds_bucket{le="1",ip_family="IPv4"} 0');
    expect(text).toContain('kubeproxy_network_programming_duration_seconds_bucket{le="2",ip_family="IPv4"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family="IPv4"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family="IPv6"} 0');
    expect(text).toContain('kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv6"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"} 0');
    expect(text).toContain('kubeproxy_sync_proxy_rules_endpoint_changes_total 2');
    expect(text).toContain('kubeproxy_sync_proxy_rules_service_changes_total 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_endpoint_changes_pending 2');
    expect(text).toContain('kubeproxy_sync_proxy_rules_service_changes_pending 1');
    expect(text).toMatch(new RegExp(`kubeproxy_sync_proxy_rules_last_timestamp_seconds\\{ip_family="IPv4"\\} ${Math.floor(now / 1000)}`));
    expect(text).toMatch(new RegExp(`kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds\\{ip_family="IPv6"\\} ${Math.floor(now / 1000)}`));
    // IPv4 syncs: IPv6 still has them pending.
    m.recordSync(syncEvent(state, { full: false, durationMs: 1 }), state, 'IPv4', now);
    expect(await m.registry.metrics()).toContain('kubeproxy_sync_proxy_rules_endpoint_changes_pending 2');
    m.recordSync(syncEvent(state, { full: false, durationMs: 1 }), state, 'IPv6', now);
    expect(await m.registry.metrics()).toContain('kubeproxy_sync_proxy_rules_endpoint_changes_pending 0');
    // A change that only one family's model took (an IPv4 slice): pending and queued for that family alone.
    m.queued([{ kind: 'EndpointSlice' }], ['IPv4'], now + 5000);
    const after = await m.registry.metrics();
    expect(after).toContain('kubeproxy_sync_proxy_rules_endpoint_changes_pending 1');
    expect(after).toMatch(new RegExp(`kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds\\{ip_family="IPv4"\\} ${Math.floor((now + 5000) / 1000)}`));
    expect(after).toMatch(new RegExp(`kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds\\{ip_family="IPv6"\\} ${Math.floor(now / 1000)}`));
    m.recordSync(syncEvent(state, { full: false, durationMs: 1 }), state, 'IPv4', now);
    expect(await m.registry.metrics()).toContain('kubeproxy_sync_proxy_rules_endpoint_changes_pending 0');
  });

  it('serves /metrics, and as upstream /healthz, /proxyMode and /configz', async () => {
    const m = new ProxyMetrics();
    const server = await serveMetrics(m, '127.0.0.1', 0, { proxyMode: 'nftables', configz: { mode: 'nftables' } });
    closers.push(() => server.close());
    const base = `http://127.0.0.1:${portOf(server)}`;
    expect(await (await fetch(`${base}/healthz`)).text()).toBe('ok');
    expect(await (await fetch(`${base}/proxyMode`)).text()).toBe('nftables');
    expect(await (await fetch(`${base}/configz`)).json()).toEqual({ 'kubeproxy.config.k8s.io': { mode: 'nftables' } });
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
  });

  // Debian's prometheus package: promtool lints the exposition as Prometheus reads it.
  const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));
  it.skipIf(!promtool)('passes `promtool check metrics` apart from the names upstream itself uses', async () => {
    const m = new ProxyMetrics();
    const { state } = buildState([svc('a', { clusterIP: '198.18.100.1', ports: [{ name: 'http', port: 80 }] })], CONFIG);
    m.recordSync(syncEvent(state, { full: true, durationMs: 5 }), state, 'IPv4');
    m.requests.request({ verb: 'GET', host: 'h:6443', code: '200', seconds: 0.02, responseBytes: 900 });
    let out: string;
    try {
      out = execFileSync(promtool!, ['check', 'metrics'], { input: await m.registry.metrics(), encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (e) {
      out = `${(e as { stdout?: string }).stdout ?? ''}${(e as { stderr?: string }).stderr ?? ''}`;
    }
    // Upstream's own names: gauges ending in _total.
    const UPSTREAM_NAMES = ['kubeproxy_sync_proxy_rules_no_local_endpoints_total', 'kubeproxy_sync_proxy_rules_iptables_total'];
    const problems = out
      .split('\n')
      .filter((l) => l.trim() !== '')
      .filter((l) => !UPSTREAM_NAMES.some((n) => l.startsWith(`${n} `)));
    expect(problems).toEqual([]);
  });
});

describe('file source follows the file', () => {
  it('sends only what changed, whether the file is written in place or replaced by a rename; a broken file changes nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kpt-file-'));
    const file = join(dir, 'objects.yaml');
    const a = svc('a', { clusterIP: '198.18.100.1', ports: [{ port: 80 }] });
    const b = svc('b', { clusterIP: '198.18.100.2', ports: [{ port: 80 }] });
    const write = (items: unknown[]) => writeFileSync(file, stringify({ apiVersion: 'v1', kind: 'List', items }));
    write([a, b]);
    const lists: number[] = [];
    const events: string[] = [];
    const errors: string[] = [];
    const src = new FileSource(file, { debounceMs: 20, pollMs: 200 });
    closers.push(() => src.stop());
    await src.start({
      onList: (objs) => lists.push(objs.length),
      onEvent: (e: SourceEvent) => events.push(`${e.type} ${e.object.metadata?.name}`),
      onError: (err) => errors.push(err.message),
    });
    expect(lists).toEqual([2]);
    write([a, { ...b, spec: { ...b.spec, clusterIP: '198.18.100.3', clusterIPs: undefined } }]);
    const waitFor = async (n: number) => {
      for (let i = 0; i < 100 && events.length < n; i++) await sleep(20);
    };
    await waitFor(1);
    expect(events).toEqual(['update b']);
    writeFileSync(
      join(dir, 'next.tmp'),
      stringify({ apiVersion: 'v1', kind: 'List', items: [b, svc('c', { clusterIP: '198.18.100.4', ports: [{ port: 80 }] })] }),
    );
    renameSync(join(dir, 'next.tmp'), file);
    await waitFor(4);
    expect(events.slice(1).sort()).toEqual(['add c', 'delete a', 'update b']);
    writeFileSync(file, 'items: [\n');
    for (let i = 0; i < 100 && errors.length === 0; i++) await sleep(20);
    expect(errors[0]).toContain('objects.yaml:');
    expect(events).toHaveLength(4);
  });

  it("starts from the start-up's read without reading again, and sees a change made after that read", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kpt-file-'));
    const file = join(dir, 'first.yaml');
    const a = svc('a', { clusterIP: '198.18.100.1', ports: [{ port: 80 }] });
    const b = svc('b', { clusterIP: '198.18.100.2', ports: [{ port: 80 }] });
    const write = (items: unknown[]) => writeFileSync(file, stringify({ apiVersion: 'v1', kind: 'List', items }));
    write([a, b]);
    const first = await FileSource.readFirst(file);
    write([a, b, svc('c', { clusterIP: '198.18.100.4', ports: [{ port: 80 }] })]);
    const lists: string[][] = [];
    const events: string[] = [];
    const src = new FileSource(file, { debounceMs: 20, pollMs: 100, first });
    closers.push(() => src.stop());
    await src.start({
      onList: (objs) => lists.push(objs.map((o) => o.metadata?.name ?? '')),
      onEvent: (e: SourceEvent) => events.push(`${e.type} ${e.object.metadata?.name}`),
    });
    expect(lists).toEqual([['a', 'b']]);
    expect(first.read.objects).toEqual([]); // handed over: the start-up keeps nothing alive
    for (let i = 0; i < 100 && events.length === 0; i++) await sleep(20);
    expect(events).toEqual(['add c']);
  });
});
