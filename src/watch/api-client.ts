// The proxy's HTTP client of the API server, on node:http / node:https (not undici or fetch: loading either
// costs about 30 MB resident, @kubernetes/client-node about 95 MB with undici; see issue 13). What it does, as
// client-go:
// - one keep-alive agent per API server (client-go's shared transport), TCP keep-alive every 30 s;
// - every request waits for the client-side rate limiter (clientConnection.qps / burst, client-go's token bucket)
//   and is reported to the observer (the rest_client_* metrics);
// - credentials per request (kubeconfig.ts: tokens from files are re-read as they rotate);
// - a request without response headers after REQUEST_HEADERS_TIMEOUT_MS is abandoned; callers bound the rest
//   (a list's whole answer, an Event's post) with their signal, and a watch with its silent-watch timer.
import { type Agent, type IncomingMessage, type OutgoingHttpHeaders, request as httpRequest, Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { VERSION } from '../version.ts';
import type { KubeAccess, RequestCredentials } from './kubeconfig.ts';

/** client-go's token bucket rate limiter: `burst` requests at once, then `qps` per second. qps <= 0: no limit. */
export class TokenBucket {
  readonly #qps: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #last: number;

  constructor(qps: number, burst: number, now: () => number = () => performance.now()) {
    this.#qps = qps;
    this.#burst = Math.max(1, burst);
    this.#now = now;
    this.#tokens = this.#burst;
    this.#last = now();
  }

  /** Takes a token; resolves with how long it waited (ms). Rejects when the signal aborts first. */
  async take(signal?: AbortSignal): Promise<number> {
    if (this.#qps <= 0) return 0;
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) * this.#qps) / 1000);
    this.#last = now;
    // Reserve now (the count may go negative): later callers queue behind this one, as client-go's Wait.
    this.#tokens -= 1;
    if (this.#tokens >= 0) return 0;
    const waitMs = (-this.#tokens * 1000) / this.#qps;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, waitMs);
      signal?.addEventListener(
        'abort',
        () => {
          clearTimeout(t);
          reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        },
        { once: true },
      );
    });
    return waitMs;
  }
}

/** One API request as the rest_client_* metrics count it. */
export interface RequestRecord {
  /** The HTTP method ("GET" for lists and watches, as client-go labels them). */
  verb: string;
  /** host:port of the API server. */
  host: string;
  /** The HTTP status, or "<error>" when no answer came (client-go's label). */
  code: string;
  /** Until the response is read (a watch: until its headers; its stream is not counted). */
  seconds: number;
  /** Bytes of the response body, when read whole (lists). */
  responseBytes: number | null;
}

/** Receives what the API client does (the metrics implement it). */
export interface RequestObserver {
  rateLimited(verb: string, host: string, seconds: number): void;
  request(r: RequestRecord): void;
}

/** What every client of the process shares: one rate limiter (client-go's per-client limiter) and one observer. */
export interface ApiClientShared {
  limiter: TokenBucket;
  observer: RequestObserver | null;
}

/** An answer that never came: no response headers this long after the request was sent. */
export const REQUEST_HEADERS_TIMEOUT_MS = 30_000;

/** Resends of a GET that met a kept-alive connection closed under it (each such connection leaves the pool). */
const MAX_STALE_CONNECTION_RETRIES = 8;

/** The User-Agent, in client-go's DefaultKubernetesUserAgent form (program/version (os/arch)). */
export const USER_AGENT = `kube-proxy-ts/v${VERSION} (${process.platform}/${process.arch})`;

export interface ApiRequest {
  method: 'GET' | 'POST';
  /** The path under the server's URL, with its query string. */
  path: string;
  /** A JSON body. */
  body?: string;
  /** The Accept header (default application/json). */
  accept?: string;
  /** Ends the request (and its answer's stream) when it aborts. */
  signal?: AbortSignal;
}

/** What a request's reader made of the answer, and how many body bytes it read (null: not read whole). */
export interface ReadAnswer<T> {
  value: T;
  bytes: number | null;
}

/** Error answers of the API server (its status code and its Status message). */
export class ApiStatusError extends Error {
  readonly statusCode: number;
  constructor(statusCode: number, message: string) {
    super(message);
    this.name = 'ApiStatusError';
    this.statusCode = statusCode;
  }
}

/** The whole body of an answer, as text (error answers: small). */
export async function readText(res: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of res) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

/** A message from an error answer (a Status object), or the raw start of its body. */
export function statusMessage(status: number, body: string): string {
  try {
    const o = JSON.parse(body) as { message?: unknown } | null;
    if (typeof o?.message === 'string') return `HTTP ${status}: ${o.message}`;
  } catch {
    // not JSON
  }
  return `HTTP ${status}${body ? `: ${body.slice(0, 200)}` : ''}`;
}

export class ApiClient {
  readonly access: KubeAccess;
  /** host:port of the API server, the rest_client_* metrics' host label. */
  readonly host: string;
  readonly #shared: ApiClientShared | null;
  readonly #agent: Agent;
  readonly #send: typeof httpRequest;

  constructor(access: KubeAccess, shared: ApiClientShared | null = null) {
    this.access = access;
    this.host = new URL(access.server).host;
    this.#shared = shared;
    const https = access.server.startsWith('https:');
    const keepAlive = { keepAlive: true, keepAliveMsecs: 30_000 };
    this.#agent = https
      ? new HttpsAgent({
          ...keepAlive,
          ca: access.ca ?? undefined,
          cert: access.cert ?? undefined,
          key: access.key ?? undefined,
          rejectUnauthorized: !access.insecure,
          servername: access.tlsServerName ?? undefined,
        })
      : new HttpAgent(keepAlive);
    this.#send = https ? httpsRequest : httpRequest;
  }

  /**
   * Sends one request once the rate limiter lets it, and hands its answer (any status) to `read`; the request is
   * reported to the observer when `read` resolves or either fails. The answer's stream ends with the signal.
   */
  async request<T>(req: ApiRequest, read: (res: IncomingMessage) => Promise<ReadAnswer<T>>): Promise<T> {
    const shared = this.#shared;
    if (shared) {
      const waited = await shared.limiter.take(req.signal);
      shared.observer?.rateLimited(req.method, this.host, waited / 1000);
    }
    const started = performance.now();
    let code = '<error>';
    let bytes: number | null = null;
    try {
      const res = await this.#open(req);
      code = String(res.statusCode ?? 0);
      const answer = await read(res);
      bytes = answer.bytes;
      return answer.value;
    } finally {
      shared?.observer?.request({ verb: req.method, host: this.host, code, seconds: (performance.now() - started) / 1000, responseBytes: bytes });
    }
  }

  /** Closes the idle keep-alive connections. */
  close(): void {
    this.#agent.destroy();
  }

  /** Sends the request; resolves with the answer once its headers are in. */
  async #open(req: ApiRequest): Promise<IncomingMessage> {
    const signal = req.signal;
    signal?.throwIfAborted();
    const creds: RequestCredentials = { headers: {} };
    await this.access.authenticate(creds);
    const headers: OutgoingHttpHeaders = { Accept: req.accept ?? 'application/json', 'User-Agent': USER_AGENT, ...creds.headers };
    if (req.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(req.body);
    }
    const send = (retries: number) =>
      new Promise<IncomingMessage>((resolve, reject) => {
        const r = this.#send(new URL(this.access.server + req.path), {
          method: req.method,
          headers,
          agent: this.#agent,
          // A plugin's client certificate (exec credentials); the agent keeps a connection per certificate.
          ...(creds.cert && creds.key ? { cert: creds.cert, key: creds.key } : {}),
        });
        const timer = setTimeout(
          () => r.destroy(new Error(`no answer from ${this.host} within ${REQUEST_HEADERS_TIMEOUT_MS / 1000} s`)),
          REQUEST_HEADERS_TIMEOUT_MS,
        );
        const abort = () => r.destroy(signal!.reason instanceof Error ? signal!.reason : new Error('aborted'));
        signal?.addEventListener('abort', abort, { once: true });
        r.once('close', () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', abort);
        });
        r.once('error', (e: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          // A kept-alive connection the server closed as it was reused: send again (on the next idle connection
          // or a new one), as Go's transport does for requests that cannot have been processed.
          if (retries > 0 && r.reusedSocket && e.code === 'ECONNRESET' && req.method === 'GET' && !signal?.aborted) resolve(send(retries - 1));
          else reject(e);
        });
        r.once('response', (res) => {
          clearTimeout(timer);
          // An error after the headers (the signal, a cut connection) ends the answer's stream: its reader sees it.
          r.on('error', (e) => res.destroy(e));
          resolve(res);
        });
        r.end(req.body);
      });
    return send(MAX_STALE_CONNECTION_RETRIES);
  }
}
