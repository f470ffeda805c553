import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError, parseBindAddress, parseDuration, resolveRunOptions } from '../../src/config.ts';

describe('flags', () => {
  it('has kube-proxy defaults', async () => {
    const o = await resolveRunOptions(['--hostname-override', 'n1']);
    expect(o).toMatchObject({
      mode: 'iptables',
      dryRun: false,
      cleanup: false,
      from: null,
      healthz: { host: '0.0.0.0', port: 10256 },
      metrics: { host: '127.0.0.1', port: 10249 },
      minSyncPeriodMs: 1000,
      syncPeriodMs: 30000,
      iptablesBackend: 'auto',
      proxy: { hostname: 'n1', clusterCIDRs: [], masqueradeAll: false, nodePortAddresses: [] },
    });
  });

  it('accepts --proxy-mode, --flag=value, booleans and CIDR lists', async () => {
    const o = await resolveRunOptions([
      '--proxy-mode=nftables',
      '--dry-run',
      '--masquerade-all',
      '--cluster-cidr',
      '198.19.0.0/16,198.18.5.1/24',
      '--nodeport-addresses=198.18.0.0/24',
      '--sync-period',
      '1m30s',
      '--min-sync-period=250ms',
    ]);
    expect(o).toMatchObject({ mode: 'nftables', dryRun: true, syncPeriodMs: 90000, minSyncPeriodMs: 250 });
    if (o === 'help') throw new Error('unexpected');
    expect(o.proxy.clusterCIDRs).toEqual(['198.19.0.0/16', '198.18.5.0/24']);
    expect(o.proxy.nodePortAddresses).toEqual(['198.18.0.0/24']);
    expect(o.proxy.masqueradeAll).toBe(true);
  });

  it('rejects unknown modes, flags, durations and addresses with a usage error', async () => {
    await expect(resolveRunOptions(['--mode', 'ipvs'])).rejects.toThrow(UsageError);
    await expect(resolveRunOptions(['--frobnicate'])).rejects.toThrow(/unknown flag --frobnicate/);
    await expect(resolveRunOptions(['--cluster-cidr', '10.0.0.0/40'])).rejects.toThrow(/not a CIDR/);
    expect(() => parseDuration('5 minutes', 'x')).toThrow(UsageError);
    expect(() => parseBindAddress('localhost', 'x')).toThrow(UsageError);
    expect(parseBindAddress('[::1]:9', 'x')).toEqual({ host: '::1', port: 9 });
  });

  it('reads a KubeProxyConfiguration; command-line flags override it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kpt-config-'));
    const f = join(dir, 'config.yaml');
    writeFileSync(
      f,
      [
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
        'kind: KubeProxyConfiguration',
        'mode: nftables',
        'clusterCIDR: 198.19.0.0/16',
        'hostnameOverride: node-x',
        'healthzBindAddress: 127.0.0.1:20256',
        'nodePortAddresses: [198.18.0.0/24]',
        'nftables: {masqueradeAll: true, minSyncPeriod: 2s, syncPeriod: 1m}',
      ].join('\n'),
    );
    const o = await resolveRunOptions(['--config', f, '--hostname-override', 'node-y']);
    expect(o).toMatchObject({
      mode: 'nftables',
      healthz: { host: '127.0.0.1', port: 20256 },
      minSyncPeriodMs: 2000,
      syncPeriodMs: 60000,
      proxy: { hostname: 'node-y', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: true, nodePortAddresses: ['198.18.0.0/24'] },
    });
    writeFileSync(f, 'kind: Deployment\n');
    await expect(resolveRunOptions(['--config', f])).rejects.toThrow(/not KubeProxyConfiguration/);
  });
});

describe('deploy/kube-proxy-ts.yaml', () => {
  it('carries a config the proxy accepts and only flags it knows', async () => {
    const { readFileSync } = await import('node:fs');
    const { parseAllDocuments } = await import('yaml');
    const docs = parseAllDocuments(readFileSync(join(import.meta.dirname, '../../deploy/kube-proxy-ts.yaml'), 'utf8')).map((d) => d.toJS());
    const cm = docs.find((d) => d.kind === 'ConfigMap');
    const ds = docs.find((d) => d.kind === 'DaemonSet');
    const dir = mkdtempSync(join(tmpdir(), 'kpt-deploy-'));
    writeFileSync(join(dir, 'config.yaml'), cm.data['config.yaml']);
    const args: string[] = ds.spec.template.spec.containers[0].args.map((a: string) =>
      a.replace('/etc/kube-proxy-ts/config.yaml', join(dir, 'config.yaml')).replace('$(NODE_NAME)', 'node-1'),
    );
    const o = await resolveRunOptions(args);
    expect(o).toMatchObject({ mode: 'iptables', proxy: { hostname: 'node-1', clusterCIDRs: ['10.244.0.0/16'] }, healthz: { port: 10256 } });
    const probe = ds.spec.template.spec.containers[0].livenessProbe.httpGet;
    expect(probe).toMatchObject({ path: '/livez', port: 10256 });
  });
});
