// The run command as a DaemonSet runs it: a valid kube-proxy command line never exits; a proxy that cannot start
// exits 1 with one clear line (before it touches the node); a bad command line exits 2; logs go to stderr and
// stdout stays the command's output at any verbosity. Nothing here programs the kernel: the failures come
// before any sync, and the successful runs are --dry-run, --write-config-to and --version.
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

const REPO = resolve(import.meta.dirname, '../..');
const BIN = join(REPO, 'bin', 'kube-proxy-ts.js');
const dir = mkdtempSync(join(tmpdir(), 'kpt-startup-'));
// Never change the host's conntrack settings from a test: these leave every sysctl as it is.
const NO_SYSCTLS = ['--conntrack-max-per-core=0', '--conntrack-tcp-timeout-established=0', '--conntrack-tcp-timeout-close-wait=0'];

function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KUBERNETES_')));
  const r = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, ...args], {
    encoding: 'utf8',
    env: { ...clean, ...env },
    timeout: 30_000,
  });
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, lastLine: lines.at(-1) ?? '' };
}

const objects = join(dir, 'objects.yaml');
writeFileSync(
  objects,
  stringify({
    apiVersion: 'v1',
    kind: 'List',
    items: [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '198.18.100.10', ports: [{ port: 80 }] } }],
  }),
);

describe('a proxy that cannot start: exit 1, one clear line, nothing touched', () => {
  it('a kubeconfig that does not exist', () => {
    const r = run(['--kubeconfig', join(dir, 'nope.conf'), ...NO_SYSCTLS]);
    expect(r.code).toBe(1);
    expect(r.lastLine).toBe(`kube-proxy-ts: ${join(dir, 'nope.conf')}: no such file`);
  });

  it('no kubeconfig and no in-cluster environment', () => {
    const r = run([...NO_SYSCTLS]);
    expect(r.code).toBe(1);
    expect(r.lastLine).toBe('kube-proxy-ts: not running in a pod (KUBERNETES_SERVICE_HOST/PORT are not set): pass --kubeconfig');
  });

  it('a kubeconfig without a cluster', () => {
    const f = join(dir, 'empty.conf');
    writeFileSync(f, 'apiVersion: v1\nkind: Config\nclusters: []\n');
    const r = run(['--kubeconfig', f, ...NO_SYSCTLS]);
    expect(r.code).toBe(1);
    expect(r.lastLine).toMatch(/^kube-proxy-ts: .*empty\.conf: no cluster for the current context/);
  });

  it('an unreadable --from', () => {
    const r = run(['--from', join(dir, 'missing.yaml'), ...NO_SYSCTLS]);
    expect(r.code).toBe(1);
    expect(r.lastLine).toMatch(/^kube-proxy-ts: .*missing\.yaml/);
  });

  it('a busy health port with --bind-address-hard-fail', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as AddressInfo).port;
    try {
      const r = run(['--from', objects, `--healthz-bind-address=127.0.0.1:${port}`, '--metrics-bind-address=', '--bind-address-hard-fail', ...NO_SYSCTLS]);
      expect(r.code).toBe(1);
      expect(r.lastLine).toMatch(new RegExp(`^kube-proxy-ts: cannot serve healthz on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE.*\\(--bind-address-hard-fail\\)$`));
    } finally {
      blocker.close();
    }
  });

  it('a command line it cannot take exits 2 and points at --help', () => {
    const r = run(['--frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("kube-proxy-ts: unknown flag --frobnicate\nRun 'kube-proxy-ts --help' for usage.\n");
    expect(run(['--iptables-masquerade-bit=40']).code).toBe(2);
  });
});

describe('a valid kube-proxy command line', () => {
  it("kubeadm's DaemonSet arguments with --dry-run: rules on stdout, notices as JSON log lines on stderr, at any verbosity", () => {
    const config = join(dir, 'config.conf');
    writeFileSync(
      config,
      'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 198.19.0.0/16\nipvs: {scheduler: rr}\nlogging: {verbosity: 6}\n',
    );
    const r = run(['--config=' + config, '--hostname-override=node-a', '-v=6', '--proxy-mode=ipvs', '--dry-run', '--from', objects]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\*nat\n/m);
    expect(r.stdout).not.toContain('"level"');
    const logs = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { event?: string; subject?: string });
    expect(logs.filter((l) => l.event === 'config-notice').map((l) => l.subject)).toEqual(['ipvs.scheduler', '--proxy-mode']);
  });

  it('--logging-format text prints klog-style lines, strings quoted', () => {
    const r = run(['--proxy-mode=ipvs', '--logging-format=text', '--dry-run', '--from', objects, '--hostname-override=node-a']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(
      /^W\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ kube-proxy-ts\] "mode: ipvs: IPVS mode is not offered.*" event="config-notice" subject="mode"$/m,
    );
  });

  it('--write-config-to writes the resolved configuration and exits', () => {
    const out = join(dir, 'written.yaml');
    const r = run(['--proxy-mode=nftables', '--cluster-cidr=198.19.0.0/16', `--write-config-to=${out}`]);
    expect(r.code).toBe(0);
    const text = readFileSync(out, 'utf8');
    expect(text).toContain('kind: KubeProxyConfiguration');
    expect(text).toContain('mode: nftables');
    expect(text).toMatch(/nodePortAddresses:\n\s+- primary/);
  });

  it('--version', () => {
    const r = run(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^kube-proxy-ts v\d+\.\d+\.\d+\n$/);
  });
});
