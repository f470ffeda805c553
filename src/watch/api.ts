// The API source: Services, EndpointSlices and this node's Node from the Kubernetes API server, each kept by a
// reflector (api-reflector.ts: list, then watch, and how each failure is recovered from).
//
// Selection is kube-proxy's: Services and EndpointSlices without the service-proxy-name label (those are
// for another proxy) and without the headless label; the Node by field selector metadata.name=<hostname>.
//
// Delivery: each resource's list arrives on its own, as it is read: in parts to a handler that takes a list in
// parts (SourceHandler.listing: the daemon's model, so that nothing of a list is held until its end), else as
// one onList of its kind once it is read; then its watch events as onEvent. start() resolves once all three
// have listed. A relist of one of them (after 410 Gone) arrives the same way, with the full new set of that
// kind. A failed list is never ended: nothing is deleted because of it, what the proxy programmed stays in place
// while the API server is unreachable, and the next complete list replaces it. No object is kept here.
//
// The HTTP client (api-client.ts) and the reflectors are imported when start() runs, not with this module, so
// the file-based commands (and --dry-run) do not load them.
import { log } from '../log.ts';
import { HEADLESS_LABEL, type KubeObject, SERVICE_PROXY_NAME_LABEL } from '../model/k8s.ts';
import type { Reflector, ReflectorStats, ReflectorTimings, ResourceSpec } from './api-reflector.ts';
import type { ApiClient, RequestObserver } from './api-client.ts';
import type { ListSink, Source, SourceHandler } from './types.ts';
import type { EventRecorder } from './api-events.ts';
import { loadKubeConfig } from './kubeconfig.ts';

export { KubeConfigError, loadKubeConfig } from './kubeconfig.ts';

/** kube-proxy's label selector for Services and EndpointSlices. */
export const PROXY_LABEL_SELECTOR = `!${SERVICE_PROXY_NAME_LABEL},!${HEADLESS_LABEL}`;

export interface ApiSourceOptions extends Partial<ReflectorTimings> {
  /** kubeconfig file; null: the in-cluster config (service account token, KUBERNETES_SERVICE_HOST/PORT). */
  kubeconfig: string | null;
  /** --master: the API server's URL, replacing the kubeconfig's. */
  master?: string | null;
  /** This node's name (the Node to watch). */
  hostname: string;
  /** clientConnection.qps and burst (qps <= 0 or absent: no limit; the daemon passes the configuration's, 5 and 10 by default). */
  qps?: number;
  burst?: number;
  /** Only objects with this service-proxy-name label (default: those without the label). */
  serviceProxyName?: string;
  /** Ask for Service and EndpointSlice lists in protobuf (default: JSON); see resourceSpecs. */
  protobuf?: boolean;
  /** Told about every request (the rest_client_* metrics). */
  observer?: RequestObserver | null;
}

export const DEFAULT_TIMINGS: ReflectorTimings = {
  backoffInitialMs: 800,
  backoffMaxMs: 30_000,
  silentWatchMs: 90_000,
  watchTimeoutSeconds: null,
  listTimeoutMs: 60_000,
};

/** An Event recorder for this node, through the same kubeconfig (and --master) as the source. */
export async function createEventRecorder(
  o: { kubeconfig: string | null; master?: string | null; hostname: string },
  observer: RequestObserver | null = null,
): Promise<EventRecorder> {
  const access = await loadKubeConfig(o.kubeconfig, o.master ?? null);
  const [{ ApiClient, TokenBucket }, { EventRecorder }] = await Promise.all([import('./api-client.ts'), import('./api-events.ts')]);
  return new EventRecorder(new ApiClient(access, { limiter: new TokenBucket(0, 1), observer }), o.hostname);
}

/**
 * kube-proxy's selector for Services and EndpointSlices: without the service-proxy-name label, or with it equal
 * to serviceProxyName when that is set (upstream's serviceProxyName), and never headless.
 */
export function proxyLabelSelector(serviceProxyName = ''): string {
  return serviceProxyName === '' ? PROXY_LABEL_SELECTOR : `${SERVICE_PROXY_NAME_LABEL}=${serviceProxyName},!${HEADLESS_LABEL}`;
}

/** The EndpointSlice API version an API server serves: v1 since Kubernetes 1.21, v1beta1 before. */
export type SliceVersion = 'v1' | 'v1beta1';

/**
 * What the API source reads. With `protobuf`, the Service and EndpointSlice (v1) lists are asked for in protobuf, as
 * kube-proxy asks (watch/protobuf.ts): the answers are about half the bytes of JSON and are read without building
 * what the proxy does not keep. The Node list (one object) and the watches stay JSON.
 */
export function resourceSpecs(hostname: string, serviceProxyName = '', protobuf = false): ResourceSpec[] {
  const labelSelector = proxyLabelSelector(serviceProxyName);
  const lists = protobuf ? { protobufLists: true } : {};
  const slices = (version: SliceVersion): ResourceSpec => ({
    kind: 'EndpointSlice',
    apiVersion: `discovery.k8s.io/${version}`,
    path: `/apis/discovery.k8s.io/${version}/endpointslices`,
    labelSelector,
  });
  return [
    { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', labelSelector, ...lists },
    // API servers before 1.21 serve EndpointSlices as v1beta1 only (404 for v1); the model reads both.
    { ...slices('v1'), ...lists, fallback: slices('v1beta1') },
    { kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes', fieldSelector: `metadata.name=${hostname}` },
  ];
}

export class ApiSource implements Source {
  readonly kubeconfig: string | null;
  readonly master: string | null;
  readonly hostname: string;
  readonly serviceProxyName: string;
  readonly protobuf: boolean;
  readonly timings: ReflectorTimings;
  readonly qps: number;
  readonly burst: number;
  readonly observer: RequestObserver | null;

  private reflectors: Reflector[] = [];
  private client: ApiClient | null = null;
  private handler: SourceHandler | null = null;
  private synced = false;
  private stopped = false;
  private resolveStart: (() => void) | null = null;
  private rejectStart: ((err: Error) => void) | null = null;

  constructor(opts: ApiSourceOptions) {
    this.kubeconfig = opts.kubeconfig;
    this.master = opts.master ?? null;
    this.hostname = opts.hostname;
    this.serviceProxyName = opts.serviceProxyName ?? '';
    this.protobuf = opts.protobuf ?? false;
    this.qps = opts.qps ?? 0;
    this.burst = opts.burst ?? 1;
    this.observer = opts.observer ?? null;
    const t: Record<string, unknown> = { ...DEFAULT_TIMINGS };
    for (const k of Object.keys(DEFAULT_TIMINGS) as (keyof ReflectorTimings)[]) {
      if (opts[k] !== undefined) t[k] = opts[k];
    }
    this.timings = t as unknown as ReflectorTimings;
  }

  /** Counters per resource (lists, watches, restarts, silent watches, errors). */
  get stats(): Record<string, ReflectorStats> {
    return Object.fromEntries(this.reflectors.map((r) => [r.spec.kind, { ...r.stats }]));
  }

  /** True once every resource has listed (start() has resolved). */
  get hasSynced(): boolean {
    return this.synced;
  }

  /**
   * Lists everything, each resource delivered as its own onList, and resolves; keeps retrying (with backoff, each failure
   * reported to onError) until the API server answers. Rejects if the config cannot be loaded or stop() is
   * called first.
   */
  async start(handler: SourceHandler): Promise<void> {
    if (this.handler || this.stopped) throw new Error(`the API source was already ${this.stopped ? 'stopped' : 'started'}`);
    this.handler = handler;
    const access = await loadKubeConfig(this.kubeconfig, this.master);
    const [{ Reflector }, { ApiClient, TokenBucket }] = await Promise.all([import('./api-reflector.ts'), import('./api-client.ts')]);
    if (this.stopped) throw new Error('the API source was stopped before the initial list');
    // One limiter for every request of the source, as client-go's per-client rate limiter.
    const client = new ApiClient(access, { limiter: new TokenBucket(this.qps, this.burst), observer: this.observer });
    this.client = client;
    log.info({ event: 'api-source', server: access.server, hostname: this.hostname }, 'watching the API server');
    const hooks = {
      listing: (r: Reflector) => this.listing(r),
      changed: (_r: Reflector, type: 'add' | 'update' | 'delete', object: KubeObject) => this.deliver(() => handler.onEvent({ type, object })),
      error: (err: Error) => this.reportError(err),
      notServed: (old: Reflector) => {
        const spec = old.spec.fallback!;
        log.info(
          { event: 'api-version-fallback', resource: spec.kind, apiVersion: spec.apiVersion },
          `the API server serves ${spec.kind} as ${spec.apiVersion}`,
        );
        void old.stop();
        const next = new Reflector(client, spec, this.timings, hooks);
        this.reflectors = this.reflectors.map((r) => (r === old ? next : r));
        if (!this.stopped) next.start();
      },
    };
    const done = new Promise<void>((resolve, reject) => {
      this.rejectStart = reject;
      this.resolveStart = resolve;
    });
    this.reflectors = resourceSpecs(this.hostname, this.serviceProxyName, this.protobuf).map((spec) => new Reflector(client, spec, this.timings, hooks));
    for (const r of this.reflectors) r.start();
    await done;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(this.reflectors.map((r) => r.stop()));
    this.client?.close();
    this.rejectStart?.(new Error('the API source was stopped before the initial list'));
    this.rejectStart = null;
  }

  /**
   * A resource's list starts: its parts go to the handler's sink (or are gathered for one onList); once every
   * resource has listed, start() resolves.
   */
  private listing(r: Reflector): ListSink {
    const handler = this.handler!;
    const kind = r.spec.kind;
    let sink: ListSink | null = null;
    const gathered: KubeObject[] = [];
    this.deliver(() => {
      sink = handler.listing?.(kind) ?? null;
    });
    return {
      add: (objects) => {
        if (sink) this.deliver(() => sink!.add(objects));
        else for (const o of objects) gathered.push(o);
      },
      end: () => {
        this.deliver(() => (sink ? sink.end() : handler.onList(gathered, [kind])));
        this.listed();
      },
    };
  }

  /** A resource has listed: once every resource has, start() resolves. */
  private listed(): void {
    if (this.stopped || !this.handler) return;
    if (!this.synced && this.reflectors.every((x) => x.listed)) {
      this.synced = true;
      this.resolveStart?.();
      this.resolveStart = null;
      this.rejectStart = null;
    }
  }

  /** Calls the handler; its exceptions are reported, never thrown into the reflectors. */
  private deliver(fn: () => void): void {
    if (this.stopped) return;
    try {
      fn();
    } catch (e) {
      this.reportError(new Error(`the source handler threw: ${(e as Error).message}`));
    }
  }

  private reportError(err: Error): void {
    if (this.stopped) return;
    try {
      this.handler?.onError?.(err);
    } catch (e) {
      log.error({ event: 'source-handler-error', err: (e as Error).message }, 'the source error handler threw');
    }
  }
}
