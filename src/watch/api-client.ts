// What this proxy adds to client-node's way of reaching the API server, to behave as client-go (and so kube-proxy):
// - bearer tokens from a file (kubeconfig `tokenFile`, which kubeadm's kube-proxy kubeconfig uses, and the
//   in-cluster service-account token), re-read at most once a minute so that rotated (projected) tokens are
//   picked up, as client-go's CachedFileTokenSource. client-node 2.0.1 reads `token-file` (a key kubeconfig
//   does not have) once at load and ignores `tokenFile`: a kubeadm kubeconfig has no credentials there.
// - the client-side rate limit of requests (clientConnection.qps / burst), client-go's token bucket.
// - what the rest_client_* metrics count, reported to an observer.
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import type { KubeConfig, User } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { log } from '../log.ts';

/** client-node's authenticator interface (not exported by name). */
type Authenticator = Parameters<KubeConfig['addAuthenticator']>[0];

/** client-go's CachedFileTokenSource period. */
export const TOKEN_REREAD_MS = 60_000;

/** Where a user's bearer token comes from: a file, with the kubeconfig's static token (if any) as the fallback. */
export interface TokenFileUser {
  file: string;
  /** kubeconfig `token`, used when the file cannot be read (client-go: the file wins when it can be). */
  fallback: string | null;
}

/**
 * The `tokenFile` of each user of a kubeconfig (relative paths resolved against the kubeconfig's directory, as
 * client-go), by user name.
 */
export async function tokenFileUsers(kubeconfig: string): Promise<Map<string, TokenFileUser>> {
  const doc = parseYaml(await readFile(kubeconfig, 'utf8')) as { users?: { name?: unknown; user?: Record<string, unknown> }[] } | null;
  const out = new Map<string, TokenFileUser>();
  for (const u of doc?.users ?? []) {
    const file = u.user?.tokenFile ?? u.user?.['token-file'];
    if (typeof u.name !== 'string' || typeof file !== 'string' || file === '') continue;
    const token = u.user?.token;
    out.set(u.name, { file: isAbsolute(file) ? file : join(dirname(kubeconfig), file), fallback: typeof token === 'string' && token !== '' ? token : null });
  }
  return out;
}

/** A client-node authenticator for token-file users: the token re-read once it is a minute old, trimmed. */
export class TokenFileAuth implements Authenticator {
  readonly #users: ReadonlyMap<string, TokenFileUser>;
  readonly #now: () => number;
  readonly #cache = new Map<string, { token: string; readAt: number }>();

  constructor(users: ReadonlyMap<string, TokenFileUser>, now: () => number = () => Date.now()) {
    this.#users = users;
    this.#now = now;
  }

  isAuthProvider(user: User): boolean {
    return this.#users.has(user.name);
  }

  async applyAuthentication(user: User, opts: { headers?: Record<string, unknown> }): Promise<void> {
    const token = await this.token(user.name);
    if (token === null) return;
    opts.headers ??= {};
    opts.headers.Authorization = `Bearer ${token}`;
  }

  /** The user's current token: the cached one while fresh, else the file's; on a read error the last good one. */
  async token(name: string): Promise<string | null> {
    const u = this.#users.get(name);
    if (!u) return null;
    const cached = this.#cache.get(name);
    if (cached && this.#now() - cached.readAt < TOKEN_REREAD_MS) return cached.token;
    try {
      const token = (await readFile(u.file, 'utf8')).trim();
      if (token === '') throw new Error('the file is empty');
      this.#cache.set(name, { token, readAt: this.#now() });
      return token;
    } catch (e) {
      const fallback = cached?.token ?? u.fallback;
      log.warn(
        { event: 'token-file-unreadable', file: u.file, err: (e as Error).message },
        `cannot read the token file; ${fallback ? 'using the last token' : 'no token'}`,
      );
      return fallback;
    }
  }
}

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
  /** Until the response headers (a watch's stream is not counted). */
  seconds: number;
  /** Bytes of the response body, when read whole (lists). */
  responseBytes: number | null;
}

/** Receives what the API client does (the metrics implement it). */
export interface RequestObserver {
  rateLimited(verb: string, host: string, seconds: number): void;
  request(r: RequestRecord): void;
}

/** Everything the reflectors share about reaching the API server. */
export interface ApiClient {
  limiter: TokenBucket;
  observer: RequestObserver | null;
}
