// Running the proxy: source -> model -> sync loop -> mode, until SIGTERM/SIGINT. Rules stay in place on exit,
// as kube-proxy leaves them, so a restart causes no traffic gap.
import { existsSync } from 'node:fs';
import { writeChunks } from '../one-shot.ts';
import { type RunOptions, primaryNodePortAddresses } from '../config.ts';
import { collectGarbage, releaseGarbage } from '../memory.ts';
import { log } from '../log.ts';
import type { KubeObject, WatchedKind } from '../model/k8s.ts';
import { issueLine } from '../model/parse.ts';
import { type ApplyOutcome, ClusterState, buildState } from '../model/store.ts';
import { FAMILIES } from '../model/addr.ts';
import type { DesiredState, IPFamily } from '../model/types.ts';
import { createProxier, modeDefinition } from '../modes/index.ts';
import { MODES, type Proxier } from '../modes/types.ts';
import { ApiSource, createEventRecorder, loadKubeConfig, resourceSpecs } from '../watch/api.ts';
import { FileSource, type FirstRead, readObjectsFile } from '../watch/file.ts';
import type { ListSink, Source } from '../watch/types.ts';
import { ConntrackCleaner } from './conntrack.ts';
import { type DebugOptions, type FamilyView, type SyncRecord, handleDebug } from './debug.ts';
import { ProxierHealth, ServiceHealthServers, healthCheckHosts, serveHealth, startServer } from './health.ts';
import { NodeWatch, nodeHostIPs, nodePodCIDRs } from './node-watch.ts';
import { hostPort } from '../model/addr.ts';
import type { RequestObserver } from '../watch/api-client.ts';
import { SyncLoop } from '../sync/loop.ts';
import { ProxyMetrics, serveMetrics } from './metrics.ts';
import { Takeover } from './takeover.ts';

function reportOutcome(object: string, r: ApplyOutcome): void {
  if (r.kind === 'invalid') for (const i of r.issues) log.warn({ event: 'invalid-object', object: i.object, field: i.field }, issueLine(i));
  else if (r.kind === 'skipped') log.debug({ event: 'skipped', object, reason: r.reason }, 'skipped');
}

function makeSource(opts: RunOptions, observer: RequestObserver | null = null, first: FirstRead | null = null): Source {
  if (opts.from) return new FileSource(opts.from, { first });
  return new ApiSource({ kubeconfig: opts.kubeconfig, hostname: opts.proxy.hostname, ...opts.api, observer });
}

/** One complete list of the objects, from the file or the API server. */
async function listOnce(opts: RunOptions): Promise<KubeObject[]> {
  if (opts.from) return readObjectsFile(opts.from);
  const source = makeSource(opts);
  // The API source hands over each kind's list on its own: the last list of each kind is what there is.
  const byKind = new Map<string, KubeObject[]>();
  await source.start({
    onList: (list, kinds) => {
      byKind.set(kinds?.join() ?? '', list);
    },
    onEvent: () => {},
    onError: (err) => log.warn({ event: 'source-error', err: err.message }, 'API source error; retrying'),
  });
  await source.stop();
  return [...byKind.values()].flat();
}

const isNodeNamed = (name: string) => (o: KubeObject) => o.kind === 'Node' && o.metadata?.name === name;

/**
 * This node's Node object once, for what must be known before the pipelines are built (nodePortAddresses
 * `primary`): from the file, or one GET from the API server (retried a few times); null when there is none.
 */
async function fetchThisNode(opts: RunOptions, first: FirstRead | null): Promise<KubeObject | null> {
  if (opts.from) return (first?.read.objects ?? (await readObjectsFile(opts.from))).find(isNodeNamed(opts.proxy.hostname)) ?? null;
  const access = await loadKubeConfig(opts.kubeconfig, opts.api.master ?? null);
  // Loaded only here: file-source runs never need the API client.
  const [{ listObjects }, { ApiClient }] = await Promise.all([import('../watch/api-reflector.ts'), import('../watch/api-client.ts')]);
  const client = new ApiClient(access);
  const spec = resourceSpecs(opts.proxy.hostname).find((r) => r.kind === 'Node')!;
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        return (await listObjects(client, spec, AbortSignal.timeout(10_000))).items[0] ?? null;
      } catch (e) {
        if (attempt >= 5) throw e;
        log.warn({ event: 'node-fetch-failed', attempt, err: (e as Error).message }, 'could not read this node; retrying');
        await new Promise((r) => setTimeout(r, 2_000 * attempt));
      }
    }
  } finally {
    client.close();
  }
}

/**
 * nodePortAddresses `primary` (upstream's default in nftables mode): NodePorts on this node's primary IPs, from
 * its Node object, resolved once at start (a change of the node's IPs restarts the proxy: daemon/node-watch.ts).
 * Without a Node or its addresses, every local address, as upstream falls back.
 */
function withPrimaryNodePorts(opts: RunOptions, node: KubeObject | null): RunOptions {
  if (!opts.nodePortAddressesPrimary) return opts;
  const cidrs = primaryNodePortAddresses(nodeHostIPs(node), opts.nodeIPOverride);
  if (cidrs.length === 0) {
    log.warn(
      { event: 'nodeport-addresses-primary' },
      'nodePortAddresses primary: no IP known for this node (no Node object or no addresses): NodePorts on every local address',
    );
    return opts;
  }
  log.info({ event: 'nodeport-addresses-primary', cidrs }, `NodePorts on this node's primary IPs: ${cidrs.join(', ')}`);
  return { ...opts, proxy: { ...opts.proxy, nodePortAddresses: cidrs } };
}

/**
 * --detect-local-mode NodeCIDR: the Node's spec.podCIDRs become the local detector's CIDRs, fixed for the life of
 * the process (node-watch.ts restarts it when they change), as upstream.
 */
function withNodePodCIDRs(opts: RunOptions, node: KubeObject | null): RunOptions {
  if (opts.proxy.detectLocal?.mode !== 'NodeCIDR') return opts;
  const podCIDRs = nodePodCIDRs(node);
  log.info({ event: 'detect-local-node-cidr', podCIDRs }, `local traffic: from this node's podCIDRs ${podCIDRs.join(', ') || '(none)'}`);
  return { ...opts, proxy: { ...opts.proxy, detectLocal: { mode: 'NodeCIDR', podCIDRs } } };
}

/** upstream's timeoutForNodePodCIDR: how long the start waits for the Node's podCIDRs under NodeCIDR. */
const POD_CIDR_WAIT_MS = 5 * 60_000;

/**
 * This node's Node as the start needs it: for nodePortAddresses `primary`, and under detect-local-mode NodeCIDR
 * until it has podCIDRs (upstream's waitForPodCIDR; a file source is taken as it is).
 */
async function nodeForStart(opts: RunOptions, first: FirstRead | null): Promise<KubeObject | null> {
  const nodeCIDR = opts.proxy.detectLocal?.mode === 'NodeCIDR';
  if (!opts.nodePortAddressesPrimary && !nodeCIDR) return null;
  const deadline = Date.now() + POD_CIDR_WAIT_MS;
  for (;;) {
    const node = await fetchThisNode(opts, first);
    if (!nodeCIDR || opts.from || nodePodCIDRs(node).length > 0) return node;
    if (Date.now() > deadline) throw new Error('timeout waiting for PodCIDR allocation to configure detect-local-mode NodeCIDR');
    log.info({ event: 'detect-local-node-cidr' }, `waiting for this node's podCIDR allocation (detect-local-mode NodeCIDR)`);
    await new Promise((r) => setTimeout(r, 5_000));
  }
}

/** The families this node can serve: IPv6 too when the kernel has it (as upstream, which checks its tools per family). */
export function nodeFamilies(): IPFamily[] {
  if (existsSync('/proc/sys/net/ipv6')) return ['IPv4', 'IPv6'];
  log.warn({ event: 'no-ipv6' }, 'the kernel has no IPv6: serving IPv4 only');
  return ['IPv4'];
}

/**
 * --dry-run: the complete rules for this node, on stdout; invalid objects reported on stderr. With
 * --ip-family, that family's rules; without, both families where the mode's output can hold both (nftables),
 * else IPv4 with a note on stderr when IPv6 service ports exist.
 *
 * Its memory: the objects read are garbage before anything is rendered (dryRunStates); each family's rules
 * are written as they are rendered (writeChunks), and a family's state and what its rendering made are
 * garbage, and collected, before the next family is rendered.
 */
export async function dryRun(given: RunOptions, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const { opts, states, unprintedIPv6 } = await dryRunStates(given);
  const def = modeDefinition(opts.mode);
  const proxiers: Proxier[] = [];
  // A family's rules as they are rendered; its state leaves the map (and becomes garbage once rendered).
  function* rules(family: IPFamily): Generator<string> {
    const state = states.get(family)!;
    states.delete(family);
    collectGarbage();
    const proxier = createProxier(opts.mode, { config: opts.proxy, iptablesBackend: opts.iptablesBackend, family });
    proxiers.push(proxier);
    yield* proxier.dryRunChunks(state);
  }
  try {
    const [first, second] = [...states.keys()];
    await writeChunks(out, second ? def.dryRun.combine!(rules(first!), rules(second)) : rules(first!));
  } finally {
    for (const p of proxiers) await p.close();
  }
  if (unprintedIPv6 > 0) {
    process.stderr.write(
      `note: these are the IPv4 rules; ${unprintedIPv6} IPv6 service port(s) exist: run again with --ip-family IPv6 for the IPv6 rules (load them with ${def.dryRun.loadCommand('IPv6', 'FILE').join(' ')})\n`,
    );
  }
  return 0;
}

/**
 * What --dry-run renders: the options completed from this node's Node object, and the state of each family it
 * prints, in output order (the one asked for; else both when the mode's output holds both, else IPv4, with the
 * number of IPv6 service ports left out). The objects read live in this function only: once it returns they
 * are garbage, before anything is rendered (a variable set to null in the caller would not do: its suspended
 * frame keeps what it awaited).
 */
async function dryRunStates(given: RunOptions): Promise<{ opts: RunOptions; states: Map<IPFamily, DesiredState>; unprintedIPv6: number }> {
  const objects = await listOnce(given);
  const node = objects.find(isNodeNamed(given.proxy.hostname)) ?? null;
  const opts = withNodePodCIDRs(withPrimaryNodePorts(given, node), node);
  const printed: readonly IPFamily[] = opts.ipFamily ? [opts.ipFamily] : modeDefinition(opts.mode).dryRun.combine ? FAMILIES : ['IPv4'];
  const states = new Map<IPFamily, DesiredState>();
  for (const family of printed) {
    const { state, issues } = buildState(objects, opts.proxy, family);
    // Invalid objects are the same for both families: report them once.
    if (family === printed[0]) for (const i of issues) process.stderr.write(`${issueLine(i)}\n`);
    states.set(family, state);
  }
  const unprintedIPv6 = printed.includes('IPv6') ? 0 : buildState(objects, opts.proxy, 'IPv6').state.servicePorts.size;
  return { opts, states, unprintedIPv6 };
}

/** --cleanup: every mode's rules (and kube-proxy's leftovers) removed, in both families. */
export async function cleanupAll(opts: RunOptions): Promise<number> {
  let failed = 0;
  for (const mode of MODES) {
    for (const family of FAMILIES) {
      let p: Proxier | null = null;
      try {
        p = createProxier(mode, { config: opts.proxy, iptablesBackend: opts.iptablesBackend, family });
        await p.cleanup();
        log.info({ event: 'cleanup', mode, family }, `removed the ${mode} mode's ${family} rules`);
      } catch (e) {
        failed++;
        log.error({ event: 'cleanup-failed', mode, family, err: (e as Error).message }, `cleanup of the ${mode} mode's ${family} rules failed`);
      } finally {
        await p?.close().catch(() => {});
      }
    }
  }
  return failed === 0 ? 0 : 1;
}

/** One family's pipeline: its model, its proxier and its sync loop (upstream's meta-proxier composes two). */
interface FamilyPipeline {
  family: IPFamily;
  cluster: ClusterState;
  proxier: Proxier;
  loop: SyncLoop;
  conntrack: ConntrackCleaner;
  /** The state the last successful sync applied. */
  applied: DesiredState | null;
  lastSync: SyncRecord | null;
}

/** What the debug endpoints read from a pipeline. */
function familyView(p: FamilyPipeline): FamilyView {
  return {
    family: p.family,
    current: () => p.cluster.current,
    applied: () => p.applied,
    lastSync: () => p.lastSync,
    render: (state) => p.proxier.dryRun(state),
    drift: () => p.proxier.drift?.() ?? null,
  };
}

let startupGarbageReleased = false;

/** A last-resort collection (src/memory.ts), logged as `event` with the resident size before and after. */
function releaseGarbageLogged(event: string, message: string): void {
  const before = process.memoryUsage().rss;
  const ms = releaseGarbage();
  if (ms === null) return;
  log.info({ event, ms: Math.round(ms), rssBeforeMB: Math.round(before / 2 ** 20), rssAfterMB: Math.round(process.memoryUsage().rss / 2 ** 20) }, message);
}

/**
 * Once every family has synced for the first time: the list answers and the first full sync are the process's
 * biggest burst of allocation, and V8 would keep the heap (and the resident size) at that height until memory
 * pressure made it collect; the process is idle between changes, so that may never happen.
 */
function releaseStartupGarbage(): void {
  if (startupGarbageReleased) return;
  startupGarbageReleased = true;
  releaseGarbageLogged('startup-gc', 'released the garbage of the first sync');
}

/**
 * Runs the proxy until it is stopped. first: the --from file as the start-up already read it (cli.ts checks
 * it before touching the node), so that a large file is not read again for the Node and the first list.
 */
export async function runProxy(given: RunOptions, first: FirstRead | null = null): Promise<number> {
  const startNode = await nodeForStart(given, first);
  const opts = withNodePodCIDRs(withPrimaryNodePorts(given, startNode), startNode);
  const families = nodeFamilies();
  const metrics = new ProxyMetrics({ families });
  const synced = new Map<IPFamily, DesiredState>();
  const pipelines: FamilyPipeline[] = families.map((family) => {
    const cluster = new ClusterState(opts.proxy, family);
    const proxier = createProxier(opts.mode, { config: opts.proxy, iptablesBackend: opts.iptablesBackend, family });
    const conntrack = new ConntrackCleaner(family, 'conntrack', (seconds, deleted) => metrics.conntrackReconciled(family, seconds, deleted));
    const p: FamilyPipeline = { family, cluster, proxier, conntrack, loop: null as unknown as SyncLoop, applied: null, lastSync: null };
    // The loop's callbacks run only after start(), when the health objects below exist.
    p.loop = new SyncLoop({
      proxier,
      cluster,
      minSyncPeriodMs: opts.minSyncPeriodMs,
      syncPeriodMs: opts.syncPeriodMs,
      async onSynced(e) {
        p.applied = e.state;
        p.lastSync = { at: new Date(), outcome: 'ok' };
        metrics.recordSync(e, e.state, family);
        synced.set(family, e.state);
        if (synced.size === families.length) releaseStartupGarbage();
        takeover.synced(family);
        await serviceHealth.sync(synced.values());
        const before = conntrack.failures;
        conntrack.afterSync(e.state, e.changes);
        if (conntrack.failures > before) metrics.conntrackCleanupFailures.inc(conntrack.failures - before);
      },
      onFailed(err, full) {
        p.lastSync = { at: new Date(), outcome: 'failed', error: err.message };
        metrics.recordFailure(modeDefinition(opts.mode).failureMetric, family, full);
        health.syncFailed(family);
      },
    });
    return p;
  });
  const loops = pipelines.map((p) => p.loop);
  // What other data paths left (another mode's, upstream kube-proxy's) goes once this one is programmed in every family.
  const takeover = new Takeover({
    mode: opts.mode,
    families: pipelines.map((p) => p.family),
    modeOptions: { config: opts.proxy, iptablesBackend: opts.iptablesBackend },
  });
  const [primary] = pipelines as [FamilyPipeline, ...FamilyPipeline[]];
  // This node's Node: /healthz eligibility, and (from the API server) a restart when it is deleted or its IPs change.
  const detect = opts.proxy.detectLocal;
  const nodeWatch = new NodeWatch({ watched: !opts.from, ...(detect?.mode === 'NodeCIDR' ? { podCIDRs: detect.podCIDRs ?? [] } : {}) });
  const isThisNode = isNodeNamed(opts.proxy.hostname);
  // kube-proxy's health timeout: twice the sync period.
  const health = new ProxierHealth({ families: new Map(pipelines.map((p) => [p.family, p.loop])), timeoutMs: 2 * opts.syncPeriodMs, node: nodeWatch });
  const serviceHealth = new ServiceHealthServers(health, () => healthCheckHosts(opts.proxy.nodePortAddresses));
  const servers: { close(): void }[] = [];
  // Kubernetes Events about this node, as upstream records them (API source only).
  const events = opts.from ? null : await createEventRecorder({ ...opts.api, kubeconfig: opts.kubeconfig, hostname: opts.proxy.hostname }, metrics.requests);
  const event = (type: 'Normal' | 'Warning', reason: string, note = '') => void events?.record(type, reason, 'StartKubeProxy', note);
  event('Normal', 'Starting');
  // The health server answers from the start: unhealthy only once the first sync is overdue (or failed).
  if (opts.healthz && opts.healthz.port !== 0) {
    const { host, port } = opts.healthz;
    const serve = () => serveHealth(health, host, port, metrics.recordHealth);
    servers.push(
      await startServer('healthz', hostPort(host, port), serve, opts.bindAddressHardFail, (e) =>
        event('Warning', 'FailedToStartProxierHealthcheck', e.message),
      ),
    );
  }
  // The debug endpoints live on the metrics address (localhost by default), never on the public health port.
  const debug: DebugOptions = { families: pipelines.map(familyView), combine: modeDefinition(opts.mode).dryRun.combine };
  if (opts.metrics && opts.metrics.port !== 0) {
    const { host, port } = opts.metrics;
    const serve = () =>
      serveMetrics(metrics, host, port, { extra: (req, res) => handleDebug(req, res, debug), proxyMode: opts.mode, configz: opts.configuration });
    servers.push(
      await startServer('metrics', hostPort(host, port), serve, opts.bindAddressHardFail, (e) => event('Warning', 'FailedToStartMetricServer', e.message)),
    );
  }

  const source = makeSource(opts, metrics.requests, first);
  // As upstream's per-family change trackers: a family syncs only when its own model changed (an IPv4-only
  // Service or an IPv4 EndpointSlice is nothing to the IPv6 table). Both models see every object; each counts
  // what changed it (ClusterState.revision).
  const requested = new Map(pipelines.map((p) => [p, p.cluster.revision]));
  const changed = (objects: readonly KubeObject[]) => {
    const touched = pipelines.filter((p) => p.cluster.revision !== requested.get(p));
    for (const p of touched) requested.set(p, p.cluster.revision);
    metrics.queued(
      objects,
      touched.map((p) => p.family),
    );
    for (const p of touched) p.loop.request();
  };
  // Every object goes to every family's model; what is wrong with an object is the same in each: report it once.
  // A list (of `kinds`; every kind when absent) goes into each family's model part by part as it arrives.
  const listInto = (kinds?: readonly WatchedKind[]): ListSink => {
    const lists = pipelines.map((p) => ({ p, list: p.cluster.listing(kinds) }));
    const listsNode = !kinds || kinds.includes('Node');
    let node: KubeObject | null = null;
    return {
      add(objects) {
        if (listsNode) node = objects.find(isThisNode) ?? node;
        for (const { p, list } of lists) {
          const problems = list.add(objects);
          if (p === primary) for (const x of problems) reportOutcome(x.object, x.outcome);
        }
        changed(objects);
      },
      end() {
        if (listsNode) nodeWatch.observe(node);
        for (const { list } of lists) list.end();
        changed([]);
      },
    };
  };
  /** Every kind has been listed once: a list from now on is a relist. */
  let listed = false;
  await source.start({
    onList(objects, kinds) {
      const list = listInto(kinds);
      list.add(objects);
      list.end();
    },
    // A list read in parts (the API source) is applied as it arrives: nothing of it is held to its end. A relist
    // (after a 410) reads the whole kind again while the model holds it: its garbage would stay resident for good
    // (10 nodes at 10,000 x 10: 199-248 MB per proxy after one), so it is released as after the first lists.
    listing: (kind) => {
      const list = listInto([kind]);
      if (!listed) return list;
      return {
        add: (objects) => list.add(objects),
        end() {
          list.end();
          releaseGarbageLogged('relist-gc', `released the garbage of relisting ${kind}`);
        },
      };
    },
    onEvent(e) {
      const o = e.object;
      if (isThisNode(o)) nodeWatch.observe(e.type === 'delete' ? null : o);
      if (e.type === 'delete') {
        const ns = o.metadata?.namespace ?? 'default';
        const name = o.metadata?.name ?? '';
        for (const { cluster } of pipelines) {
          if (o.kind === 'Service') cluster.deleteService(ns, name);
          else if (o.kind === 'EndpointSlice') cluster.deleteEndpointSlice(ns, name);
          else if (o.kind === 'Node' && name === opts.proxy.hostname) cluster.setNode(null);
        }
      } else {
        for (const p of pipelines) {
          const outcome = p.cluster.upsert(o);
          if (p === primary) reportOutcome(`${o.kind} ${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`, outcome);
        }
      }
      changed([o]);
    },
    onError(err) {
      log.warn({ event: 'source-error', err: err.message }, 'source error; the last good state stays in force');
    },
  });
  log.info(
    { event: 'starting', mode: opts.mode, families: pipelines.map((p) => p.family), hostname: opts.proxy.hostname, source: opts.from ?? 'api' },
    'kube-proxy-ts starting',
  );
  listed = true;
  // The API lists' garbage goes with the model's, in each family's sync loop before a large first sync (a plain
  // collection, sync/loop.ts): the last-resort one that ran here took 90-100 ms at 10,000 x 10 and flushed compiled
  // code, so the first plan ran slower after it. A file was read whole (tens of MB of text and objects at 10,000
  // services): V8's last-resort collection gives those pages back before the first sync.
  if (opts.from) releaseGarbageLogged('file-gc', 'released the garbage of reading the objects file');
  for (const l of loops) l.start();
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ event: 'stopping', signal: sig }, 'stopping; rules stay in place');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  for (const l of loops) await l.stop();
  await takeover.idle();
  await source.stop();
  await serviceHealth.close();
  for (const s of servers) s.close();
  for (const p of pipelines) {
    await p.conntrack.idle();
    await p.proxier.close();
  }
  return 0;
}
