import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { buildState } from '../../src/model/store.ts';
import { ProxierHealth, ServiceHealthServers, serveHealth } from '../../src/daemon/health.ts';
import { ProxyMetrics, serveMetrics } from '../../src/daemon/metrics.ts';
import { FileSource } from '../../src/watch/file.ts';
import type { SourceEvent } from '../../src/watch/types.ts';
import { CONFIG, ep, slice, svc } from './model-helpers.ts';

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const portOf = (s: Server) => (s.address() as AddressInfo).port;

describe('proxier health (/healthz, /livez)', () => {
  it('is healthy until an update waits longer than the timeout; node deletion fails /healthz only', async () => {
    let now = 1_000_000;
    const status = { oldestPendingAt: null as number | null, lastSuccessAt: null as number | null };
    const h = new ProxierHealth(status, 60_000, () => now);
    const server = await serveHealth(h, '127.0.0.1', 0);
    closers.push(() => server.close());
    const get = async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${portOf(server)}${path}`);
      return { code: r.status, body: (await r.json()) as Record<string, unknown>, type: r.headers.get('content-type') };
    };
    expect(await get('/healthz')).toMatchObject({ code: 200, body: { nodeEligible: true, lastUpdated: '' }, type: 'application/json' });
    status.oldestPendingAt = now;
    now += 59_000;
    expect((await get('/healthz')).code).toBe(200);
    now += 2_000;
    expect((await get('/healthz')).code).toBe(503);
    expect((await get('/livez')).code).toBe(503);
    status.oldestPendingAt = null;
    status.lastSuccessAt = now;
    const ok = await get('/livez');
    expect(ok.code).toBe(200);
    expect(ok.body.lastUpdated).toBe(new Date(now).toISOString());
    expect(ok.body).not.toHaveProperty('nodeEligible');
    h.nodeDeleting = true;
    expect(await get('/healthz')).toMatchObject({ code: 503, body: { nodeEligible: false } });
    expect((await get('/livez')).code).toBe(200);
    expect((await fetch(`http://127.0.0.1:${portOf(server)}/other`)).status).toBe(404);
  });
});

describe('service health check node ports', () => {
  it('answers 200 with the local endpoint count when there are local ready endpoints, 503 otherwise', async () => {
    const status = { oldestPendingAt: null, lastSuccessAt: Date.now() };
    const servers = new ServiceHealthServers(new ProxierHealth(status, 60_000), '127.0.0.1');
    closers.push(() => servers.close());
    // Pick free ports by letting the kernel choose, then closing.
    const free = async () => {
      const { createServer } = await import('node:net');
      const s = createServer();
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      const p = (s.address() as AddressInfo).port;
      await new Promise((r) => s.close(r));
      return p;
    };
    const [p1, p2] = [await free(), await free()];
    const lb = (name: string, hc: number) =>
      svc(name, {
        type: 'LoadBalancer',
        clusterIP: `198.18.100.${hc % 200}`,
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: hc,
        ports: [{ name: 'http', port: 80, nodePort: 30000 + (hc % 1000) }],
      });
    const objects = [
      lb('has-local', p1),
      slice(
        'has-local-1',
        'has-local',
        [{ name: 'http', port: 8080 }],
        [ep('198.19.1.11', 'node-a'), ep('198.19.1.12', 'node-a'), ep('198.19.2.11', 'node-b')],
      ),
      lb('remote', p2),
      slice('remote-1', 'remote', [{ name: 'http', port: 8080 }], [ep('198.19.2.11', 'node-b')]),
    ];
    await servers.sync(buildState(objects, CONFIG).state);
    expect(servers.ports()).toEqual([p1, p2].sort((a, b) => a - b));
    const r1 = await fetch(`http://127.0.0.1:${p1}/`);
    expect(r1.status).toBe(200);
    expect(r1.headers.get('x-load-balancing-endpoint-weight')).toBe('2');
    expect(await r1.json()).toEqual({ service: { namespace: 'shop', name: 'has-local' }, localEndpoints: 2, serviceProxyHealthy: true });
    const r2 = await fetch(`http://127.0.0.1:${p2}/`);
    expect(r2.status).toBe(503);
    expect(((await r2.json()) as { localEndpoints: number }).localEndpoints).toBe(0);
    // The service goes away: its port closes.
    await servers.sync(buildState(objects.slice(0, 2), CONFIG).state);
    expect(servers.ports()).toEqual([p1]);
    await sleep(20);
    await expect(fetch(`http://127.0.0.1:${p2}/`)).rejects.toThrow();
  });
});

describe('metrics', () => {
  it('exposes kube-proxy names with values', async () => {
    const m = new ProxyMetrics();
    const { state } = buildState(
      [
        svc('a', { clusterIP: '198.18.100.1', internalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80 }] }),
        slice('a-1', 'a', [{ name: 'http', port: 80 }], [ep('198.19.2.1', 'node-b')]),
      ],
      CONFIG,
    );
    const now = Date.now();
    m.recordSync(
      {
        result: { full: true, durationMs: 12, bytes: 1, servicePortsWritten: 1 },
        state,
        changes: { added: [], updated: [], removed: [], previous: new Map() },
        servicePorts: 1,
        changed: 1,
        serviceChanges: 2,
        endpointChanges: 3,
        triggerTimes: [now - 1500],
      },
      state,
      now,
    );
    m.recordSync(
      {
        result: { full: false, durationMs: 3, bytes: 1, servicePortsWritten: 1 },
        state,
        changes: { added: [], updated: [], removed: [], previous: new Map() },
        servicePorts: 1,
        changed: 1,
        serviceChanges: 0,
        endpointChanges: 1,
        triggerTimes: [],
      },
      state,
      now,
    );
    m.recordFailure('iptables');
    m.recordFailure('nftables');
    m.recordFailure('nftables');
    const server = await serveMetrics(m, '127.0.0.1', 0);
    closers.push(() => server.close());
    const text = await (await fetch(`http://127.0.0.1:${portOf(server)}/metrics`)).text();
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_count 2');
    expect(text).toContain('kubeproxy_sync_full_proxy_rules_duration_seconds_count 1');
    expect(text).toContain('kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.016"} 2');
    expect(text).toContain('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004"} 1');
    expect(text).toContain('kubeproxy_network_programming_duration_seconds_bucket{le="1"} 0');
    expect(text).toContain('kubeproxy_network_programming_duration_seconds_bucket{le="2"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_endpoint_changes_total 4');
    expect(text).toContain('kubeproxy_sync_proxy_rules_service_changes_total 2');
    expect(text).toContain('kubeproxy_sync_proxy_rules_iptables_restore_failures_total 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_nftables_sync_failures_total 2');
    expect(text).toContain('kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"} 1');
    expect(text).toContain('kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external"} 0');
    expect(text).toMatch(new RegExp(`kubeproxy_sync_proxy_rules_last_timestamp_seconds ${Math.floor(now / 1000)}`));
    expect(text).toContain('process_resident_memory_bytes');
    expect(text).toContain('nodejs_heap_size_used_bytes');
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
});
