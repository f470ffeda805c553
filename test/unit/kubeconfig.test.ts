// Reading a kubeconfig and the in-cluster config as client-go does (kubeconfig.ts), and reaching an https API
// server with what they say: a CA file, client certificates, tls-server-name, tokens from files, basic auth,
// exec plugins (through client-node, loaded for them only). Missing files stop the load with a clear message.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ApiClient, readText } from '../../src/watch/api-client.ts';
import { KubeConfigError, type KubeAccess, inClusterAccess, loadKubeConfig, readKubeConfig } from '../../src/watch/kubeconfig.ts';

const dir = mkdtempSync(join(tmpdir(), 'kpt-kubeconfig-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a kubeconfig with one context, `default` (plus `other` when given), in `where`; returns its path. */
function kubeconfig(
  where: string,
  cluster: Record<string, unknown>,
  user: Record<string, unknown>,
  other?: { cluster: Record<string, unknown>; user: Record<string, unknown> },
): string {
  mkdirSync(where, { recursive: true });
  const f = join(where, 'kubeconfig.conf');
  writeFileSync(
    f,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'default', cluster }, ...(other ? [{ name: 'other', cluster: other.cluster }] : [])],
      users: [{ name: 'default', user }, ...(other ? [{ name: 'other', user: other.user }] : [])],
      contexts: [
        { name: 'default', context: { cluster: 'default', user: 'default', namespace: 'default' } },
        ...(other ? [{ name: 'other', context: { cluster: 'other', user: 'other' } }] : []),
      ],
      'current-context': 'default',
    }),
  );
  return f;
}

async function authorization(access: KubeAccess): Promise<string | undefined> {
  const r = { headers: {} as Record<string, string> };
  await access.authenticate(r);
  return r.headers.Authorization;
}

// ---- a CA, a server certificate for 127.0.0.1 and a client certificate (openssl) ----

const pki = join(dir, 'pki');
const pem = (name: string) => readFileSync(join(pki, name));
function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: pki, stdio: 'ignore' });
}
beforeAll(() => {
  mkdirSync(pki);
  const key = (name: string) => openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', name);
  key('ca.key');
  openssl('req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=test-ca', '-days', '2', '-out', 'ca.crt');
  const sign = (name: string, subject: string, ext: string) => {
    key(`${name}.key`);
    openssl('req', '-new', '-key', `${name}.key`, '-subj', subject, '-out', `${name}.csr`);
    writeFileSync(join(pki, `${name}.ext`), ext);
    openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    );
  };
  sign('server', '/CN=kube-apiserver', 'subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n');
  sign('client', '/CN=system:kube-proxy', 'extendedKeyUsage=clientAuth\n');
});

/** An https server that asks for a client certificate and answers with who it saw. */
async function tlsServer(): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer(
    { key: pem('server.key'), cert: pem('server.crt'), ca: pem('ca.crt'), requestCert: true, rejectUnauthorized: false },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ cn: peer?.subject?.CN ?? null, authorization: req.headers.authorization ?? null, userAgent: req.headers['user-agent'] }));
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

async function get(access: KubeAccess): Promise<{ cn: string | null; authorization: string | null; userAgent: string }> {
  const client = new ApiClient(access);
  try {
    return await client.request({ method: 'GET', path: '/version' }, async (res) => ({ value: JSON.parse(await readText(res)), bytes: null }));
  } finally {
    client.close();
  }
}

describe('a kubeconfig', () => {
  it("kubeadm's (a CA file, a tokenFile) reaches an https server with the file's token, re-read as it rotates", async () => {
    const server = await tlsServer();
    try {
      const where = join(dir, 'kubeadm');
      const f = kubeconfig(where, { server: server.url, 'certificate-authority': join(pki, 'ca.crt') }, { tokenFile: join(where, 'token') });
      writeFileSync(join(where, 'token'), 'sa-token\n');
      const access = await loadKubeConfig(f);
      expect(access).toMatchObject({ server: server.url, origin: f, insecure: false, ca: pem('ca.crt'), cert: null });
      const seen = await get(access);
      expect(seen).toMatchObject({ authorization: 'Bearer sa-token', cn: null });
      expect(seen.userAgent).toMatch(/^kube-proxy-ts\/v\S+ \(linux\/\w+\)$/);
    } finally {
      await server.close();
    }
  });

  it('resolves relative paths against its own directory (CA, client certificate and key, token file)', async () => {
    const where = join(dir, 'relative');
    mkdirSync(join(where, 'certs'), { recursive: true });
    for (const n of ['ca.crt', 'client.crt', 'client.key']) writeFileSync(join(where, 'certs', n), pem(n));
    writeFileSync(join(where, 'tok'), 't1');
    const f = kubeconfig(
      where,
      { server: 'https://198.18.0.1:6443', 'certificate-authority': 'certs/ca.crt' },
      { 'client-certificate': 'certs/client.crt', 'client-key': 'certs/client.key', tokenFile: 'tok' },
    );
    const entry = await readKubeConfig(f);
    expect(entry.cluster.fields['certificate-authority']).toBe(join(where, 'certs/ca.crt'));
    expect(entry.user.fields).toMatchObject({ 'client-certificate': join(where, 'certs/client.crt'), tokenFile: join(where, 'tok') });
    const access = await loadKubeConfig(f);
    expect(access.cert).toEqual(pem('client.crt'));
    expect(await authorization(access)).toBe('Bearer t1');
  });

  it('authenticates with a client certificate (files or -data), verifying the server by tls-server-name', async () => {
    const server = await tlsServer();
    try {
      const b64 = (n: string) => pem(n).toString('base64');
      // The certificate names 127.0.0.1 and kubernetes.default.svc: reached by a name it does not hold.
      const url = server.url.replace('127.0.0.1', 'localhost');
      const f = kubeconfig(
        join(dir, 'client-cert'),
        { server: url, 'certificate-authority-data': b64('ca.crt'), 'tls-server-name': 'kubernetes.default.svc' },
        { 'client-certificate-data': b64('client.crt'), 'client-key': join(pki, 'client.key') },
      );
      const access = await loadKubeConfig(f);
      expect(access.tlsServerName).toBe('kubernetes.default.svc');
      expect(await get(access)).toMatchObject({ cn: 'system:kube-proxy', authorization: null });
      // Without tls-server-name the same URL fails verification.
      await expect(get({ ...access, tlsServerName: null })).rejects.toThrow(/localhost/);
    } finally {
      await server.close();
    }
  });

  it('basic auth, a static token, insecure-skip-tls-verify, and a named context', async () => {
    const f = kubeconfig(
      join(dir, 'basic'),
      { server: 'https://198.18.0.1:6443', 'insecure-skip-tls-verify': true },
      { username: 'admin', password: 's3cret' },
      { cluster: { server: '198.18.0.2:6443' }, user: { token: 'static' } },
    );
    const access = await loadKubeConfig(f);
    expect(access).toMatchObject({ insecure: true, ca: null });
    expect(await authorization(access)).toBe(`Basic ${Buffer.from('admin:s3cret').toString('base64')}`);
    const other = await readKubeConfig(f, 'other');
    expect(other.cluster.fields.server).toBe('198.18.0.2:6443');
    // --master replaces the server; "host:port" alone means https, as clientcmd.
    expect((await loadKubeConfig(f, '198.18.0.3:443')).server).toBe('https://198.18.0.3:443');
  });

  it('an exec plugin user gets its credential through client-node', async () => {
    const where = join(dir, 'exec');
    mkdirSync(where, { recursive: true });
    const plugin = join(where, 'plugin.sh');
    const credential = { apiVersion: 'client.authentication.k8s.io/v1beta1', kind: 'ExecCredential', status: { token: 'from-plugin' } };
    writeFileSync(plugin, `#!/bin/sh\necho '${JSON.stringify(credential)}'\n`);
    chmodSync(plugin, 0o755);
    const f = kubeconfig(
      where,
      { server: 'https://198.18.0.1:6443', 'insecure-skip-tls-verify': true },
      { exec: { apiVersion: 'client.authentication.k8s.io/v1beta1', command: plugin, interactiveMode: 'Never' } },
    );
    expect(await authorization(await loadKubeConfig(f))).toBe('Bearer from-plugin');
  });

  it('stops with a clear message: missing files, two auth methods, CA with insecure, a cert without its key', async () => {
    const where = join(dir, 'bad');
    const load = (cluster: Record<string, unknown>, user: Record<string, unknown>) => loadKubeConfig(kubeconfig(where, cluster, user));
    const server = 'https://198.18.0.1:6443';
    await expect(load({ server, 'certificate-authority': 'missing-ca.crt' }, {})).rejects.toThrow(
      `cluster "default": certificate-authority ${join(where, 'missing-ca.crt')}: no such file`,
    );
    await expect(load({ server }, { 'client-certificate': join(pki, 'client.crt'), 'client-key': '/nonexistent/client.key' })).rejects.toThrow(
      'user "default": client-key /nonexistent/client.key: no such file',
    );
    await expect(load({ server }, { 'client-certificate': join(pki, 'client.crt') })).rejects.toThrow(/client-key go together/);
    await expect(load({ server }, { token: 't', username: 'u', password: 'p' })).rejects.toThrow(/more than one authentication method/);
    await expect(load({ server, 'insecure-skip-tls-verify': true, 'certificate-authority': join(pki, 'ca.crt') }, {})).rejects.toThrow(/not allowed/);
    await expect(load({}, {})).rejects.toThrow('cluster "default": no server');
    await expect(load({ server: 'ftp://198.18.0.1' }, {})).rejects.toThrow(/not an http\(s\) URL/);
    await expect(load({ server }, {})).resolves.toMatchObject({ server });
    await expect(loadKubeConfig(join(where, 'nope'))).rejects.toThrow(KubeConfigError);
  });
});

describe('the in-cluster config', () => {
  it("is client-go's InClusterConfig: KUBERNETES_SERVICE_HOST/PORT, the service account's token (re-read) and CA", async () => {
    const sa = join(dir, 'serviceaccount');
    mkdirSync(sa);
    writeFileSync(join(sa, 'token'), 'projected-1\n');
    writeFileSync(join(sa, 'ca.crt'), pem('ca.crt'));
    const access = await inClusterAccess({ KUBERNETES_SERVICE_HOST: '198.18.0.1', KUBERNETES_SERVICE_PORT: '443' }, sa);
    expect(access).toMatchObject({ server: 'https://198.18.0.1:443', origin: 'in-cluster config', ca: pem('ca.crt'), insecure: false });
    expect(await authorization(access)).toBe('Bearer projected-1');
    const v6 = await inClusterAccess({ KUBERNETES_SERVICE_HOST: '2001:2::1', KUBERNETES_SERVICE_PORT: '6443' }, sa);
    expect(v6.server).toBe('https://[2001:2::1]:6443');
  });

  it('explains what is missing: the environment, the token', async () => {
    await expect(inClusterAccess({}, dir)).rejects.toThrow(/KUBERNETES_SERVICE_HOST\/PORT are not set/);
    await expect(inClusterAccess({ KUBERNETES_SERVICE_HOST: '198.18.0.1', KUBERNETES_SERVICE_PORT: '443' }, join(dir, 'none'))).rejects.toThrow(
      `in-cluster config: service account token ${join(dir, 'none', 'token')}: no such file`,
    );
  });
});
