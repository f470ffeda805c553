// One watched resource (Services, EndpointSlices or this Node): a client-node ListWatch informer wrapped so
// that it never stops for good and never loses what it knows.
//
// What client-node 2.0.1's ListWatch does by itself: list, then watch from the list's resourceVersion; on
// 410 Gone (HTTP status, or an ERROR event followed by the server closing the watch) relist; on a normal end
// of a watch, or a watch idle for 30 s (its Watch's inactivity timeout), resume from the last resourceVersion.
// What it does not, and this wrapper adds:
// - any other failure (a list or watch answered with 5xx, a refused or cut connection) stops the informer:
//   restart it with exponential backoff and jitter (it resumes from its last resourceVersion, or relists);
// - the list call gets the label and field selectors too (ListWatch sends them only on the watch), and is a
//   raw JSON list (with kind and apiVersion filled in for typed-list items);
// - list items and watch events are cut down to the fields the proxy reads before the informer caches them
//   (model/k8s.ts readFields): one slim copy of each object;
// - watches ask for bookmarks and a server-side timeout, and a watch with no event and no bookmark for
//   silentWatchMs is cut and resumed from its last resourceVersion at once;
// - events from a watch that was already replaced are dropped; malformed events are reported, not fatal;
// - our own store of the objects, replaced by each list and kept by the events: a relist is reported as
//   the full new set (never as a diff, never as an empty set because listing failed), and events the
//   informer re-emits for objects already known (same object, same resourceVersion) are dropped.
import {
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  RequestContext,
  Watch,
} from '@kubernetes/client-node';
import { log } from '../log.ts';
import { type ListHead, ListScanner, NotAListError } from './api-list.ts';
import { type KubeObject, readFields } from '../model/k8s.ts';
import type { ApiClient } from './api-client.ts';

/** A watched collection. */
export interface ResourceSpec {
  kind: 'Service' | 'EndpointSlice' | 'Node';
  apiVersion: string;
  /** Cluster-wide collection path, e.g. /api/v1/services. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** What to read instead when the API server does not serve `path` (404): an older API version of the kind. */
  fallback?: ResourceSpec;
}

export interface ReflectorTimings {
  /** First delay before restarting a stopped informer; doubles per consecutive failure. */
  backoffInitialMs: number;
  /** Upper bound of that delay. */
  backoffMaxMs: number;
  /** Cut and resume a watch that delivered no event and no bookmark for this long. */
  silentWatchMs: number;
  /** Upper bound of ListWatch's own pause before re-watching after a watch ended with no events. */
  watchReconnectMaxMs: number;
  /** Server-side watch timeout in seconds; null: a random 300-599 s per watch, as client-go does. */
  watchTimeoutSeconds: number | null;
  /** Give up on a list request after this long (then retried with backoff). */
  listTimeoutMs: number;
}

export interface ReflectorStats {
  /** Successful lists (the first one included). */
  lists: number;
  /** Watch requests made. */
  watches: number;
  /** Restarts after the informer stopped on an error. */
  restarts: number;
  /** Watches cut because they were silent. */
  silentWatches: number;
  /** Errors reported. */
  errors: number;
}

export interface ReflectorHooks {
  /** The store was replaced by a successful list. */
  listed(r: Reflector): void;
  /** The store changed by a watch event. */
  changed(r: Reflector, type: 'add' | 'update' | 'delete', object: KubeObject): void;
  error(err: Error): void;
  /** The API server does not serve the spec's path and the spec has a fallback: the owner replaces this reflector. */
  notServed?(r: Reflector): void;
}

/** An error answer of the API server (status code and its Status message). */
export class ApiStatusError extends Error {
  readonly statusCode: number;
  constructor(statusCode: number, message: string) {
    super(message);
    this.name = 'ApiStatusError';
    this.statusCode = statusCode;
  }
}

type WatchQuery = Record<string, string | number | boolean | undefined>;
type WatchCallback = (phase: string, apiObj: any, watchObj?: any) => void;

function objectKey(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

function isObject(v: unknown): v is Record<string, any> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object a ListWatch can hold: it indexes by metadata.namespace/name and crashes on anything else. */
function hasName(v: unknown): v is KubeObject {
  return isObject(v) && isObject(v.metadata) && typeof v.metadata.name === 'string' && v.metadata.name !== '';
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    const status = (err as { statusCode?: unknown }).statusCode;
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    return `${typeof status === 'number' ? `HTTP ${status} ` : ''}${err.message}${detail}`;
  }
  if (isObject(err) && typeof err.message === 'string') return err.message;
  return String(err);
}

/** A message from an API server error body (a Status object), or the raw start of the body. */
function statusMessage(status: number, text: string): string {
  try {
    const body = JSON.parse(text) as unknown;
    if (isObject(body) && typeof body.message === 'string') return `HTTP ${status}: ${body.message}`;
  } catch {
    // not JSON
  }
  return `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ''}`;
}

/** Waits for the rate limiter, then runs one request, reporting both to the observer (rest_client_* metrics). */
async function limited<T>(
  client: ApiClient | undefined,
  host: string,
  signal: AbortSignal,
  send: () => Promise<T>,
  outcome: (r: T) => { code: string; responseBytes: number | null },
): Promise<T> {
  if (client) {
    const waited = await client.limiter.take(signal);
    client.observer?.rateLimited('GET', host, waited / 1000);
  }
  const started = performance.now();
  const record = (code: string, responseBytes: number | null) =>
    client?.observer?.request({ verb: 'GET', host, code, seconds: (performance.now() - started) / 1000, responseBytes });
  try {
    const r = await send();
    const o = outcome(r);
    record(o.code, o.responseBytes);
    return r;
  } catch (e) {
    const status = (e as { statusCode?: unknown }).statusCode;
    record(typeof status === 'number' ? String(status) : '<error>', null);
    throw e;
  }
}

/**
 * An object as it enters the informer (list item or watch event): its kind and apiVersion filled in (typed
 * lists leave them out), cut down to the fields the proxy reads (model/k8s.ts readFields), so that one
 * slim copy is all the informer's cache, our store and the parse memo hold.
 */
function entering(item: KubeObject, spec: ResourceSpec): KubeObject {
  const o = item as Record<string, unknown>;
  o.kind ??= spec.kind;
  o.apiVersion ??= spec.apiVersion;
  return readFields(item);
}

/**
 * Lists a collection as raw JSON, with client-node's KubeConfig for the server, TLS and credentials.
 * Items enter as entering() makes them; items without a name are dropped.
 */
export async function listObjects(
  kc: KubeConfig,
  spec: ResourceSpec,
  signal: AbortSignal,
  client?: ApiClient,
): Promise<{ resourceVersion: string; items: KubeObject[]; dropped: number }> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + spec.path);
  if (spec.labelSelector) url.searchParams.set('labelSelector', spec.labelSelector);
  if (spec.fieldSelector) url.searchParams.set('fieldSelector', spec.fieldSelector);
  const ctx = new RequestContext(url.toString(), HttpMethod.GET);
  ctx.setHeaderParam('Accept', 'application/json');
  ctx.setSignal(signal);
  const items: KubeObject[] = [];
  let dropped = 0;
  // Items are parsed one at a time as the answer streams in, and cut down at once (api-list.ts).
  const scanner = new ListScanner((item) => {
    if (hasName(item)) items.push(entering(item, spec));
    else dropped++;
  });
  const { resp, errorText } = await limited(
    client,
    url.host,
    signal,
    async () => {
      await kc.applySecurityAuthentication(ctx);
      const resp = await new IsomorphicFetchHttpLibrary().send(ctx).toPromise();
      if (resp.httpStatusCode !== 200) {
        const errorText = await resp.body.text();
        return { resp, errorText, bytes: Buffer.byteLength(errorText) };
      }
      let bytes = 0;
      try {
        for await (const chunk of (resp.body.stream() ?? []) as AsyncIterable<Uint8Array>) {
          bytes += chunk.length;
          scanner.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        }
      } catch (e) {
        if (e instanceof NotAListError) throw new Error(`list ${spec.path}: the answer is not a list: ${e.message}`, { cause: e });
        throw e;
      }
      return { resp, errorText: '', bytes };
    },
    (r) => ({ code: String(r.resp.httpStatusCode), responseBytes: r.bytes }),
  );
  if (resp.httpStatusCode !== 200) throw new ApiStatusError(resp.httpStatusCode, `list ${spec.path}: ${statusMessage(resp.httpStatusCode, errorText)}`);
  let head: ListHead;
  try {
    head = scanner.end();
  } catch (e) {
    throw new Error(`list ${spec.path}: the answer is not a list: ${(e as Error).message}`, { cause: e });
  }
  const { resourceVersion } = head;
  dropped += head.notObjects;
  return { resourceVersion, items, dropped };
}

/** client-node's Watch, with bookmarks, a server-side timeout, silent-watch detection and stale-event guard. */
class GuardedWatch extends Watch {
  private readonly owner: Reflector;
  constructor(kc: KubeConfig, owner: Reflector) {
    super(kc);
    this.owner = owner;
  }

  override async watch(path: string, query: WatchQuery, callback: WatchCallback, done: (err: any) => void): Promise<AbortController> {
    const owner = this.owner;
    if (owner.isStopped) {
      // ListWatch may call us after stop() (it does not check after its reconnect pause).
      const c = new AbortController();
      c.abort();
      return c;
    }
    owner.stats.watches++;
    owner.phase = 'watch';
    let controller: AbortController | null = null;
    let finished = false;
    let silent = false;
    let timer: NodeJS.Timeout | null = null;
    const live = () => !finished && !owner.isStopped && !(controller?.signal.aborted ?? false);
    const arm = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        if (!live()) return;
        silent = true;
        owner.stats.silentWatches++;
        log.info({ event: 'watch-silent', resource: owner.spec.kind, ms: owner.timings.silentWatchMs }, 'watch silent; re-establishing it');
        controller?.abort();
      }, owner.timings.silentWatchMs);
      timer.unref();
    };
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      // A watch cut for silence resumes at once from the last resourceVersion, like client-node's own
      // inactivity timeout (ListWatch recognises the error by its name).
      const e = silent ? Object.assign(new Error('watch was silent'), { name: 'TimeoutError' }) : err;
      owner.callInformer(() => done(e));
    };
    const onEvent: WatchCallback = (phase, obj, raw) => {
      if (!live()) return;
      arm();
      if (!owner.acceptWatchEvent(phase, obj)) return;
      const kept = phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' ? entering(obj, owner.spec) : obj;
      owner.callInformer(() => callback(phase, kept, raw), false);
    };
    const params: WatchQuery = { ...query, allowWatchBookmarks: true, timeoutSeconds: owner.watchTimeoutSeconds() };
    try {
      // The request counts once its answer's headers are in: 200 when the stream started, else the error's status.
      let failed: unknown = null;
      controller = await limited(
        owner.client,
        owner.host,
        owner.stopSignal,
        () =>
          super.watch(path, params, onEvent, (err) => {
            failed ??= err;
            finish(err);
          }),
        () => {
          const status = (failed as { statusCode?: unknown } | null)?.statusCode;
          return { code: failed === null ? '200' : typeof status === 'number' ? String(status) : '<error>', responseBytes: null };
        },
      );
    } catch (err) {
      // e.g. credentials that cannot be read: end this watch as failed instead of rejecting inside ListWatch.
      finish(err);
      controller = new AbortController();
      controller.abort();
      return controller;
    }
    // stop() aborts only the watch ListWatch already holds: one still connecting is ended here.
    if (owner.isStopped) controller.abort();
    else if (!finished) arm();
    return controller;
  }
}

export class Reflector {
  readonly spec: ResourceSpec;
  readonly timings: ReflectorTimings;
  readonly stats: ReflectorStats = { lists: 0, watches: 0, restarts: 0, silentWatches: 0, errors: 0 };
  /** The objects as of the last list plus the events since, by namespace/name. */
  readonly store = new Map<string, KubeObject>();
  /** True once a list succeeded. */
  listed = false;
  /** What the informer is doing, for error messages. */
  phase: 'list' | 'watch' = 'list';

  private readonly kc: KubeConfig;
  private readonly hooks: ReflectorHooks;
  private readonly informer: ListWatch<KubernetesObject>;
  private readonly stopping = new AbortController();
  private readonly pauses = new Set<() => void>();
  private stopped = false;
  private failures = 0;
  private restartTimer: NodeJS.Timeout | null = null;

  /** The rate limiter and request observer shared by every reflector of the source (none in some tests). */
  readonly client: ApiClient | undefined;
  /** host:port of the API server, the rest_client_* metrics' host label. */
  readonly host: string;

  constructor(kc: KubeConfig, spec: ResourceSpec, timings: ReflectorTimings, hooks: ReflectorHooks, client?: ApiClient) {
    this.kc = kc;
    this.client = client;
    this.host = URL.canParse(kc.getCurrentCluster()?.server ?? '') ? new URL(kc.getCurrentCluster()!.server).host : '';
    this.spec = spec;
    this.timings = timings;
    this.hooks = hooks;
    this.informer = new ListWatch<KubernetesObject>(
      spec.path,
      new GuardedWatch(kc, this),
      () => this.list(),
      false,
      spec.labelSelector,
      spec.fieldSelector,
      // ListWatch pauses 1 s, 2 s, ... 30 s before re-watching after watches that ended without events;
      // scale that to our backoff and cap it, so a quiet resource is never unwatched for long.
      { delayFn: (ms) => this.pause(Math.min((ms * timings.backoffInitialMs) / 1000, timings.watchReconnectMaxMs)) },
    );
    this.informer.on('add', (o) => this.upsert(o as KubeObject));
    this.informer.on('update', (o) => this.upsert(o as KubeObject));
    this.informer.on('delete', (o) => this.remove(o as KubeObject));
    this.informer.on('error', (err) => this.failed(err));
    this.informer.on('connect', () => log.debug({ event: 'watch-connect', resource: spec.kind }, 'connecting'));
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Aborts when stop() is called (cuts a wait for the rate limiter short). */
  get stopSignal(): AbortSignal {
    return this.stopping.signal;
  }

  start(): void {
    this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.stopping.abort();
    for (const wake of this.pauses) wake();
    await this.informer.stop();
  }

  /** Server-side timeout for one watch. */
  watchTimeoutSeconds(): number {
    return this.timings.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
  }

  /**
   * Runs a ListWatch entry point (its event handler and done handler are async and must never reject
   * unseen). A failure of start() or of the done handler leaves the informer idle: restart it. A failure in
   * the event handler leaves the watch running: only report it (restarting would cut the working watch).
   */
  callInformer(fn: () => unknown, idleOnFailure = true): void {
    const onFailure = (e: unknown) => (idleOnFailure ? this.failed(e) : this.report(new Error(`${this.spec.kind} watch event: ${describe(e)}`)));
    try {
      const r = fn();
      if (r instanceof Promise) r.catch(onFailure);
    } catch (e) {
      onFailure(e);
    }
  }

  /** Filters watch events before the informer sees them: reports ERROR events, drops malformed ones. */
  acceptWatchEvent(phase: string, obj: unknown): boolean {
    this.failures = 0; // the watch works: the next failure starts the backoff over
    switch (phase) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED':
        if (hasName(obj)) return true;
        this.report(new Error(`watch ${this.spec.path}: ${phase} event without an object name; ignored`));
        return false;
      case 'BOOKMARK':
        return isObject(obj) && isObject(obj.metadata);
      case 'ERROR': {
        if (!isObject(obj)) return false;
        const code = typeof obj.code === 'number' ? obj.code : 0;
        if (code === 410) log.info({ event: 'watch-expired', resource: this.spec.kind }, 'watch expired (410); relisting');
        else this.report(new ApiStatusError(code, `watch ${this.spec.path}: error event: ${String(obj.message ?? 'no message')}`));
        return true;
      }
      default:
        return false;
    }
  }

  private run(): void {
    if (this.stopped) return;
    this.callInformer(() => this.informer.start());
  }

  private async list(): Promise<KubernetesListObject<KubernetesObject>> {
    this.phase = 'list';
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.timings.listTimeoutMs)]);
    const { resourceVersion, items, dropped } = await listObjects(this.kc, this.spec, signal, this.client);
    if (this.stopped) throw new Error('stopped');
    if (dropped > 0) this.report(new Error(`list ${this.spec.path}: ${dropped} item(s) without a name ignored`));
    const relist = this.listed;
    this.store.clear();
    for (const o of items) this.store.set(objectKey(o), o);
    this.listed = true;
    this.failures = 0;
    this.stats.lists++;
    log[relist ? 'info' : 'debug'](
      { event: relist ? 'relisted' : 'listed', resource: this.spec.kind, objects: items.length, resourceVersion },
      `listed ${this.spec.kind}`,
    );
    this.hooks.listed(this);
    // The informer diffs this against its cache and re-emits add/update/delete: upsert/remove drop those,
    // as our store already holds exactly these objects.
    return { metadata: { resourceVersion }, items: items as KubernetesObject[] };
  }

  private upsert(o: KubeObject): void {
    if (this.stopped) return;
    const rec = o as Record<string, unknown>;
    rec.kind ??= this.spec.kind;
    rec.apiVersion ??= this.spec.apiVersion;
    const key = objectKey(o);
    const prev = this.store.get(key);
    if (prev === o) return;
    const rv = o.metadata?.resourceVersion;
    if (prev && rv !== undefined && prev.metadata?.resourceVersion === rv) return;
    this.store.set(key, o);
    this.hooks.changed(this, prev ? 'update' : 'add', o);
  }

  private remove(o: KubeObject): void {
    if (this.stopped) return;
    const key = objectKey(o);
    if (!this.store.delete(key)) return;
    (o as Record<string, unknown>).kind ??= this.spec.kind;
    (o as Record<string, unknown>).apiVersion ??= this.spec.apiVersion;
    this.hooks.changed(this, 'delete', o);
  }

  private report(err: Error): void {
    this.stats.errors++;
    this.hooks.error(err);
  }

  /** The informer stopped (or one of its steps threw): report, and restart it after a backoff. */
  private failed(err: unknown): void {
    if (this.stopped) return;
    if (err instanceof ApiStatusError && err.statusCode === 404 && this.phase === 'list' && this.spec.fallback && this.hooks.notServed) {
      this.hooks.notServed(this);
      return;
    }
    this.report(new Error(`${this.spec.kind} ${this.phase} failed: ${describe(err)}`));
    if (this.restartTimer) return;
    const base = Math.min(this.timings.backoffMaxMs, this.timings.backoffInitialMs * 2 ** Math.min(this.failures, 30));
    this.failures++;
    const delay = Math.round(base * (0.75 + Math.random() * 0.25));
    log.debug({ event: 'informer-restart', resource: this.spec.kind, delayMs: delay }, 'restarting the informer');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopped) return;
      this.stats.restarts++;
      this.run();
    }, delay);
  }

  /** A pause that stop() cuts short (ListWatch awaits it and must not be left with a rejection). */
  private pause(ms: number): Promise<void> {
    if (this.stopped || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        this.pauses.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.pauses.add(wake);
    });
  }
}
