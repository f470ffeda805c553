// One watched resource (Services, EndpointSlices or this Node), kept as client-go's reflector keeps it: list,
// then watch from the list's resourceVersion, forever, never losing what it knows.
//
// - The list is a raw list with the label and field selectors, read item by item as it arrives: in protobuf when
//   the spec asks for it and the server answers so (Services and EndpointSlices, as kube-proxy asks; protobuf.ts),
//   else JSON (api-list.ts); the watch a JSON-lines stream (api-watch-lines.ts), with the same selectors.
// - List items and watch events are cut down to the fields the proxy reads (model/k8s.ts readFields) before
//   they are handed on (a protobuf item is decoded into those fields alone): the owner gets slim copies.
// - A list is handed over in parts as it is read (each network chunk's items), then ended once it is complete:
//   the owner applies each part at once and, at the end, drops what it had of this kind that was not listed
//   (never an empty set because listing failed: a failed list is never ended). No part is held until the list
//   ends: at 10,000 services the slim copies of a whole list, kept until then, were promoted to the old space
//   and were the peak of the start-up. The objects themselves are not kept here either (the model keeps
//   what it parsed from them; client-go's informers keep whole objects, which at 10,000 services is tens of
//   megabytes for nothing): only each one's resourceVersion, so that an event for an object already known at the
//   same resourceVersion is dropped and an event for one not known is an add.
// - 410 Gone (an HTTP status, or an ERROR event on an open watch) relists at once, as client-go; a watch the
//   server ends normally (its timeoutSeconds, a random 300-599 s as client-go asks) is resumed at once from the
//   last resourceVersion seen (of an event or a bookmark).
// - Any other failure (a list or a watch answered with 5xx or another error, a refused or cut connection) is
//   reported and retried with exponential backoff and jitter: a watch resumes from its last resourceVersion,
//   else the list is retried. (client-node's informer, which this replaces, stopped for good on a 5xx: this
//   never stops.) A watch the server ends at once with no event (client-go's "very short watch") is retried
//   after the same backoff, logged but not reported: a dropped connection is routine.
// - Watches ask for bookmarks; a watch with no event and no bookmark for silentWatchMs is cut and resumed at
//   once (a connection that died without a reset would otherwise hold the proxy on stale state).
// - Events are read only from the current watch: once a watch is cut or ended, nothing more of it is read.
import type { IncomingMessage } from 'node:http';
import { log } from '../log.ts';
import { type ListHead, ListScanner, NotAListError } from './api-list.ts';
import { isProtobufKind, PROTOBUF_CONTENT_TYPE, ProtobufError, ProtobufListScanner } from './protobuf.ts';
import { WatchLines } from './api-watch-lines.ts';
import { type KubeObject, readFields, type WatchedKind } from '../model/k8s.ts';
import type { ListSink } from './types.ts';
import { type ApiClient, ApiStatusError, readText, statusMessage } from './api-client.ts';

/** A watched collection. */
export interface ResourceSpec {
  kind: WatchedKind;
  apiVersion: string;
  /** Cluster-wide collection path, e.g. /api/v1/services. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** What to read instead when the API server does not serve `path` (404): an older API version of the kind. */
  fallback?: ResourceSpec;
  /** Ask for the list in protobuf (a Service or EndpointSlice v1 list; the answer may still be JSON). */
  protobufLists?: boolean;
}

export interface ReflectorTimings {
  /** First delay before retrying after a failure; doubles per consecutive failure. */
  backoffInitialMs: number;
  /** Upper bound of that delay. */
  backoffMaxMs: number;
  /** Cut and resume a watch that delivered no event and no bookmark for this long. */
  silentWatchMs: number;
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
  /** Retries after a failure (each after its backoff). */
  restarts: number;
  /** Watches cut because they were silent. */
  silentWatches: number;
  /** Errors reported. */
  errors: number;
}

export interface ReflectorHooks {
  /**
   * A list starts: its items go to the sink as they are read, and end() once the list is complete (then what the
   * owner had of the kind and is not listed is gone). A list that fails is never ended.
   */
  listing(r: Reflector): ListSink;
  /** An object changed, by a watch event. */
  changed(r: Reflector, type: 'add' | 'update' | 'delete', object: KubeObject): void;
  error(err: Error): void;
  /** The API server does not serve the spec's path and the spec has a fallback: the owner replaces this reflector. */
  notServed?(r: Reflector): void;
}

/** client-go's reflector: a watch that ends within this long with no event is an error (backoff), not a resume. */
const VERY_SHORT_WATCH_MS = 1000;

function objectKey(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

function isObject(v: unknown): v is Record<string, any> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object the reflector can follow: it is keyed by metadata.namespace/name. */
function hasName(v: unknown): v is KubeObject {
  return isObject(v) && isObject(v.metadata) && typeof v.metadata.name === 'string' && v.metadata.name !== '';
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const status = (err as { statusCode?: unknown }).statusCode;
    // A connection refused on every address of a name is an AggregateError without a message of its own.
    const message = err.message || (err as NodeJS.ErrnoException).code || (err instanceof AggregateError ? describe(err.errors[0]) : err.name);
    return `${typeof status === 'number' ? `HTTP ${status} ` : ''}${message}`;
  }
  return String(err);
}

/**
 * An object as it enters (list item or watch event): its kind and apiVersion filled in (typed lists
 * leave them out), cut down to the fields the proxy reads (model/k8s.ts readFields).
 */
function entering(item: KubeObject, spec: ResourceSpec): KubeObject {
  return readFields(typed(item, spec));
}

/** An item with its kind and apiVersion filled in (typed lists leave them out). */
function typed(item: KubeObject, spec: ResourceSpec): KubeObject {
  const o = item as Record<string, unknown>;
  o.kind ??= spec.kind;
  o.apiVersion ??= spec.apiVersion;
  return item;
}

/** The collection's path with the spec's selectors and `extra` as its query. */
function collectionPath(spec: ResourceSpec, extra: Record<string, string> = {}): string {
  const q = new URLSearchParams();
  if (spec.labelSelector) q.set('labelSelector', spec.labelSelector);
  if (spec.fieldSelector) q.set('fieldSelector', spec.fieldSelector);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return q.size === 0 ? spec.path : `${spec.path}?${q}`;
}

/** Throws the API server's error answer as an ApiStatusError (`what`: "list /api/v1/services", ...). */
async function refused(res: IncomingMessage, what: string): Promise<never> {
  const status = res.statusCode ?? 0;
  throw new ApiStatusError(status, `${what}: ${statusMessage(status, await readText(res))}`);
}

/**
 * Lists a collection. Items enter as entering() makes them; items without a name are dropped and counted. With
 * `parts`, the items read from each chunk of the answer go to it as they are read and `items` stays empty.
 */
export async function listObjects(
  client: ApiClient,
  spec: ResourceSpec,
  signal: AbortSignal,
  parts?: (items: KubeObject[]) => void,
): Promise<{ resourceVersion: string; items: KubeObject[]; dropped: number }> {
  let items: KubeObject[] = [];
  let dropped = 0;
  /** With `parts`: the items read so far go to it. */
  const handOver = () => {
    if (!parts || items.length === 0) return;
    parts(items);
    items = [];
  };
  /** `cut`: the item is already cut down to what readFields keeps. */
  const take = (item: KubeObject, cut: boolean) => {
    if (hasName(item)) items.push(cut ? typed(item, spec) : entering(item, spec));
    else dropped++;
  };
  const notAList = (e: unknown) => new Error(`list ${spec.path}: the answer is not a list: ${(e as Error).message}`, { cause: e });
  const protobuf = spec.protobufLists === true && isProtobufKind(spec.kind);
  const accept = protobuf ? `${PROTOBUF_CONTENT_TYPE}, application/json` : 'application/json';
  const list = await client.request({ method: 'GET', path: collectionPath(spec), signal, accept }, async (res) => {
    if (res.statusCode !== 200) return refused(res, `list ${spec.path}`);
    // The server chooses: protobuf when it has it for the kind, else JSON.
    const reader = protobuf && isProtobufAnswer(res) ? protobufReader(spec, take) : jsonReader(take);
    let bytes = 0;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        bytes += chunk.length;
        reader.push(chunk);
        handOver();
      }
    } catch (e) {
      throw e instanceof NotAListError || e instanceof ProtobufError ? notAList(e) : e;
    }
    return { value: reader, bytes };
  });
  let head: ListHead;
  try {
    head = list.end();
  } catch (e) {
    throw notAList(e);
  }
  handOver();
  return { resourceVersion: head.resourceVersion, items, dropped: dropped + head.notObjects };
}

/** A list answer's reader: fed its bytes, it hands on each item; end() checks it was whole. */
interface ListReader {
  push(chunk: Buffer): void;
  end(): ListHead;
}

const isProtobufAnswer = (res: IncomingMessage) => (res.headers['content-type'] ?? '').split(';')[0]!.trim() === PROTOBUF_CONTENT_TYPE;

/** JSON: items are parsed one at a time as the answer streams in, and cut down at once (api-list.ts). */
function jsonReader(take: (item: KubeObject, cut: boolean) => void): ListReader {
  return new ListScanner((o) => take(o as KubeObject, false));
}

/** Protobuf: each item comes out of the bytes already cut down to what readFields keeps (protobuf.ts). */
function protobufReader(spec: ResourceSpec, take: (item: KubeObject, cut: boolean) => void): ListReader {
  const scanner = new ProtobufListScanner(spec.kind as 'Service' | 'EndpointSlice', (o) => take(o as KubeObject, true));
  return { push: (chunk) => scanner.push(chunk), end: () => ({ ...scanner.end(), notObjects: 0 }) };
}

/**
 * How a watch ended without failing: normally (resume from the last resourceVersion), with 410 Gone (relist), or
 * at once with no event (client-go's "very short watch", which it logs and backs off from: resume after the backoff).
 */
type WatchEnd = 'resume' | 'relist' | 'short';

export class Reflector {
  readonly spec: ResourceSpec;
  readonly timings: ReflectorTimings;
  readonly stats: ReflectorStats = { lists: 0, watches: 0, restarts: 0, silentWatches: 0, errors: 0 };
  /** The resourceVersion of every object as of the last list plus the events since, by namespace/name. */
  versions = new Map<string, string>();
  /** True once a list succeeded. */
  listed = false;

  private readonly client: ApiClient;
  private readonly hooks: ReflectorHooks;
  private readonly stopping = new AbortController();
  private stopped = false;
  /** What the reflector is doing, for error messages. */
  private phase: 'list' | 'watch' = 'list';
  /** The last resourceVersion seen (list, event or bookmark): where the next watch starts. */
  private resourceVersion = '';
  private needList = true;
  private failures = 0;
  private running: Promise<void> | null = null;
  private wake: (() => void) | null = null;

  constructor(client: ApiClient, spec: ResourceSpec, timings: ReflectorTimings, hooks: ReflectorHooks) {
    this.client = client;
    this.spec = spec;
    this.timings = timings;
    this.hooks = hooks;
  }

  start(): void {
    this.running ??= this.run();
  }

  /** Ends the list or watch in flight and the loop; resolves once nothing of this reflector runs. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort(new Error('stopped'));
    this.wake?.();
    await this.running;
  }

  /** Server-side timeout for one watch. */
  watchTimeoutSeconds(): number {
    return this.timings.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.needList) await this.list();
        if (this.stopped) return;
        const end = await this.watch();
        if (end === 'relist') this.needList = true;
        if (end === 'short') await this.backoff();
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiStatusError && err.statusCode === 404 && this.phase === 'list' && this.spec.fallback && this.hooks.notServed) {
          this.hooks.notServed(this);
          return;
        }
        this.report(new Error(`${this.spec.kind} ${this.phase} failed: ${describe(err)}`));
        await this.backoff();
      }
    }
  }

  private async list(): Promise<void> {
    this.phase = 'list';
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.timings.listTimeoutMs)]);
    const sink = this.hooks.listing(this);
    // The versions of this list, in force once it is complete (a failed list leaves those of the last one).
    const versions = new Map<string, string>();
    const { resourceVersion, dropped } = await listObjects(this.client, this.spec, signal, (items) => {
      if (this.stopped) return;
      for (const o of items) versions.set(objectKey(o), o.metadata?.resourceVersion ?? '');
      sink.add(items);
    });
    if (this.stopped) return;
    if (dropped > 0) this.report(new Error(`list ${this.spec.path}: ${dropped} item(s) without a name ignored`));
    const relist = this.listed;
    this.versions = versions;
    this.resourceVersion = resourceVersion;
    this.needList = false;
    this.listed = true;
    this.failures = 0;
    this.stats.lists++;
    log[relist ? 'info' : 'debug'](
      { event: relist ? 'relisted' : 'listed', resource: this.spec.kind, objects: versions.size, resourceVersion },
      `listed ${this.spec.kind}`,
    );
    sink.end();
  }

  /** One watch from the last resourceVersion, until it ends; throws when it fails. */
  private async watch(): Promise<WatchEnd> {
    this.phase = 'watch';
    this.stats.watches++;
    const cut = new AbortController();
    const path = collectionPath(this.spec, {
      watch: '1',
      allowWatchBookmarks: 'true',
      resourceVersion: this.resourceVersion,
      timeoutSeconds: String(this.watchTimeoutSeconds()),
    });
    const started = performance.now();
    let res: IncomingMessage;
    try {
      res = await this.client.request({ method: 'GET', path, signal: AbortSignal.any([this.stopping.signal, cut.signal]) }, async (r) => {
        if (r.statusCode !== 200) return refused(r, `watch ${this.spec.path}`);
        return { value: r, bytes: null };
      });
    } catch (e) {
      if (e instanceof ApiStatusError && e.statusCode === 410) return this.expired();
      throw e;
    }
    let end: WatchEnd | null = null;
    let events = 0;
    let silent = false;
    let timer: NodeJS.Timeout | null = null;
    const arm = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        silent = true;
        this.stats.silentWatches++;
        log.info({ event: 'watch-silent', resource: this.spec.kind, ms: this.timings.silentWatchMs }, 'watch silent; re-establishing it');
        cut.abort(new Error('the watch was silent'));
      }, this.timings.silentWatchMs);
    };
    const lines = new WatchLines((e) => {
      if (end !== null || this.stopped) return; // after an ERROR event, or stop(): nothing more of this watch
      events++;
      arm();
      end = this.event(e);
    });
    arm();
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        lines.push(chunk);
        if (end !== null || this.stopped) break;
      }
      if (end === null && !this.stopped) lines.end();
    } catch (e) {
      // Cut for silence: resume at once from the last resourceVersion.
      if (silent || this.stopped) return 'resume';
      throw e;
    } finally {
      if (timer) clearTimeout(timer);
      res.destroy();
    }
    if (end !== null) return end;
    if (events === 0 && performance.now() - started < VERY_SHORT_WATCH_MS && !this.stopped) {
      log.info({ event: 'watch-short', resource: this.spec.kind }, 'the server ended the watch at once with no event; backing off');
      return 'short';
    }
    return 'resume';
  }

  /** 410 Gone: the resourceVersion is older than the server's history. Relist, as client-go: routine, not an error. */
  private expired(): WatchEnd {
    log.info({ event: 'watch-expired', resource: this.spec.kind }, 'watch expired (410); relisting');
    return 'relist';
  }

  /** One watch event, followed; returns how the watch ends when the event ends it (ERROR), else null. */
  private event(e: unknown): WatchEnd | null {
    this.failures = 0; // the watch works: the next failure starts the backoff over
    const type = isObject(e) ? e.type : undefined;
    const obj: unknown = isObject(e) ? e.object : undefined;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        if (!hasName(obj)) {
          this.report(new Error(`watch ${this.spec.path}: ${type} event without an object name; ignored`));
          return null;
        }
        const o = entering(obj, this.spec);
        this.seen(o);
        if (type === 'DELETED') this.remove(o);
        else this.upsert(o);
        return null;
      }
      case 'BOOKMARK':
        if (isObject(obj)) this.seen(obj as KubeObject);
        return null;
      case 'ERROR': {
        const code = isObject(obj) && typeof obj.code === 'number' ? obj.code : 0;
        if (code === 410) return this.expired();
        throw new ApiStatusError(code, `watch ${this.spec.path}: error event: ${String((isObject(obj) && obj.message) || 'no message')}`);
      }
      default:
        return null;
    }
  }

  /** Where the next watch resumes: the resourceVersion of the last event or bookmark. */
  private seen(o: KubeObject): void {
    const rv = o.metadata?.resourceVersion;
    if (typeof rv === 'string' && rv !== '') this.resourceVersion = rv;
  }

  private upsert(o: KubeObject): void {
    const key = objectKey(o);
    const known = this.versions.get(key);
    const rv = o.metadata?.resourceVersion;
    if (known !== undefined && rv !== undefined && known === rv) return;
    this.versions.set(key, rv ?? '');
    this.hooks.changed(this, known !== undefined ? 'update' : 'add', o);
  }

  private remove(o: KubeObject): void {
    if (!this.versions.delete(objectKey(o))) return;
    this.hooks.changed(this, 'delete', o);
  }

  private report(err: Error): void {
    this.stats.errors++;
    this.hooks.error(err);
  }

  /** Waits before the next attempt: exponential, with jitter, cut short by stop(). */
  private async backoff(): Promise<void> {
    const base = Math.min(this.timings.backoffMaxMs, this.timings.backoffInitialMs * 2 ** Math.min(this.failures, 30));
    this.failures++;
    const delay = Math.round(base * (0.75 + Math.random() * 0.25));
    log.debug({ event: 'api-retry', resource: this.spec.kind, phase: this.phase, delayMs: delay }, 'retrying after a failure');
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, delay);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wake = null;
    if (!this.stopped) this.stats.restarts++;
  }
}
