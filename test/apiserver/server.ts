// A test Kubernetes API server: Services, EndpointSlices and Nodes over the real list/watch protocol, plus
// controls to break it the ways real API servers break (dropped watches, 410 Gone, 5xx, silent watches,
// restarts). Plain HTTP; in-memory store with an etcd-like global resourceVersion and a bounded event history.
//
// Protocol: GET <collection> returns a *List with metadata.resourceVersion (items without kind/apiVersion,
// as the real server encodes typed lists), streamed item by item as the client reads it, in JSON or, for Services
// and EndpointSlices asked for as application/vnd.kubernetes.protobuf first (kube-proxy's way), in protobuf
// (protobuf.ts); GET
// <collection>?watch=true&resourceVersion=N streams newline-delimited {"type","object"} events after N
// (headers flushed at once), or, without N (or N=0), ADDED for every current object first. labelSelector and fieldSelector (metadata.name, metadata.namespace) filter both;
// an object that starts or stops matching during a watch arrives as ADDED or DELETED. A watch from a
// resourceVersion older than the compacted history gets 410 Gone (as an HTTP status, or as an ERROR event if
// tooOldAs is 'event'). allowWatchBookmarks=true watches get BOOKMARK events every bookmarkIntervalMs and
// on bookmark(); timeoutSeconds ends a watch normally.
//
// Events posted to /apis/events.k8s.io/v1/namespaces/NS/events are kept in postedEvents (never listed or watched).
//
// Accounting per client (its remote address; in a benchmark each node has its own): requests by kind,
// bytes sent, watch events and resumes, so that a benchmark can show what each proxy asks of the server.
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { isIPv6 } from 'node:net';
import type { Socket } from 'node:net';
import { stringify } from 'yaml';
import { PROTOBUF_CONTENT_TYPE } from '../../src/watch/protobuf.ts';
import { encodeItem, listEntry, listFrame, NotEncodable, PROTOBUF_KINDS, type ProtobufKind } from './protobuf.ts';
import { parseFieldSelector, parseLabelSelector, type Selector, SelectorError } from './selectors.ts';

export type WatchedKind = 'Service' | 'EndpointSlice' | 'Node';

/** How much of a list is encoded before it is written (characters of JSON, bytes of protobuf): large enough for few writes, small enough to start at once. */
const LIST_CHUNK_SIZE = 256 * 1024;

/** A stored object: any JSON object with kind, apiVersion and metadata. */
export type ApiObject = {
  kind?: string;
  apiVersion?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
};

interface Resource {
  kind: WatchedKind;
  apiVersion: string;
  prefix: string;
  plural: string;
  namespaced: boolean;
}

const RESOURCES: Resource[] = [
  { kind: 'Service', apiVersion: 'v1', prefix: '/api/v1', plural: 'services', namespaced: true },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', prefix: '/apis/discovery.k8s.io/v1', plural: 'endpointslices', namespaced: true },
  { kind: 'Node', apiVersion: 'v1', prefix: '/api/v1', plural: 'nodes', namespaced: false },
];
/** The resources of a server; an API server before 1.21 serves EndpointSlices as discovery.k8s.io/v1beta1 only. */
function resourcesFor(endpointSliceVersion: 'v1' | 'v1beta1'): Resource[] {
  if (endpointSliceVersion === 'v1') return RESOURCES;
  return RESOURCES.map((r) => (r.kind === 'EndpointSlice' ? { ...r, apiVersion: 'discovery.k8s.io/v1beta1', prefix: '/apis/discovery.k8s.io/v1beta1' } : r));
}
const FIELDS = ['metadata.name', 'metadata.namespace'];
/** Where clients post Events (stored for tests to read, never watched). */
const EVENTS_PATH = /^\/apis\/events\.k8s\.io\/v1\/namespaces\/[^/]+\/events$/;
const MAX_POSTED_EVENTS = 1000;

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
interface HistoryEntry {
  rv: number;
  kind: WatchedKind;
  type: EventType;
  object: ApiObject;
  /** The previous state, for MODIFIED (to turn selector transitions into ADDED/DELETED). */
  prev?: ApiObject;
}

interface WatchConn {
  res: ServerResponse;
  socket: Socket;
  /** The accounting of the client that opened it. */
  client: ClientStats;
  resource: Resource;
  namespace: string | null;
  labels: Selector;
  fields: Selector;
  bookmarks: boolean;
  silent: boolean;
  timer: NodeJS.Timeout | null;
}

export interface RequestRecord {
  /** The client's address (IPv4-mapped IPv6 shown as IPv4). */
  client: string;
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
  status: number;
  authorization: string | undefined;
  /** The answer's encoding, for a list answered 200: 'protobuf' when the client asked for it and every item had one. */
  encoding?: 'json' | 'protobuf';
}

/** What one client (by remote address) asked of the server and what it was sent. Controls are not counted. */
export interface ClientStats {
  /** Collection GETs answered with a list (200). */
  lists: number;
  /** Watch requests answered with a stream (200). */
  watches: number;
  /** Of those, watches from a resourceVersion (a resume: no replay of every object). */
  resumedWatches: number;
  /** Single-object GETs answered (200). */
  gets: number;
  /** Events posted (events.k8s.io/v1, answered 201). */
  eventPosts: number;
  /** Requests answered with an error status (401, 404, 410, injected 5xx, ...). */
  errors: number;
  /** Bytes of list and get answers. */
  listBytes: number;
  /** Bytes of watch streams (events, bookmarks and errors). */
  watchBytes: number;
  /** ADDED/MODIFIED/DELETED events written to its watches, initial ADDED replays included. */
  watchEvents: number;
  /** Of those, events replayed from the history to resumed watches. */
  replayedEvents: number;
  /** Watches it holds open now. */
  openWatches: number;
}

function emptyClientStats(): ClientStats {
  return {
    lists: 0,
    watches: 0,
    resumedWatches: 0,
    gets: 0,
    eventPosts: 0,
    errors: 0,
    listBytes: 0,
    watchBytes: 0,
    watchEvents: 0,
    replayedEvents: 0,
    openWatches: 0,
  };
}

/** The client address of a socket as a person writes it. */
function clientAddress(socket: Socket): string {
  const a = socket.remoteAddress ?? 'unknown';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

export interface TestApiServerOptions {
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (default 0: a random free port, kept across restarts). */
  port?: number;
  /** Bearer token every request must carry (default 'test-token'); null accepts any request. */
  token?: string | null;
  /** Send BOOKMARK events to bookmark-enabled watches this often (default 0: only on bookmark()). */
  bookmarkIntervalMs?: number;
  /** Events kept for watches to resume from; older ones are compacted away (default 10,000). */
  maxHistory?: number;
  /** How a watch from a compacted resourceVersion is refused (default 'status': HTTP 410). */
  tooOldAs?: 'status' | 'event';
  /** Serve the /_test/ control endpoints (for a server run as its own process, see main.ts). */
  control?: boolean;
  /**
   * The resourceVersion to start from (default 1). A server standing in for a restarted API server whose
   * storage moved on starts high, with everything before compacted: resumed watches get 410 Gone.
   */
  initialResourceVersion?: number;
  /** The version EndpointSlices are served as (default v1; v1beta1: an API server before 1.21, nothing under v1). */
  endpointSliceVersion?: 'v1' | 'v1beta1';
  /** Answer Service and EndpointSlice (v1) lists in protobuf to clients that ask for it first (default true). */
  protobuf?: boolean;
}

function clone<T>(o: T): T {
  return structuredClone(o);
}

function statusBody(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'AlreadyExists',
  410: 'Expired',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

export class TestApiServer {
  readonly host: string;
  readonly token: string | null;
  /** How a watch from a compacted resourceVersion is refused; may be changed at any time. */
  tooOldAs: 'status' | 'event';
  /** Every request served, in order (controls excluded). */
  readonly requests: RequestRecord[] = [];
  /** Events posted by clients (events.k8s.io/v1, as the proxy records them), the latest MAX_POSTED_EVENTS. */
  readonly postedEvents: ApiObject[] = [];

  private port: number;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly watches = new Set<WatchConn>();
  private readonly clients = new Map<string, ClientStats>();
  private readonly store = new Map<string, ApiObject>();
  /** Each stored object's encoding as a list item, with the resourceVersion it was made for (itemJSON). */
  private readonly encoded = new WeakMap<ApiObject, { rv: unknown; text: string }>();
  /** The same in protobuf (protobufEntry): the item's list entry, or null when it has none (a field protobuf.ts does not know). */
  private readonly encodedProtobuf = new WeakMap<ApiObject, { rv: unknown; entry: Buffer | null }>();
  private readonly protobuf: boolean;
  private history: HistoryEntry[] = [];
  private rv = 1;
  private compactedRv = 0;
  private readonly maxHistory: number;
  private readonly bookmarkIntervalMs: number;
  private bookmarkTimer: NodeJS.Timeout | null = null;
  private failures: { left: number; status: number; only: 'list' | 'watch' | null } | null = null;
  private delays: { left: number; ms: number; only: 'list' | 'watch' | null } | null = null;
  private readonly control: boolean;
  private readonly resources: Resource[];
  private readonly byKind: Map<WatchedKind, Resource>;

  constructor(opts: TestApiServerOptions = {}) {
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port ?? 0;
    this.token = opts.token === undefined ? 'test-token' : opts.token;
    this.bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 0;
    this.maxHistory = opts.maxHistory ?? 10_000;
    this.protobuf = opts.protobuf ?? true;
    this.tooOldAs = opts.tooOldAs ?? 'status';
    this.control = opts.control ?? false;
    this.resources = resourcesFor(opts.endpointSliceVersion ?? 'v1');
    this.byKind = new Map(this.resources.map((r) => [r.kind, r]));
    if (opts.initialResourceVersion !== undefined) {
      this.rv = opts.initialResourceVersion;
      this.compactedRv = opts.initialResourceVersion;
    }
  }

  // ---- lifecycle ----

  get listening(): boolean {
    return this.server !== null;
  }

  get url(): string {
    if (this.port === 0) throw new Error('the test API server has not been started');
    return `http://${isIPv6(this.host) ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /** Starts listening (on the same port as before after a stop()). */
  async start(): Promise<void> {
    if (this.server) return;
    const server = createServer((req, res) => this.handle(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address();
    if (addr && typeof addr === 'object') this.port = addr.port;
    this.server = server;
    if (this.bookmarkIntervalMs > 0) {
      this.bookmarkTimer = setInterval(() => this.bookmark(), this.bookmarkIntervalMs);
      this.bookmarkTimer.unref();
    }
  }

  /** Stops listening and cuts every connection (watches included). The stored objects stay. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    this.bookmarkTimer = null;
    for (const w of this.watches) this.closeWatch(w);
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    server.closeAllConnections();
    await closed;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Writes a kubeconfig that points at this server (insecure-skip-tls-verify, bearer token); returns the path. */
  async writeKubeconfig(file: string): Promise<string> {
    const user: Record<string, string> = this.token ? { token: this.token } : {};
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'test', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'test', user }],
      contexts: [{ name: 'test', context: { cluster: 'test', user: 'test' } }],
      'current-context': 'test',
    };
    await writeFile(file, stringify(config));
    return file;
  }

  // ---- objects ----

  /** The current global resourceVersion (that of the latest change). */
  get resourceVersion(): string {
    return String(this.rv);
  }

  get(kind: WatchedKind, namespace: string | undefined, name: string): ApiObject | undefined {
    const o = this.store.get(this.key(kind, namespace, name));
    return o ? clone(o) : undefined;
  }

  list(kind?: WatchedKind): ApiObject[] {
    return [...this.store.values()].filter((o) => !kind || o.kind === kind).map(clone);
  }

  /** Creates an object (kind Service, EndpointSlice or Node); returns it as stored. Throws if it exists. */
  create(obj: ApiObject): ApiObject {
    const { resource, key, ns, name } = this.identify(obj);
    if (this.store.has(key)) throw new Error(`${resource.kind} ${ns ?? ''}/${name} already exists`);
    const stored = clone(obj);
    stored.kind = resource.kind;
    stored.apiVersion = resource.apiVersion;
    const rv = ++this.rv;
    stored.metadata = {
      ...stored.metadata,
      ...(ns !== undefined ? { namespace: ns } : {}),
      uid: typeof stored.metadata?.uid === 'string' ? stored.metadata.uid : randomUUID(),
      creationTimestamp: new Date().toISOString(),
      resourceVersion: String(rv),
    };
    this.store.set(key, stored);
    this.record({ rv, kind: resource.kind, type: 'ADDED', object: stored });
    return clone(stored);
  }

  /** Replaces an existing object (uid and creationTimestamp kept); returns it as stored. */
  update(obj: ApiObject): ApiObject {
    const { resource, key, ns, name } = this.identify(obj);
    const prev = this.store.get(key);
    if (!prev) throw new Error(`${resource.kind} ${ns ?? ''}/${name} does not exist`);
    const stored = clone(obj);
    stored.kind = resource.kind;
    stored.apiVersion = resource.apiVersion;
    const rv = ++this.rv;
    stored.metadata = {
      ...stored.metadata,
      ...(ns !== undefined ? { namespace: ns } : {}),
      uid: prev.metadata?.uid,
      creationTimestamp: prev.metadata?.creationTimestamp,
      resourceVersion: String(rv),
    };
    this.store.set(key, stored);
    this.record({ rv, kind: resource.kind, type: 'MODIFIED', object: stored, prev });
    return clone(stored);
  }

  /** Creates or updates. */
  apply(obj: ApiObject): ApiObject {
    const { key } = this.identify(obj);
    return this.store.has(key) ? this.update(obj) : this.create(obj);
  }

  /** Deletes an object; returns false when there was none. */
  remove(kind: WatchedKind, namespace: string | undefined, name: string): boolean {
    const key = this.key(kind, namespace, name);
    const prev = this.store.get(key);
    if (!prev) return false;
    this.store.delete(key);
    const rv = ++this.rv;
    const gone = clone(prev);
    gone.metadata = { ...gone.metadata, resourceVersion: String(rv) };
    this.record({ rv, kind, type: 'DELETED', object: gone });
    return true;
  }

  /** Applies every object of a list (e.g. a scenario's objects). */
  load(objects: ApiObject[]): void {
    for (const o of objects) this.apply(o);
  }

  // ---- fault controls ----

  /** Number of open watches. */
  get watchCount(): number {
    return this.watches.size;
  }

  /** The accounting of every client seen so far, by address (copies). */
  clientStats(): Record<string, ClientStats> {
    return Object.fromEntries([...this.clients].map(([client, st]) => [client, { ...st }]));
  }

  /** Cuts every open watch connection (as a network failure would); returns how many. */
  dropWatches(): number {
    const n = this.watches.size;
    for (const w of [...this.watches]) {
      this.closeWatch(w);
      w.socket.destroy();
    }
    return n;
  }

  /** Sends every open watch an ERROR event with a 410 Expired Status, then ends it; returns how many. */
  expireWatches(): number {
    const n = this.watches.size;
    for (const w of [...this.watches]) {
      this.write(w, 'ERROR', statusBody(410, 'Expired', `too old resource version (${this.compactedRv})`), true);
      this.closeWatch(w);
    }
    return n;
  }

  /** Drops the event history: watches from any resourceVersion older than the current one get 410. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  /** Answers the next n requests (of one kind, or any) with an error status (default 500). */
  failNext(n: number, opts: { status?: number; only?: 'list' | 'watch' } = {}): void {
    this.failures = n > 0 ? { left: n, status: opts.status ?? 500, only: opts.only ?? null } : null;
  }

  /** Holds the next n requests (of one kind, or any) for ms before answering them (headers included). */
  delayNext(n: number, ms: number, opts: { only?: 'list' | 'watch' } = {}): void {
    this.delays = n > 0 ? { left: n, ms, only: opts.only ?? null } : null;
  }

  /** Makes every open watch silent: the connection stays open but nothing more is sent on it; returns how many. */
  silenceWatches(): number {
    for (const w of this.watches) w.silent = true;
    return this.watches.size;
  }

  /** Sends a BOOKMARK (current resourceVersion) to every bookmark-enabled, non-silent watch. */
  bookmark(): void {
    for (const w of this.watches) {
      if (!w.bookmarks) continue;
      this.write(w, 'BOOKMARK', { kind: w.resource.kind, apiVersion: w.resource.apiVersion, metadata: { resourceVersion: String(this.rv) } });
    }
  }

  // ---- internals ----

  /** A posted Event: kept (the latest MAX_POSTED_EVENTS) and answered 201 with the object, as the API server does. */
  private postEvent(req: IncomingMessage, res: ServerResponse, rec: RequestRecord): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let event: ApiObject;
      try {
        event = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ApiObject;
      } catch {
        this.fail(req, res, 400, 'the body is not JSON', rec);
        return;
      }
      this.postedEvents.push(event);
      if (this.postedEvents.length > MAX_POSTED_EVENTS) this.postedEvents.shift();
      this.clientOf(rec).eventPosts++;
      this.send(req, res, 201, event, rec);
    });
  }

  private clientOf(rec: RequestRecord): ClientStats {
    let st = this.clients.get(rec.client);
    if (!st) this.clients.set(rec.client, (st = emptyClientStats()));
    return st;
  }

  private key(kind: string, namespace: string | undefined, name: string): string {
    const r = this.byKind.get(kind as WatchedKind);
    return `${kind}/${r?.namespaced ? (namespace ?? 'default') : ''}/${name}`;
  }

  private identify(obj: ApiObject): { resource: Resource; key: string; ns: string | undefined; name: string } {
    const resource = this.byKind.get(obj.kind as WatchedKind);
    if (!resource) throw new Error(`the test API server does not store kind ${String(obj.kind)}`);
    const name = obj.metadata?.name;
    if (typeof name !== 'string' || name === '') throw new Error(`a ${resource.kind} needs metadata.name`);
    const ns = resource.namespaced ? (obj.metadata?.namespace ?? 'default') : undefined;
    return { resource, key: this.key(resource.kind, ns, name), ns, name };
  }

  private record(e: HistoryEntry): void {
    this.history.push(e);
    if (this.history.length > this.maxHistory) {
      const dropped = this.history.splice(0, this.history.length - this.maxHistory);
      this.compactedRv = dropped[dropped.length - 1].rv;
    }
    for (const w of this.watches) if (w.resource.kind === e.kind) this.deliver(w, e);
  }

  private matches(w: WatchConn, o: ApiObject | undefined): boolean {
    if (!o) return false;
    const md = o.metadata ?? {};
    if (w.namespace !== null && md.namespace !== w.namespace) return false;
    if (!w.labels.matches(md.labels ?? {})) return false;
    return w.fields.matches({ 'metadata.name': md.name, 'metadata.namespace': md.namespace ?? '' });
  }

  /** Sends one history entry to a watch, as seen through its selectors. */
  private deliver(w: WatchConn, e: HistoryEntry): void {
    if (e.type !== 'MODIFIED') {
      if (this.matches(w, e.object)) this.write(w, e.type, e.object);
      return;
    }
    const now = this.matches(w, e.object);
    const before = this.matches(w, e.prev);
    if (now) this.write(w, before ? 'MODIFIED' : 'ADDED', e.object);
    else if (before) {
      const gone = clone(e.prev!);
      gone.metadata = { ...gone.metadata, resourceVersion: String(e.rv) };
      this.write(w, 'DELETED', gone);
    }
  }

  private write(w: WatchConn, type: string, object: unknown, force = false): void {
    if ((w.silent && !force) || w.res.writableEnded || w.res.destroyed) return;
    const line = `${JSON.stringify({ type, object })}\n`;
    w.client.watchBytes += Buffer.byteLength(line);
    if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') w.client.watchEvents++;
    w.res.write(line);
  }

  private closeWatch(w: WatchConn): void {
    if (!this.watches.delete(w)) return;
    w.client.openWatches--;
    if (w.timer) clearTimeout(w.timer);
    if (!w.res.writableEnded) w.res.end();
  }

  private send(req: IncomingMessage, res: ServerResponse, status: number, body: unknown, rec: RequestRecord | null): void {
    const text = JSON.stringify(body);
    if (rec) {
      rec.status = status;
      const client = this.clientOf(rec);
      if (status >= 400) client.errors++;
      else if (status === 200) client.listBytes += Buffer.byteLength(text);
    }
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(req.method === 'HEAD' ? undefined : text);
  }

  private fail(req: IncomingMessage, res: ServerResponse, status: number, message: string, rec: RequestRecord | null): void {
    this.send(req, res, status, statusBody(status, REASONS[status] ?? 'Unknown', message), rec);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (this.control && url.pathname.startsWith('/_test/')) {
      this.handleControl(req, res, url).catch((e: Error) => {
        if (!res.headersSent) this.fail(req, res, 400, e.message, null);
      });
      return;
    }
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === 'true' || query.watch === '1';
    const rec: RequestRecord = {
      client: clientAddress(req.socket),
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      watch,
      status: 0,
      authorization: req.headers.authorization,
    };
    this.requests.push(rec);
    const d = this.delays;
    if (d && (d.only === null || d.only === (watch ? 'watch' : 'list'))) {
      if (--d.left <= 0) this.delays = null;
      const t = setTimeout(() => this.serve(req, res, url, query, watch, rec), d.ms);
      res.on('close', () => clearTimeout(t));
      return;
    }
    this.serve(req, res, url, query, watch, rec);
  }

  private serve(req: IncomingMessage, res: ServerResponse, url: URL, query: Record<string, string>, watch: boolean, rec: RequestRecord): void {
    if (this.token !== null && req.headers.authorization !== `Bearer ${this.token}`) {
      this.fail(req, res, 401, 'Unauthorized', rec);
      return;
    }
    if (this.failures && (this.failures.only === null || this.failures.only === (watch ? 'watch' : 'list'))) {
      const status = this.failures.status;
      if (--this.failures.left <= 0) this.failures = null;
      this.fail(req, res, status, 'injected failure', rec);
      return;
    }
    if (req.method === 'POST' && EVENTS_PATH.test(url.pathname)) {
      this.postEvent(req, res, rec);
      return;
    }
    if (req.method !== 'GET') {
      this.fail(req, res, 405, `method ${req.method} not allowed`, rec);
      return;
    }
    const route = this.route(url.pathname);
    if (!route) {
      this.fail(req, res, 404, `the server could not find the requested resource (${url.pathname})`, rec);
      return;
    }

    let labels: Selector;
    let fields: Selector;
    try {
      labels = parseLabelSelector(query.labelSelector);
      fields = parseFieldSelector(query.fieldSelector, FIELDS);
    } catch (e) {
      if (e instanceof SelectorError) {
        this.fail(req, res, 400, e.message, rec);
        return;
      }
      throw e;
    }

    const { resource, namespace, name } = route;
    if (name !== null) {
      const o = this.store.get(this.key(resource.kind, namespace ?? undefined, name));
      if (!o) {
        this.fail(req, res, 404, `${resource.plural} "${name}" not found`, rec);
        return;
      }
      this.clientOf(rec).gets++;
      this.send(req, res, 200, o, rec);
      return;
    }

    const conn: WatchConn = {
      res,
      socket: req.socket,
      client: this.clientOf(rec),
      resource,
      namespace,
      labels,
      fields,
      bookmarks: query.allowWatchBookmarks === 'true',
      silent: false,
      timer: null,
    };
    if (!watch) {
      const items = [...this.store.values()].filter((o) => o.kind === resource.kind && this.matches(conn, o));
      conn.client.lists++;
      this.streamList(req, res, resource, items, rec);
    } else this.startWatch(req, res, conn, query, rec);
  }

  /**
   * Answers a list as the real API server does since Kubernetes 1.33 (streaming collection encoding): the
   * list's head, then its items one after another as the client reads them (chunked), each item's JSON (or
   * protobuf) made once per version of the object and kept (as the watch cache keeps serialized objects). Writing the whole
   * list as one string first made a 10,000 x 10 list wait for its last item's encoding before the first byte,
   * held hundreds of megabytes, and kept this process busy while the proxy under test waited.
   */
  private streamList(req: IncomingMessage, res: ServerResponse, resource: Resource, items: ApiObject[], rec: RequestRecord): void {
    rec.status = 200;
    const entries = this.protobufEntries(req, resource, items);
    rec.encoding = entries ? 'protobuf' : 'json';
    res.writeHead(200, { 'Content-Type': entries ? PROTOBUF_CONTENT_TYPE : 'application/json' });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const pieces = entries ? this.protobufListPieces(resource, entries) : this.jsonListPieces(resource, items);
    this.writeInChunks(res, this.clientOf(rec), pieces);
  }

  /** A JSON list answer's text, piece by piece: its head, each item (made when it is reached), its tail. */
  private *jsonListPieces(resource: Resource, items: ApiObject[]): Generator<string> {
    const meta = JSON.stringify({ resourceVersion: String(this.rv) });
    yield `{"kind":${JSON.stringify(`${resource.kind}List`)},"apiVersion":${JSON.stringify(resource.apiVersion)},"metadata":${meta},"items":[`;
    for (const [i, o] of items.entries()) yield (i === 0 ? '' : ',') + this.itemJSON(o);
    yield ']}';
  }

  /** A protobuf list answer, piece by piece: its head (which carries the list's length), the entries, its tail. */
  private *protobufListPieces(resource: Resource, entries: Buffer[]): Generator<Buffer> {
    let size = 0;
    for (const e of entries) size += e.length;
    const { head, tail } = listFrame(resource.kind as ProtobufKind, String(this.rv), size);
    yield head;
    yield* entries;
    yield tail;
  }

  /**
   * Writes an answer's pieces in chunks of about LIST_CHUNK_SIZE (characters of text, or bytes), each once the client
   * has taken the one before: backpressure, so that the next pieces are made only then. Ends the answer after the last.
   */
  private writeInChunks(res: ServerResponse, client: ClientStats, pieces: Iterator<string> | Iterator<Buffer>): void {
    const pump = (): void => {
      for (;;) {
        const chunk: (string | Buffer)[] = [];
        let size = 0;
        let next = pieces.next();
        for (; !next.done; next = pieces.next()) {
          chunk.push(next.value);
          size += next.value.length;
          if (size >= LIST_CHUNK_SIZE) break;
        }
        const data = chunk.every((p) => typeof p === 'string') ? chunk.join('') : Buffer.concat(chunk as Buffer[]);
        client.listBytes += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
        if (next.done) {
          res.end(data);
          return;
        }
        if (!res.write(data)) {
          if (!res.destroyed) res.once('drain', pump);
          return;
        }
      }
    };
    pump();
  }

  /**
   * The list's items as protobuf list entries, when the client asks for protobuf first (as kube-proxy does) and the
   * kind is one protobuf.ts encodes; null (answer in JSON) otherwise, or when an item cannot be encoded.
   */
  private protobufEntries(req: IncomingMessage, resource: Resource, items: ApiObject[]): Buffer[] | null {
    const first = (req.headers.accept ?? '').split(',')[0]!.split(';')[0]!.trim();
    if (!this.protobuf || first !== PROTOBUF_CONTENT_TYPE) return null;
    const kind = resource.kind;
    if ((kind !== 'Service' && kind !== 'EndpointSlice') || resource.apiVersion !== PROTOBUF_KINDS[kind].apiVersion) return null;
    const entries: Buffer[] = [];
    for (const o of items) {
      const entry = this.protobufEntry(o, kind);
      if (entry === null) return null;
      entries.push(entry);
    }
    return entries;
  }

  /** An object as a protobuf list entry, encoded once per resourceVersion; null when it cannot be encoded. */
  private protobufEntry(o: ApiObject, kind: ProtobufKind): Buffer | null {
    const rv = o.metadata?.resourceVersion;
    const cached = this.encodedProtobuf.get(o);
    if (cached && cached.rv === rv) return cached.entry;
    let entry: Buffer | null = null;
    try {
      entry = listEntry(encodeItem(kind, o as Record<string, unknown>));
    } catch (e) {
      if (!(e instanceof NotEncodable)) throw e;
    }
    this.encodedProtobuf.set(o, { rv, entry });
    return entry;
  }

  /**
   * Encodes every stored object as a list item now, in JSON and (Services, EndpointSlices) protobuf, as a watch
   * cache that keeps serialized objects has them: a benchmark then measures the proxy reading a list, not this
   * process (JavaScript, several times slower than kube-apiserver's Go) making its first one.
   */
  warm(): void {
    for (const o of this.store.values()) {
      this.itemJSON(o);
      if (this.protobuf && (o.kind === 'Service' || o.kind === 'EndpointSlice')) this.protobufEntry(o, o.kind);
    }
  }

  /** An object as a list item (without kind and apiVersion, as typed lists carry them), encoded once per resourceVersion. */
  private itemJSON(o: ApiObject): string {
    const rv = o.metadata?.resourceVersion;
    const cached = this.encoded.get(o);
    if (cached && cached.rv === rv) return cached.text;
    const { kind: _k, apiVersion: _a, ...rest } = o;
    const text = JSON.stringify(rest);
    this.encoded.set(o, { rv, text });
    return text;
  }

  private startWatch(req: IncomingMessage, res: ServerResponse, w: WatchConn, query: Record<string, string>, rec: RequestRecord): void {
    const rvText = query.resourceVersion ?? '';
    let from: number | null = null;
    if (rvText !== '' && rvText !== '0') {
      from = Number(rvText);
      if (!Number.isSafeInteger(from) || from < 0) {
        this.fail(req, res, 400, `invalid resourceVersion ${JSON.stringify(rvText)}`, rec);
        return;
      }
    }
    const tooOld = from !== null && from < this.compactedRv;
    if (res.destroyed || w.socket.destroyed) return; // the client gave up (while the request was held)
    if (tooOld && this.tooOldAs === 'status') {
      this.fail(req, res, 410, `too old resource version: ${from} (${this.compactedRv})`, rec);
      return;
    }
    rec.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    if (tooOld) {
      const line = `${JSON.stringify({ type: 'ERROR', object: statusBody(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`) })}\n`;
      w.client.errors++;
      w.client.watchBytes += Buffer.byteLength(line);
      res.end(line);
      return;
    }
    this.watches.add(w);
    w.client.watches++;
    w.client.openWatches++;
    res.on('close', () => this.closeWatch(w));
    if (from === null) {
      const current = [...this.store.values()].filter((o) => o.kind === w.resource.kind && this.matches(w, o));
      current.sort((a, b) => Number(a.metadata?.resourceVersion) - Number(b.metadata?.resourceVersion));
      for (const o of current) this.write(w, 'ADDED', o);
    } else {
      w.client.resumedWatches++;
      const before = w.client.watchEvents;
      for (const e of this.history) if (e.rv > from && e.kind === w.resource.kind) this.deliver(w, e);
      w.client.replayedEvents += w.client.watchEvents - before;
    }
    const timeout = Number(query.timeoutSeconds);
    if (Number.isFinite(timeout) && timeout > 0) {
      w.timer = setTimeout(() => this.closeWatch(w), timeout * 1000);
      w.timer.unref();
    }
  }

  private route(path: string): { resource: Resource; namespace: string | null; name: string | null } | null {
    for (const r of this.resources) {
      if (!path.startsWith(`${r.prefix}/`)) continue;
      const parts = path
        .slice(r.prefix.length + 1)
        .split('/')
        .filter(Boolean)
        .map(decodeURIComponent);
      if (parts[0] === r.plural && parts.length <= 2) return { resource: r, namespace: null, name: parts[1] ?? null };
      if (r.namespaced && parts[0] === 'namespaces' && parts[2] === r.plural && parts.length >= 3 && parts.length <= 4) {
        return { resource: r, namespace: parts[1], name: parts[3] ?? null };
      }
    }
    return null;
  }

  /** /_test/ endpoints (POST, JSON bodies) for a server in another process. */
  private async handleControl(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const body = (text.trim() ? JSON.parse(text) : {}) as Record<string, any>;
    const ok = (result: unknown) => this.send(req, res, 200, { ok: true, result }, null);
    if (req.method === 'GET' && url.pathname === '/_test/objects') return ok(this.list());
    if (req.method === 'GET' && url.pathname === '/_test/clients') return ok(this.clientStats());
    if (req.method !== 'POST') return this.fail(req, res, 405, 'controls take POST', null);
    switch (url.pathname) {
      case '/_test/apply': {
        const items: ApiObject[] = Array.isArray(body.items) ? body.items : [body];
        return ok(items.map((o) => this.apply(o).metadata?.resourceVersion));
      }
      case '/_test/delete':
        return ok(this.remove(body.kind, body.namespace, body.name));
      case '/_test/drop-watches':
        return ok(this.dropWatches());
      case '/_test/expire-watches':
        return ok(this.expireWatches());
      case '/_test/compact':
        return ok(this.compact());
      case '/_test/fail-next':
        return ok(this.failNext(Number(body.n ?? 1), { status: body.status, only: body.only }));
      case '/_test/delay-next':
        return ok(this.delayNext(Number(body.n ?? 1), Number(body.ms ?? 1000), { only: body.only }));
      case '/_test/silence-watches':
        return ok(this.silenceWatches());
      case '/_test/bookmark':
        return ok(this.bookmark());
      default:
        return this.fail(req, res, 404, `no control ${url.pathname}`, null);
    }
  }
}
