// The run command's flags and --config, as upstream kube-proxy takes them: every Linux flag accepted, upstream's
// defaults, the file's precedence and defaulting (kubeadm's ConfigMap), --write-config-to, and what is said
// about what does not apply.
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RUN_FLAGS, type RunOptions, UsageError, nodeName, parseBindAddress, primaryNodePortAddresses, resolveRunOptions } from '../../src/config.ts';
import { FIELDS, decodeConfiguration, describeFields, encodeConfiguration, watchConfigFile } from '../../src/config-file.ts';
import { formatDuration, parseDuration, parseFlags, parseInt32 } from '../../src/flags.ts';

const dir = mkdtempSync(join(tmpdir(), 'kpt-config-'));
let files = 0;
function file(text: string): string {
  const f = join(dir, `config-${files++}.yaml`);
  writeFileSync(f, text);
  return f;
}

async function run(argv: string[]): Promise<RunOptions> {
  const o = await resolveRunOptions(argv);
  if (o === 'help' || 'version' in o) throw new Error(`unexpected ${JSON.stringify(o)}`);
  return o;
}

const notices = (o: RunOptions) => o.notices.map((n) => `${n.subject}: ${n.message}`);

// kubeadm's kube-proxy ConfigMap (`kubeadm init`, config.conf), field for field: every zero value written out.
const KUBEADM_CONFIG = readFileSync(join(import.meta.dirname, '../fixtures/kubeadm/config.conf'), 'utf8');

describe('parsing as pflag does', () => {
  const specs = [
    { name: 'v', aliases: ['v'], kind: 'string' as const, help: '' },
    { name: 'log-dir', kind: 'string' as const, help: '' },
    { name: 'list', kind: 'list' as const, help: '' },
    { name: 'flag', kind: 'bool' as const, help: '' },
  ];
  it('takes -v=2, -v 2, -v2, --v=2, _ for -, repeated lists, booleans with =', () => {
    for (const argv of [['-v=2'], ['-v', '2'], ['-v2'], ['--v=2'], ['--v', '2']]) expect(parseFlags(argv, specs).values.get('v')).toBe('2');
    expect(parseFlags(['--log_dir=/x'], specs).values.get('log-dir')).toBe('/x');
    expect(parseFlags(['--list=a,b', '--list', 'c'], specs).values.get('list')).toBe('a,b,c');
    expect(parseFlags(['--flag=false'], specs).values.get('flag')).toBe('false');
    expect(parseFlags(['--flag'], specs).values.get('flag')).toBe('true');
    expect(() => parseFlags(['--flag=maybe'], specs)).toThrow(UsageError);
    expect(() => parseFlags(['--nope'], specs)).toThrow(/unknown flag --nope/);
    expect(() => parseFlags(['stray'], specs)).toThrow(/unexpected argument/);
  });

  it("reads Go's durations and integers", () => {
    expect(parseDuration('1m30s', 'x')).toBe(90_000);
    expect(parseDuration('0', 'x')).toBe(0);
    expect(parseDuration('1.5h', 'x')).toBe(5_400_000);
    expect(parseDuration('250ms', 'x')).toBe(250);
    expect(() => parseDuration('5 minutes', 'x')).toThrow(UsageError);
    expect(formatDuration(24 * 3_600_000)).toBe('24h0m0s');
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(250)).toBe('250ms');
    expect(parseInt32('0x10', 'x')).toBe(16);
    expect(parseInt32('-999', 'x')).toBe(-999);
    expect(() => parseInt32('32', 'x', { min: 0, max: 31 })).toThrow(/within \[0, 31\]/);
  });

  it('reads IP:PORT bind addresses', () => {
    expect(parseBindAddress('[::1]:9', 'x')).toEqual({ host: '::1', port: 9 });
    expect(() => parseBindAddress('localhost:9', 'x')).toThrow(UsageError);
  });
});

describe('the run command line', () => {
  it("has upstream's defaults", async () => {
    const o = await run(['--hostname-override', ' Node-A ']);
    expect(o).toMatchObject({
      mode: 'iptables',
      dryRun: false,
      cleanup: false,
      initOnly: false,
      from: null,
      kubeconfig: null,
      api: { master: null, qps: 5, burst: 10, serviceProxyName: '', protobuf: true },
      healthz: { host: '0.0.0.0', port: 10256 },
      metrics: { host: '127.0.0.1', port: 10249 },
      bindAddressHardFail: false,
      minSyncPeriodMs: 1000,
      syncPeriodMs: 30_000,
      iptablesBackend: 'auto',
      logging: { format: 'json', level: 'info' },
      oomScoreAdj: -999,
      conntrack: { maxPerCore: 32768, min: 131072, tcpEstablishedTimeout: 86_400_000, tcpCloseWaitTimeout: 3_600_000, tcpBeLiberal: false },
      nodePortAddressesPrimary: false,
      nodeIPOverride: null,
      proxy: {
        hostname: 'node-a',
        clusterCIDRs: [],
        masqueradeAll: false,
        nodePortAddresses: [],
        localhostNodePorts: true,
        masqueradeBit: 14,
        detectLocal: { mode: 'ClusterCIDR' },
      },
    });
    expect(o.notices).toEqual([]);
  });

  it('accepts every upstream Linux flag; what cannot apply is said once, nothing exits', async () => {
    // One valid value per upstream flag (kube-proxy --help), as a real command line would carry it.
    const values: Record<string, string> = {
      'write-config-to': join(dir, 'written.yaml'),
      config: '',
      master: 'https://198.18.0.1:6443',
      'feature-gates': 'AllAlpha=false,SomeGate=true',
      kubeconfig: '/var/lib/kube-proxy/kubeconfig.conf',
      'kube-api-content-type': 'application/json',
      'kube-api-burst': '20',
      'kube-api-qps': '7.5',
      'hostname-override': 'node-a',
      'bind-address': '198.18.0.2',
      'healthz-bind-address': '0.0.0.0:10256',
      'metrics-bind-address': '127.0.0.1:10249',
      'show-hidden-metrics-for-version': '1.30',
      'proxy-mode': 'iptables',
      'iptables-masquerade-bit': '14',
      'iptables-sync-period': '30s',
      'iptables-min-sync-period': '1s',
      'ipvs-sync-period': '30s',
      'ipvs-min-sync-period': '0s',
      'ipvs-scheduler': 'rr',
      'ipvs-exclude-cidrs': '198.18.9.0/24',
      'ipvs-tcp-timeout': '0s',
      'ipvs-tcpfin-timeout': '0s',
      'ipvs-udp-timeout': '0s',
      'detect-local-mode': 'ClusterCIDR',
      'pod-bridge-interface': 'cbr0',
      'pod-interface-name-prefix': 'veth',
      'cluster-cidr': '198.19.0.0/16',
      'nodeport-addresses': '198.18.0.0/24',
      'oom-score-adj': '-999',
      'conntrack-max-per-core': '0',
      'conntrack-min': '131072',
      'conntrack-tcp-timeout-established': '24h0m0s',
      'conntrack-tcp-timeout-close-wait': '1h0m0s',
      'conntrack-udp-timeout': '0s',
      'conntrack-udp-timeout-stream': '0s',
      'config-sync-period': '15m0s',
      'healthz-port': '10256',
      'metrics-port': '10249',
      v: '2',
      'logging-format': 'json',
      vmodule: 'proxier=4',
      'log-flush-frequency': '5s',
      'log-json-info-buffer-size': '0',
      'log-text-info-buffer-size': '0',
      'log-backtrace-at': ':0',
      'log-dir': '/var/log',
      'log-file': '/var/log/kube-proxy.log',
      'log-file-max-size': '1800',
      stderrthreshold: '2',
      version: 'false',
    };
    const argv: string[] = [];
    for (const spec of RUN_FLAGS.filter((s) => s.upstream)) {
      if (spec.name === 'help' || spec.name === 'config' || spec.name === 'write-config-to' || spec.name === 'cleanup' || spec.name === 'init-only') continue;
      if (spec.kind === 'bool') argv.push(`--${spec.name}`);
      else {
        expect(values[spec.name], `a value for --${spec.name}`).toBeDefined();
        argv.push(`--${spec.name}=${values[spec.name]}`);
      }
    }
    const o = await run(argv);
    expect(o).toMatchObject({
      mode: 'iptables',
      // --kube-api-content-type application/json: lists in JSON.
      api: { master: 'https://198.18.0.1:6443', qps: 7.5, burst: 20, protobuf: false },
      nodeIPOverride: '198.18.0.2',
      bindAddressHardFail: true,
      proxy: { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], nodePortAddresses: ['198.18.0.0/24'], masqueradeAll: true, localhostNodePorts: true },
      conntrack: { maxPerCore: 0, tcpBeLiberal: true },
      logging: { format: 'json', level: 'info' },
    });
    const said = notices(o).join('\n');
    for (const flag of ['--feature-gates', '--profiling', '--ipvs-scheduler', '--ipvs-strict-arp', '--vmodule', '--config-sync-period', '--log-dir']) {
      expect(said).toContain(`${flag}: accepted, not applied`);
    }
    // Each said once.
    expect(new Set(o.notices.map((n) => n.subject)).size).toBe(o.notices.length);
  });

  it('takes -v as upstream: numeric verbosity, -v=2, --v 4, and --log-level over it', async () => {
    expect((await run(['-v=2'])).logging.level).toBe('info');
    expect((await run(['--v', '4'])).logging.level).toBe('debug');
    expect((await run(['-v6'])).logging.level).toBe('trace');
    expect((await run(['-v', '4', '--log-level', 'warn'])).logging.level).toBe('warn');
    expect((await run(['--logging-format=text'])).logging.format).toBe('text');
    await expect(run(['--logging-format=xml'])).rejects.toThrow(/json or text/);
    await expect(run(['-v=lots'])).rejects.toThrow(UsageError);
  });

  it('--iptables-min-sync-period 0 syncs on every change; the sync periods apply to every mode', async () => {
    expect(await run(['--iptables-min-sync-period', '0'])).toMatchObject({ minSyncPeriodMs: 0 });
    expect(await run(['--proxy-mode=nftables', '--iptables-sync-period=1m', '--iptables-min-sync-period=0'])).toMatchObject({
      syncPeriodMs: 60_000,
      minSyncPeriodMs: 0,
    });
    expect(await run(['--min-sync-period=250ms', '--sync-period=90s'])).toMatchObject({ minSyncPeriodMs: 250, syncPeriodMs: 90_000 });
    await expect(run(['--iptables-sync-period=0'])).rejects.toThrow(/greater than 0/);
  });

  it('runs ipvs as the iptables mode with a warning; refuses modes that do not exist', async () => {
    const o = await run(['--proxy-mode=ipvs', '--ipvs-scheduler=lc']);
    expect(o.mode).toBe('iptables');
    expect(notices(o).join('\n')).toMatch(/mode: ipvs: IPVS mode is not offered by this proxy; running the iptables mode/);
    expect(notices(o).join('\n')).toMatch(/--ipvs-scheduler: accepted, not applied: IPVS mode is not offered/);
    await expect(run(['--proxy-mode=kernelspace'])).rejects.toThrow(UsageError);
    expect((await run(['--mode=userspace'])).mode).toBe('userspace');
  });

  it("parses --iptables-localhost-nodeports, --iptables-masquerade-bit and --detect-local-mode into the proxy's configuration", async () => {
    expect((await run(['--iptables-localhost-nodeports=false'])).proxy.localhostNodePorts).toBe(false);
    expect((await run(['--iptables-masquerade-bit=9'])).proxy.masqueradeBit).toBe(9);
    // Honoured by the modes: nothing to say.
    expect(notices(await run(['--iptables-masquerade-bit=9']))).toEqual([]);
    expect(notices(await run(['--detect-local-mode=NodeCIDR']))).toEqual([]);
    // Interface names go into rules: refused at start as the kernel would refuse them.
    for (const bad of ['cbr0; reboot', 'a"b', 'x/y', 'sixteen-chars-xx', ''])
      await expect(run(['--detect-local-mode=BridgeInterface', `--pod-bridge-interface=${bad}`])).rejects.toThrow(UsageError);
    await expect(run(['--detect-local-mode=InterfaceNamePrefix', '--pod-interface-name-prefix=veth*'])).rejects.toThrow(/interface name prefix/);
    await expect(run(['--iptables-masquerade-bit=32'])).rejects.toThrow(/\[0, 31\]/);
    // upstream: the flag sets iptables.masqueradeBit only; the nftables mode reads nftables.masqueradeBit.
    expect((await run(['--iptables-masquerade-bit=9', '--proxy-mode=nftables'])).proxy.masqueradeBit).toBe(14);
    expect((await run(['--detect-local-mode=NodeCIDR'])).proxy.detectLocal).toEqual({ mode: 'NodeCIDR' });
    expect((await run(['--detect-local-mode=BridgeInterface', '--pod-bridge-interface=cbr0'])).proxy.detectLocal).toEqual({
      mode: 'BridgeInterface',
      bridgeInterface: 'cbr0',
    });
    expect((await run(['--detect-local-mode=InterfaceNamePrefix', '--pod-interface-name-prefix=veth'])).proxy.detectLocal).toEqual({
      mode: 'InterfaceNamePrefix',
      interfaceNamePrefix: 'veth',
    });
    await expect(run(['--detect-local-mode=BridgeInterface'])).rejects.toThrow(/pod-bridge-interface/);
    await expect(run(['--detect-local-mode=Magic'])).rejects.toThrow(UsageError);
  });

  it("takes --nodeport-addresses CIDRs or 'primary', and the nftables mode defaults to primary", async () => {
    expect(await run(['--nodeport-addresses=primary'])).toMatchObject({ nodePortAddressesPrimary: true, proxy: { nodePortAddresses: [] } });
    expect(await run(['--nodeport-addresses=198.18.0.0/24', '--nodeport-addresses=2001:2::/64'])).toMatchObject({
      nodePortAddressesPrimary: false,
      proxy: { nodePortAddresses: ['198.18.0.0/24', '2001:2::/64'] },
    });
    expect(await run(['--proxy-mode=nftables'])).toMatchObject({ nodePortAddressesPrimary: true });
    expect(await run(['--proxy-mode=nftables', '--nodeport-addresses=0.0.0.0/0'])).toMatchObject({ nodePortAddressesPrimary: false });
    await expect(run(['--nodeport-addresses=primary,198.18.0.0/24'])).rejects.toThrow(/only value/);
    await expect(run(['--nodeport-addresses=eth0'])).rejects.toThrow(/not a CIDR/);
  });

  it("resolves 'primary' from the node's primary IPs, --bind-address replacing its family's", () => {
    expect(primaryNodePortAddresses(['198.18.0.2', '2001:2::2'], null)).toEqual(['198.18.0.2/32', '2001:2::2/128']);
    expect(primaryNodePortAddresses(['198.18.0.2', '2001:2::2'], '198.18.0.9')).toEqual(['198.18.0.9/32', '2001:2::2/128']);
    expect(primaryNodePortAddresses(['127.0.0.1'], null)).toEqual([]);
    expect(primaryNodePortAddresses([], null)).toEqual([]);
  });

  it('lower-cases and trims the node name; a name of blanks is refused', async () => {
    expect(nodeName('', () => ' Worker-1.Example ')).toBe('worker-1.example');
    expect((await run(['--hostname-override=NODE-B'])).proxy.hostname).toBe('node-b');
    await expect(run(['--hostname-override=  '])).rejects.toThrow(/empty hostname/);
  });

  it('serves on the deprecated --healthz-port / --metrics-port; 0 or an empty address turns a server off', async () => {
    expect(await run(['--healthz-port=12345', '--metrics-port=0'])).toMatchObject({ healthz: { host: '0.0.0.0', port: 12345 }, metrics: null });
    expect(await run(['--healthz-bind-address=', '--metrics-bind-address=198.18.0.2'])).toMatchObject({
      healthz: null,
      metrics: { host: '198.18.0.2', port: 10249 },
    });
  });

  it('prints the version; --help', async () => {
    expect(await resolveRunOptions(['--version'])).toEqual({ version: 'true' });
    expect(await resolveRunOptions(['--version=raw'])).toEqual({ version: 'raw' });
    expect(await resolveRunOptions(['--help'])).toBe('help');
  });
});

describe('--service-node-port-range', () => {
  it("defaults to the API server's range, reported only", async () => {
    expect((await run(['--hostname-override', 'a'])).proxy.nodePortRange).toEqual({ min: 30000, max: 32767, refuse: false });
  });
  it('takes MIN-MAX or BASE+SIZE as kube-apiserver does, and the refusal', async () => {
    const range = async (...argv: string[]) => (await run(['--hostname-override', 'a', ...argv])).proxy.nodePortRange;
    expect(await range('--service-node-port-range', '20000-22767')).toEqual({ min: 20000, max: 22767, refuse: false });
    expect(await range('--service-node-port-range=30000+100', '--refuse-out-of-range-nodeports')).toEqual({ min: 30000, max: 30100, refuse: true });
    for (const bad of ['32767-30000', '0-10', 'a-b', '30000-70000', '30000-'])
      await expect(range('--service-node-port-range', bad), bad).rejects.toThrow(UsageError);
  });
});

describe('--config', () => {
  it("reads kubeadm's ConfigMap as upstream: zero values are the defaults, nothing to warn about", async () => {
    const o = await run(['--config', file(KUBEADM_CONFIG)]);
    expect(o).toMatchObject({
      mode: 'iptables',
      kubeconfig: '/var/lib/kube-proxy/kubeconfig.conf',
      api: { qps: 5, burst: 10 },
      // 0s periods mean 30s and 1s (kubeadm writes them out): never a busy loop of full syncs.
      syncPeriodMs: 30_000,
      minSyncPeriodMs: 1000,
      healthz: { host: '0.0.0.0', port: 10256 },
      metrics: { host: '127.0.0.1', port: 10249 },
      oomScoreAdj: -999,
      conntrack: { maxPerCore: 32768, min: 131072, tcpEstablishedTimeout: 86_400_000, tcpCloseWaitTimeout: 3_600_000 },
      proxy: { clusterCIDRs: ['10.244.0.0/16'], masqueradeBit: 14, localhostNodePorts: true, detectLocal: { mode: 'ClusterCIDR' } },
      logging: { format: 'json', level: 'info' },
    });
    expect(o.notices).toEqual([]);
    expect(o.configFile?.text).toBe(KUBEADM_CONFIG);
    // The same file in the nftables mode: NodePorts on the primary IPs, as upstream.
    expect(await run(['--config', file(KUBEADM_CONFIG.replace('mode: ""', 'mode: nftables'))])).toMatchObject({
      mode: 'nftables',
      nodePortAddressesPrimary: true,
    });
  });

  it('wins over the flags, except --hostname-override and the logging flags; each flag it overrides is said', async () => {
    const f = file(
      [
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
        'kind: KubeProxyConfiguration',
        'mode: nftables',
        'clusterCIDR: 198.19.0.0/16,2001:2:1::/64',
        'hostnameOverride: node-x',
        'healthzBindAddress: 127.0.0.1:20256',
        'nodePortAddresses: [198.18.0.0/24]',
        'nftables: {masqueradeAll: true, minSyncPeriod: 2s, syncPeriod: 1m}',
        'logging: {verbosity: 4}',
      ].join('\n'),
    );
    const o = await run(['--config', f, '--hostname-override', 'Node-Y', '--proxy-mode=iptables', '--cluster-cidr=10.0.0.0/8', '-v=0', '--dry-run']);
    expect(o).toMatchObject({
      mode: 'nftables',
      dryRun: true,
      healthz: { host: '127.0.0.1', port: 20256 },
      minSyncPeriodMs: 2000,
      syncPeriodMs: 60_000,
      logging: { level: 'info' },
      proxy: { hostname: 'node-y', clusterCIDRs: ['198.19.0.0/16', '2001:2:1::/64'], masqueradeAll: true, nodePortAddresses: ['198.18.0.0/24'] },
    });
    expect(notices(o)).toEqual([
      '--proxy-mode: ignored: --config is given and its file wins (as upstream)',
      '--cluster-cidr: ignored: --config is given and its file wins (as upstream)',
    ]);
    expect((await run(['--config', f])).logging.level).toBe('debug');
  });

  it('warns once per unknown field and per set field it does not apply; refuses wrong types and kinds', async () => {
    const o = await run([
      '--config',
      file(
        [
          'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
          'kind: KubeProxyConfiguration',
          'udpIdleTimeout: 250ms',
          'iptables: {syncPeriod: 10s, frobnicate: 1}',
          'ipvs: {scheduler: rr, strictARP: false}',
          'enableProfiling: true',
          'featureGates: {SomeGate: true}',
        ].join('\n'),
      ),
    ]);
    expect(notices(o)).toEqual([
      'udpIdleTimeout: unknown field: ignored (upstream ignores it too, with a warning)',
      'iptables.frobnicate: unknown field: ignored (upstream ignores it too, with a warning)',
      'ipvs.scheduler: set, but IPVS mode is not offered by this proxy: ignored',
      'enableProfiling: set, but no /debug/pprof in a Node.js process (use node --inspect or --cpu-prof): ignored',
      "featureGates: set, but upstream's feature gates do not change this proxy: ignored",
    ]);
    expect(o.syncPeriodMs).toBe(10_000);
    const bad = (body: string) => run(['--config', file(`apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n${body}`)]);
    await expect(bad('iptables: {syncPeriod: 10}')).rejects.toThrow(/iptables.syncPeriod: 10 is not a duration/);
    await expect(bad('oomScoreAdj: "high"')).rejects.toThrow(/oomScoreAdj/);
    await expect(bad('oomScoreAdj: 5000')).rejects.toThrow(/\[-1000, 1000\]/);
    await expect(bad('serviceProxyName: "a,b=c"')).rejects.toThrow(/not a label value/);
    await expect(run(['--config', file('kind: Deployment\n')])).rejects.toThrow(/not KubeProxyConfiguration/);
    await expect(run(['--config', file('kind: KubeProxyConfiguration\napiVersion: kubeproxy.config.k8s.io/v1alpha2\n')])).rejects.toThrow(/apiVersion/);
    await expect(run(['--config', join(dir, 'missing.yaml')])).rejects.toThrow(/no such file/);
  });

  it('defaults the server addresses by the family of bindAddress, and appends a missing port', async () => {
    const head = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';
    expect(await run(['--config', file(`${head}bindAddress: "::"\n`)])).toMatchObject({
      healthz: { host: '::', port: 10256 },
      metrics: { host: '::1', port: 10249 },
    });
    expect(await run(['--config', file(`${head}healthzBindAddress: 198.18.0.2\n`)])).toMatchObject({ healthz: { host: '198.18.0.2', port: 10256 } });
  });

  it('--write-config-to writes the resolved configuration, which reads back the same', async () => {
    const o = await run(['--proxy-mode=nftables', '--cluster-cidr=198.19.0.0/16', '--iptables-min-sync-period=0', '--write-config-to', join(dir, 'out.yaml')]);
    expect(o.writeConfigTo).toBe(join(dir, 'out.yaml'));
    const text = encodeConfiguration(o.configuration);
    expect(text).toContain('apiVersion: kubeproxy.config.k8s.io/v1alpha1');
    expect(text).toMatch(/nftables:\n(\s+.*\n)*?\s+syncPeriod: 30s/);
    const back = decodeConfiguration(text, 'out.yaml');
    expect(back.warnings).toEqual([]);
    expect(back.config).toEqual(o.configuration);
    writeFileSync(join(dir, 'out.yaml'), text);
    // Read back as --config, the explicit 0 minSyncPeriod becomes the default again: upstream's defaulting.
    expect(await run(['--config', join(dir, 'out.yaml')])).toMatchObject({
      mode: 'nftables',
      minSyncPeriodMs: 1000,
      proxy: { clusterCIDRs: ['198.19.0.0/16'] },
    });
  });

  it('calls for a restart once when the file content changes (a ConfigMap update replaces it)', async () => {
    const f = file('mode: iptables\n');
    let calls = 0;
    const stop = watchConfigFile(f, 'mode: iptables\n', () => calls++, 20);
    try {
      await new Promise((r) => setTimeout(r, 80));
      expect(calls).toBe(0);
      writeFileSync(`${f}.new`, 'mode: nftables\n');
      renameSync(`${f}.new`, f);
      for (let i = 0; i < 50 && calls === 0; i++) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 80));
      expect(calls).toBe(1);
    } finally {
      stop();
    }
  });

  it('describes every field of the schema for the docs', () => {
    const fields = describeFields().map((d) => d.field);
    expect(fields).toContain('conntrack.tcpEstablishedTimeout');
    expect(fields).toContain('logging.options.json.infoBufferSize');
    expect(Object.keys(FIELDS)).toContain('serviceProxyName');
    for (const d of describeFields()) expect(d.doc, d.field).not.toBe('');
  });
});

describe('docs/operations.md', () => {
  it('lists every upstream flag and every configuration field', () => {
    const doc = readFileSync(join(import.meta.dirname, '../../docs/operations.md'), 'utf8');
    for (const spec of RUN_FLAGS.filter((s) => s.upstream)) expect(doc, `--${spec.name}`).toContain(`\`--${spec.name}`);
    for (const { field } of describeFields()) expect(doc, field).toContain(`\`${field}\``);
  });
});
