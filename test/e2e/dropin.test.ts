// kube-proxy-ts as a drop-in for kube-proxy on a node (node-a of the sandbox): kubeadm's ConfigMap (config.conf
// with every zero value, kubeconfig.conf with user.tokenFile) and kubeadm's DaemonSet arguments, against an API
// server inside node-a. It routes, reports upstream's health bodies and metrics, sets the conntrack timeouts
// in its own network namespace (and leaves nf_conntrack_max, read-only there, alone), and exits 1 for a restart
// when its configuration file changes or its Node is deleted, its rules left in place.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import { runProbe } from '../../src/lab/sandbox/probe.ts';
import { binCommand, type ProxyProcess, startProxy } from '../../src/lab/sandbox/proxy.ts';
import { REPO_ROOT, type Scenario, parseProbeTarget } from '../../src/lab/sandbox/scenario.ts';
import { ADDRESSES, Topology } from '../../src/lab/sandbox/topology.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const API_MAIN = path.join(REPO_ROOT, 'test', 'apiserver', 'main.ts');
const TOKEN = 'sa-token-from-the-projected-volume';
const KUBEADM = path.join(REPO_ROOT, 'test/fixtures/kubeadm');

const scenario = {
  pods: [
    { name: 'a1', node: 'node-a', ip: '198.19.1.11', ports: [{ port: 8080, protocol: 'tcp' }] },
    { name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] },
    { name: 'b1', node: 'node-b', ip: '198.19.2.11', ports: [{ port: 8080, protocol: 'tcp' }] },
  ],
  objects: [],
  probes: [],
} as unknown as Scenario;

const NODE = {
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: 'node-a' },
  status: { addresses: [{ type: 'InternalIP', address: ADDRESSES['node-a'] }] },
};
const OBJECTS = [
  NODE,
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { clusterIP: '198.18.100.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
  },
  {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [
      { addresses: ['198.19.1.11'], nodeName: 'node-a', conditions: { ready: true } },
      { addresses: ['198.19.2.11'], nodeName: 'node-b', conditions: { ready: true } },
    ],
  },
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a drop-in for kube-proxy (iptables mode, kubeadm configuration)', () => {
  let topo: Topology;
  let dir: string;
  let api: ChildProcess;
  let apiUrl = '';
  let proxy: ProxyProcess | null = null;
  const file = (name: string) => path.join(dir, name);

  async function startApi(): Promise<void> {
    writeFileSync(file('objects.yaml'), stringify({ apiVersion: 'v1', kind: 'List', items: OBJECTS }));
    api = topo.spawn('node-a', [
      process.execPath,
      '--disable-warning=ExperimentalWarning',
      API_MAIN,
      '--token',
      TOKEN,
      '--from',
      file('objects.yaml'),
      '--bookmark-ms',
      '1000',
    ]);
    apiUrl = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`the test API server did not start: ${out}`)), 15_000);
      api.stdout?.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const m = /"url":"([^"]+)"/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
  }

  async function ctl(pathname: string, body: unknown): Promise<void> {
    const js = `fetch(${JSON.stringify(apiUrl + pathname)}, {method: 'POST', body: ${JSON.stringify(JSON.stringify(body))}}).then(r => process.exit(r.ok ? 0 : 1))`;
    await topo.execOk('node-a', [process.execPath, '-e', js]);
  }

  /** GET inside node-a: status and body. */
  async function get(url: string): Promise<{ code: number; body: string }> {
    const js = `fetch(${JSON.stringify(url)}).then(async r => console.log(JSON.stringify({code: r.status, body: await r.text()})), e => console.log(JSON.stringify({code: 0, body: e.message})))`;
    return JSON.parse((await topo.execOk('node-a', [process.execPath, '-e', js])).stdout) as { code: number; body: string };
  }

  /** kubeadm's DaemonSet command line. */
  const startKubeadmProxy = () =>
    startProxy(topo, binCommand([`--config=${file('config.conf')}`, '--hostname-override=node-a']), {
      syncTimeoutMs: 30_000,
    });

  const exitOf = (p: ProxyProcess, timeoutMs: number) =>
    new Promise<number | null>((resolve, reject) => {
      if (p.child.exitCode !== null) return resolve(p.child.exitCode);
      const timer = setTimeout(() => reject(new Error(`the proxy did not exit within ${timeoutMs} ms\n${p.output().slice(-3000)}`)), timeoutMs);
      p.child.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kpt-dropin-'));
    topo = await Topology.create(scenario);
    await startPodServers(topo);
    await startApi();
    // kubeadm's ConfigMap, pointed at this API server (plain http in the sandbox: no CA, TLS verification off).
    writeFileSync(file('token'), `${TOKEN}\n`);
    writeFileSync(
      file('kubeconfig.conf'),
      readFileSync(path.join(KUBEADM, 'kubeconfig.conf'), 'utf8')
        .replace(/certificate-authority: .*/, 'insecure-skip-tls-verify: true')
        .replace('https://control-plane.example:6443', apiUrl)
        .replace('/var/run/secrets/kubernetes.io/serviceaccount/token', file('token')),
    );
    writeFileSync(
      file('config.conf'),
      readFileSync(path.join(KUBEADM, 'config.conf'), 'utf8')
        .replace('kubeconfig: /var/lib/kube-proxy/kubeconfig.conf', `kubeconfig: ${file('kubeconfig.conf')}`)
        .replace('clusterCIDR: 10.244.0.0/16', `clusterCIDR: ${ADDRESSES.clusterCIDR}`),
    );
    proxy = await startKubeadmProxy();
  });

  afterAll(async () => {
    await proxy?.stop(5000);
    api?.kill('SIGTERM');
    await topo?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('authenticates with the tokenFile and routes', async () => {
    // Each connection picks an endpoint at random: with 8 tries, one endpoint answered all of them in about one run
    // in 128 (it happened in CI); with 24, one in four million.
    const r = await runProbe(topo, { from: 'pod:a2', to: parseProbeTarget('198.18.100.10:80/tcp')!, tries: 24, timeoutMs: 1000 });
    const pods = new Set(r.tries.map((t) => (typeof t === 'object' ? t.answer.pod : t)));
    expect([...pods].sort()).toEqual(['a1', 'b1']);
  });

  it("answers upstream's health bodies per family, and /healthz, /proxyMode and the metrics on the metrics port", async () => {
    const h = await get('http://127.0.0.1:10256/healthz');
    expect(h.code).toBe(200);
    const body = JSON.parse(h.body) as { nodeEligible: boolean; healthy: boolean; status: Record<string, { healthy: boolean }> };
    expect(body).toMatchObject({ nodeEligible: true, healthy: true, status: { IPv4: { healthy: true }, IPv6: { healthy: true } } });
    expect(await get('http://127.0.0.1:10249/healthz')).toEqual({ code: 200, body: 'ok' });
    expect(await get('http://127.0.0.1:10249/proxyMode')).toEqual({ code: 200, body: 'iptables' });
    const m = (await get('http://127.0.0.1:10249/metrics')).body;
    expect(m).toMatch(/^kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\} \d/m);
    expect(m).toMatch(/^rest_client_requests_total\{code="200",method="GET",host="127\.0\.0\.1:\d+"\} [1-9]/m);
    expect(m).toMatch(/^kubeproxy_proxy_healthz_total\{code="200"\} [1-9]/m);
  });

  it("sets upstream's conntrack timeouts in its network namespace; nf_conntrack_max (read-only there) is left alone", async () => {
    const sysctl = async (name: string) => (await topo.execOk('node-a', ['cat', `/proc/sys/net/netfilter/${name}`])).stdout.trim();
    expect(await sysctl('nf_conntrack_tcp_timeout_established')).toBe('86400');
    expect(await sysctl('nf_conntrack_tcp_timeout_close_wait')).toBe('3600');
    expect(proxy!.output()).toContain('"event":"node-setting-failed","path":"/proc/sys/net/netfilter/nf_conntrack_max"');
  });

  it('503 on /healthz while the Node is tainted ToBeDeletedByClusterAutoscaler', async () => {
    await ctl('/_test/apply', { ...NODE, spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', value: '1700000000', effect: 'NoSchedule' }] } });
    let h = await get('http://127.0.0.1:10256/healthz');
    for (let i = 0; i < 50 && h.code === 200; i++) {
      await sleep(100);
      h = await get('http://127.0.0.1:10256/healthz');
    }
    expect(h.code).toBe(503);
    expect(JSON.parse(h.body)).toMatchObject({ nodeEligible: false, healthy: true });
    await ctl('/_test/apply', NODE);
  });

  it('exits 1 when its configuration file changes, its rules left in place', async () => {
    const p = proxy!;
    writeFileSync(file('config.conf'), `${readFileSync(file('config.conf'), 'utf8')}# edited\n`);
    expect(await exitOf(p, 15_000)).toBe(1);
    expect(p.output()).toContain('"event":"restart","reason":"the configuration file changed"');
    const nat = (await topo.execOk('node-a', ['iptables-save', '-t', 'nat'])).stdout;
    expect(nat).toContain('-A KUBE-SERVICES');
    proxy = await startKubeadmProxy();
  });

  it('exits 1 when its Node is deleted, as upstream', async () => {
    const p = proxy!;
    await ctl('/_test/delete', { kind: 'Node', name: 'node-a' });
    expect(await exitOf(p, 15_000)).toBe(1);
    expect(p.output()).toContain('"event":"restart","reason":"this node\'s Node object was deleted"');
    proxy = null;
  });
});
