// Running the proxy: source -> model -> sync loop -> mode, until SIGTERM/SIGINT. Rules stay in place on exit,
// as kube-proxy leaves them, so a restart causes no traffic gap.
import type { Server } from 'node:http';
import type { RunOptions } from '../config.ts';
import { log } from '../log.ts';
import type { KubeObject } from '../model/k8s.ts';
import { formatIssue } from '../model/parse.ts';
import { type ApplyOutcome, ClusterState, buildState } from '../model/store.ts';
import { createProxier } from '../modes/index.ts';
import { MODES, type Proxier } from '../modes/types.ts';
import { ApiSource } from '../watch/api.ts';
import { FileSource, readObjectsFile } from '../watch/file.ts';
import type { Source } from '../watch/types.ts';
import { ConntrackCleaner } from './conntrack.ts';
import { ProxierHealth, ServiceHealthServers, serveHealth } from './health.ts';
import { SyncLoop } from '../sync/loop.ts';
import { ProxyMetrics, serveMetrics } from './metrics.ts';

function reportOutcome(object: string, r: ApplyOutcome): void {
  if (r.kind === 'invalid') for (const i of r.issues) log.warn({ event: 'invalid-object', object: i.object, field: i.field }, `left out: ${formatIssue(i)}`);
  else if (r.kind === 'skipped') log.debug({ object, reason: r.reason }, 'skipped');
}

function makeSource(opts: RunOptions): Source {
  if (opts.from) return new FileSource(opts.from);
  return new ApiSource({ kubeconfig: opts.kubeconfig, hostname: opts.proxy.hostname });
}

/** One complete list of the objects, from the file or the API server. */
async function listOnce(opts: RunOptions): Promise<KubeObject[]> {
  if (opts.from) return readObjectsFile(opts.from);
  const source = makeSource(opts);
  let objects: KubeObject[] = [];
  await source.start({
    onList: (list) => {
      objects = list;
    },
    onEvent: () => {},
    onError: (err) => log.warn({ event: 'source-error', err: err.message }, 'API source error; retrying'),
  });
  await source.stop();
  return objects;
}

/** --dry-run: the complete rules for this node, on stdout; invalid objects reported on stderr. */
export async function dryRun(opts: RunOptions, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const objects = await listOnce(opts);
  const { state, issues } = buildState(objects, opts.proxy);
  for (const i of issues) process.stderr.write(`left out: ${formatIssue(i)}\n`);
  const proxier = createProxier(opts.mode, { config: opts.proxy, iptablesBackend: opts.iptablesBackend });
  out.write(proxier.dryRun(state));
  await proxier.close();
  return 0;
}

/** --cleanup: every mode's rules (and kube-proxy's leftovers) removed. */
export async function cleanupAll(opts: RunOptions): Promise<number> {
  let failed = 0;
  for (const mode of MODES) {
    let p: Proxier | null = null;
    try {
      p = createProxier(mode, { config: opts.proxy, iptablesBackend: opts.iptablesBackend });
      await p.cleanup();
      log.info({ event: 'cleanup', mode }, `removed the ${mode} mode's rules`);
    } catch (e) {
      failed++;
      log.error({ event: 'cleanup-failed', mode, err: (e as Error).message }, `cleanup of the ${mode} mode failed`);
    } finally {
      await p?.close().catch(() => {});
    }
  }
  return failed === 0 ? 0 : 1;
}

export async function runProxy(opts: RunOptions): Promise<number> {
  const proxier = createProxier(opts.mode, { config: opts.proxy, iptablesBackend: opts.iptablesBackend });
  const cluster = new ClusterState(opts.proxy);
  const metrics = new ProxyMetrics();
  const conntrack = new ConntrackCleaner();
  // The loop's callbacks run only after start(), when the health objects below exist.
  const loop = new SyncLoop({
    proxier,
    cluster,
    minSyncPeriodMs: opts.minSyncPeriodMs,
    syncPeriodMs: opts.syncPeriodMs,
    async onSynced(e) {
      metrics.recordSync(e, e.state);
      await serviceHealth.sync(e.state);
      const before = conntrack.failures;
      await conntrack.afterSync(e.state, e.changes);
      if (conntrack.failures > before) metrics.conntrackCleanupFailures.inc(conntrack.failures - before);
    },
    onFailed() {
      metrics.recordFailure(opts.mode);
    },
  });
  // kube-proxy's health timeout: twice the sync period.
  const health = new ProxierHealth(loop, 2 * opts.syncPeriodMs);
  const serviceHealth = new ServiceHealthServers(health);
  const servers: Server[] = [];
  // The health server answers from the start: unhealthy only once the first sync is overdue.
  if (opts.healthz && opts.healthz.port !== 0) servers.push(await serveHealth(health, opts.healthz.host, opts.healthz.port));
  if (opts.metrics && opts.metrics.port !== 0) servers.push(await serveMetrics(metrics, opts.metrics.host, opts.metrics.port));

  const source = makeSource(opts);
  const changed = () => {
    metrics.lastQueued.set(Date.now() / 1000);
    health.nodeDeleting = cluster.current.node?.deleting ?? false;
    loop.request();
  };
  await source.start({
    onList(objects: KubeObject[]) {
      for (const p of cluster.replaceAll(objects)) reportOutcome(p.object, p.outcome);
      changed();
    },
    onEvent(e) {
      const o = e.object;
      if (e.type === 'delete') {
        const ns = o.metadata?.namespace ?? 'default';
        const name = o.metadata?.name ?? '';
        if (o.kind === 'Service') cluster.deleteService(ns, name);
        else if (o.kind === 'EndpointSlice') cluster.deleteEndpointSlice(ns, name);
        else if (o.kind === 'Node' && name === opts.proxy.hostname) cluster.setNode(null);
      } else reportOutcome(`${o.kind} ${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`, cluster.upsert(o));
      changed();
    },
    onError(err) {
      log.warn({ event: 'source-error', err: err.message }, 'source error; the last good state stays in force');
    },
  });
  log.info({ event: 'starting', mode: opts.mode, hostname: opts.proxy.hostname, source: opts.from ?? 'api' }, 'kube-proxy-ts starting');
  loop.start();
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ event: 'stopping', signal: sig }, 'stopping; rules stay in place');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await loop.stop();
  await source.stop();
  await serviceHealth.close();
  for (const s of servers) s.close();
  await proxier.close();
  return 0;
}
