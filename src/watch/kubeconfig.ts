// Where the API server is and how to authenticate to it, as client-go's clientcmd (a kubeconfig file) and
// rest.InClusterConfig (a pod's service account) read it, for the proxy's own HTTP client (api-client.ts).
//
// A kubeconfig: the current-context's cluster (server, certificate-authority[-data], insecure-skip-tls-verify,
// tls-server-name) and user (token, tokenFile, client-certificate[-data] / client-key[-data], username /
// password), relative paths resolved against the kubeconfig's directory (clientcmd's ResolveLocalPaths), the
// files it names read at load so that a missing one stops the proxy with a clear message before it touches
// the node. Bearer tokens from a file are re-read once a minute (TokenFile below), never at load:
// kubeadm's kube-proxy kubeconfig names the pod's projected service-account token, which rotates.
//
// Users with an `exec` or `auth-provider` plugin (cloud credentials: aws, gke-gcloud-auth-plugin, oidc...) are
// the one case left to @kubernetes/client-node, loaded only for them: each plugin has its own protocol and
// caching, client-node implements them, and what it costs in memory (about 100 MB resident) is paid only by
// clusters that need it.
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { StartupError } from '../errors.ts';
import { log } from '../log.ts';
import { parseYamlDocument } from '../yaml-document.ts';

export class KubeConfigError extends StartupError {
  constructor(message: string) {
    super(message);
    this.name = 'KubeConfigError';
  }
}

/** The pod's service-account files (client-go's rest.InClusterConfig reads the same). */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** What a request carries to authenticate: headers, and a client certificate some plugins hand out. */
export interface RequestCredentials {
  headers: Record<string, string>;
  cert?: Buffer | string;
  key?: Buffer | string;
}

/** Adds a user's credentials to one request (called per request: tokens rotate). */
export type Authenticate = (r: RequestCredentials) => Promise<void>;

/** How to reach one API server as one user. */
export interface KubeAccess {
  /** The API server's URL, without a trailing slash. */
  server: string;
  /** Where this came from, for messages: the kubeconfig's path, "in-cluster config" or "--master". */
  origin: string;
  /** PEM of the CAs to trust (none: the system's). */
  ca: Buffer | null;
  /** insecure-skip-tls-verify. */
  insecure: boolean;
  /** tls-server-name: the name to verify the server's certificate against (SNI too), instead of the URL's host. */
  tlsServerName: string | null;
  /** The client certificate and key (PEM). */
  cert: Buffer | null;
  key: Buffer | null;
  authenticate: Authenticate;
}

/** One cluster and user of a kubeconfig as written, paths already resolved against the kubeconfig's directory. */
export interface KubeConfigEntry {
  file: string;
  context: string;
  cluster: { name: string; fields: Record<string, unknown> };
  user: { name: string; fields: Record<string, unknown> };
}

/** client-go's CachedFileTokenSource period. */
export const TOKEN_REREAD_MS = 60_000;

/**
 * A bearer token from a file, as client-go's CachedFileTokenSource: re-read once it is a minute old (rotated,
 * projected service-account tokens), trimmed; while the file cannot be read, the last good token, else the
 * fallback (the kubeconfig's static token: client-go prefers the file when it can be read).
 */
export class TokenFile {
  readonly file: string;
  readonly #fallback: string | null;
  readonly #now: () => number;
  #cached: { token: string; readAt: number } | null = null;

  constructor(file: string, fallback: string | null, now: () => number = () => Date.now()) {
    this.file = file;
    this.#fallback = fallback;
    this.#now = now;
  }

  async token(): Promise<string | null> {
    const cached = this.#cached;
    if (cached && this.#now() - cached.readAt < TOKEN_REREAD_MS) return cached.token;
    try {
      const token = (await readFile(this.file, 'utf8')).trim();
      if (token === '') throw new Error('the file is empty');
      this.#cached = { token, readAt: this.#now() };
      return token;
    } catch (e) {
      const fallback = cached?.token ?? this.#fallback;
      log.warn(
        { event: 'token-file-unreadable', file: this.file, err: (e as Error).message },
        `cannot read the token file; ${fallback ? 'using the last token' : 'no token'}`,
      );
      return fallback;
    }
  }

  readonly authenticate: Authenticate = async (r) => {
    const token = await this.token();
    if (token !== null) r.headers.Authorization = `Bearer ${token}`;
  };
}

const record = (v: unknown): Record<string, unknown> => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
const text = (v: unknown): string => (typeof v === 'string' ? v : '');

/** Reads a file the configuration names; a KubeConfigError naming the file (and who named it) when it cannot. */
async function readNamed(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new KubeConfigError(`${what} ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
  }
}

/** The named entry of a kubeconfig list (clusters, contexts, users). */
function entry(doc: Record<string, unknown>, list: string, name: string): Record<string, unknown> | null {
  const items = Array.isArray(doc[list]) ? (doc[list] as unknown[]) : [];
  const found = items.map(record).find((i) => i.name === name);
  return found ? record(found[list.slice(0, -1)]) : null;
}

/** clientcmd's ResolveLocalPaths: the file fields of a cluster or user, relative to the kubeconfig's directory. */
function resolvePaths(fields: Record<string, unknown>, keys: string[], base: string): Record<string, unknown> {
  const out = { ...fields };
  for (const k of keys) {
    const v = out[k];
    if (typeof v === 'string' && v !== '' && !isAbsolute(v)) out[k] = join(base, v);
  }
  return out;
}

/**
 * The current-context (or `context`) of a kubeconfig file: its cluster and user as written, file paths resolved.
 * Reads no file but the kubeconfig.
 */
export async function readKubeConfig(file: string, context: string | null = null): Promise<KubeConfigEntry> {
  let doc: Record<string, unknown>;
  try {
    doc = record(parseYamlDocument(await readFile(file, 'utf8')));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new KubeConfigError(`${err.path ?? file}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
  }
  const name = context ?? text(doc['current-context']);
  const ctx = entry(doc, 'contexts', name);
  const clusterName = text(ctx?.cluster);
  const cluster = ctx ? entry(doc, 'clusters', clusterName) : null;
  if (!ctx || !cluster) throw new KubeConfigError(`${file}: no cluster for the current context ${JSON.stringify(name)}`);
  const userName = text(ctx.user);
  const base = dirname(file);
  return {
    file,
    context: name,
    cluster: { name: clusterName, fields: resolvePaths(cluster, ['certificate-authority'], base) },
    // A context without a user, or naming one the file lacks, authenticates with nothing (as clientcmd).
    user: { name: userName, fields: resolvePaths(entry(doc, 'users', userName) ?? {}, ['client-certificate', 'client-key', 'tokenFile', 'token-file'], base) },
  };
}

/** `<file>-data` (base64) or the file `<file>`, as clientcmd: the data wins when both are set. */
async function pemOf(fields: Record<string, unknown>, key: string, where: string): Promise<Buffer | null> {
  const data = text(fields[`${key}-data`]);
  if (data !== '') return Buffer.from(data, 'base64');
  const path = text(fields[key]);
  return path === '' ? null : readNamed(path, `${where}: ${key}`);
}

/** A server URL as clientcmd takes it: "host:port" alone means https. */
function serverURL(server: string, where: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(server) ? server : `https://${server}`;
  if (!URL.canParse(withScheme) || !/^https?:$/.test(new URL(withScheme).protocol)) {
    throw new KubeConfigError(`${where}: server ${JSON.stringify(server)} is not an http(s) URL`);
  }
  return withScheme.replace(/\/+$/, '');
}

const basic = (username: string, password: string) => `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;

/** The user's way of authenticating: a static or file token, basic auth, a plugin (client-node), or nothing. */
async function userAuthenticate(e: KubeConfigEntry): Promise<Authenticate> {
  const u = e.user.fields;
  const where = `${e.file}: user ${JSON.stringify(e.user.name)}`;
  if (u.exec !== undefined || u['auth-provider'] !== undefined) return pluginAuthenticate(e);
  const token = text(u.token);
  // client-go's key is tokenFile; token-file is what client-node 2.0 read, kept for kubeconfigs written for it.
  const tokenFile = text(u.tokenFile) || text(u['token-file']);
  const username = text(u.username);
  const password = text(u.password);
  if ((token !== '' || tokenFile !== '') && (username !== '' || password !== '')) {
    throw new KubeConfigError(`${where}: more than one authentication method (token and username/password), only one is allowed`);
  }
  if (tokenFile !== '') {
    // client-go: the file wins over a static token once it can be read.
    return new TokenFile(tokenFile, token || null).authenticate;
  }
  if (token !== '') {
    return async (r) => {
      r.headers.Authorization = `Bearer ${token}`;
    };
  }
  if (username !== '' || password !== '') {
    return async (r) => {
      r.headers.Authorization = basic(username, password);
    };
  }
  return async () => {};
}

/**
 * exec / auth-provider users: client-node's authenticators (each plugin's protocol and token cache are its own),
 * loaded here only, so that no other cluster pays for client-node. Its answer is read for the Authorization
 * header and a client certificate; the connection is still ours.
 */
async function pluginAuthenticate(e: KubeConfigEntry): Promise<Authenticate> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(e.file);
    kc.setCurrentContext(e.context);
  } catch (err) {
    throw new KubeConfigError(`${e.file}: ${(err as Error).message}`);
  }
  return async (r) => {
    const opts: { headers: Record<string, string>; cert?: Buffer | string; key?: Buffer | string; auth?: string } = { headers: {} };
    await kc.applyToHTTPSOptions(opts);
    if (opts.headers.Authorization) r.headers.Authorization = opts.headers.Authorization;
    else if (opts.auth) r.headers.Authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    if (opts.cert && opts.key) {
      r.cert = opts.cert;
      r.key = opts.key;
    }
  };
}

/** The access a kubeconfig entry describes, its files (CA, client certificate and key) read. */
async function accessOf(e: KubeConfigEntry, master: string | null): Promise<KubeAccess> {
  const c = e.cluster.fields;
  const u = e.user.fields;
  const clusterWhere = `${e.file}: cluster ${JSON.stringify(e.cluster.name)}`;
  const userWhere = `${e.file}: user ${JSON.stringify(e.user.name)}`;
  const server = master ?? text(c.server);
  if (server === '') throw new KubeConfigError(`${clusterWhere}: no server`);
  const insecure = c['insecure-skip-tls-verify'] === true;
  const ca = await pemOf(c, 'certificate-authority', clusterWhere);
  if (insecure && ca) throw new KubeConfigError(`${clusterWhere}: a certificate-authority with insecure-skip-tls-verify is not allowed (as client-go)`);
  const cert = await pemOf(u, 'client-certificate', userWhere);
  const key = await pemOf(u, 'client-key', userWhere);
  if ((cert === null) !== (key === null)) throw new KubeConfigError(`${userWhere}: client-certificate and client-key go together; only one is set`);
  const access: KubeAccess = {
    server: serverURL(server, master ? '--master' : clusterWhere),
    origin: e.file,
    ca,
    insecure,
    tlsServerName: text(c['tls-server-name']) || null,
    cert,
    key,
    authenticate: await userAuthenticate(e),
  };
  if (access.server.startsWith('http:') && !insecure) {
    throw new KubeConfigError(`${e.file}: plain http:// server ${access.server} needs insecure-skip-tls-verify: true`);
  }
  return access;
}

/**
 * client-go's rest.InClusterConfig: https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT, the service account's
 * token (read now, so that a pod without one fails at once, then re-read once a minute) and its ca.crt (without
 * one, the system's CAs, as client-go after logging it).
 */
export async function inClusterAccess(env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR): Promise<KubeAccess> {
  const host = env.KUBERNETES_SERVICE_HOST ?? '';
  const port = env.KUBERNETES_SERVICE_PORT ?? '';
  if (host === '' || port === '') throw new KubeConfigError('not running in a pod (KUBERNETES_SERVICE_HOST/PORT are not set): pass --kubeconfig');
  const tokenFile = join(dir, 'token');
  const token = (await readNamed(tokenFile, 'in-cluster config: service account token')).toString('utf8').trim();
  let ca: Buffer | null = null;
  try {
    ca = await readFile(join(dir, 'ca.crt'));
  } catch {
    // client-go logs and goes on with the system's CAs; the TLS handshake then says what is wrong.
  }
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    origin: 'in-cluster config',
    ca,
    insecure: false,
    tlsServerName: null,
    cert: null,
    key: null,
    authenticate: new TokenFile(tokenFile, token).authenticate,
  };
}

/** --master alone (no kubeconfig): that URL, no credentials, as client-go's BuildConfigFromFlags. */
function masterAccess(master: string): KubeAccess {
  return {
    server: serverURL(master, '--master'),
    origin: '--master',
    ca: null,
    insecure: false,
    tlsServerName: null,
    cert: null,
    key: null,
    authenticate: async () => {},
  };
}

/**
 * Loads --kubeconfig, or the in-cluster config when null, as kube-proxy's createClient: --master replaces the
 * kubeconfig's server (alone: that URL, no credentials). Rejects with a KubeConfigError with a clear message.
 */
export async function loadKubeConfig(file: string | null, master: string | null = null): Promise<KubeAccess> {
  if (file) return accessOf(await readKubeConfig(file), master);
  if (master) return masterAccess(master);
  return inClusterAccess();
}
