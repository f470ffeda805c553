// The local-traffic detector (model/local-detect.ts), the interface-name rule value (model/addr.ts), how the
// iptables and nftables modes render the detector and the masquerade bit, and the iptables rule-count gauges.
import { describe, expect, it } from 'vitest';
import { ProxyMetrics } from '../../src/daemon/metrics.ts';
import { NodeWatch, nodePodCIDRs } from '../../src/daemon/node-watch.ts';
import { InvalidValueError, ruleInterfaceName } from '../../src/model/addr.ts';
import type { KubeObject } from '../../src/model/k8s.ts';
import { checkDetectLocal, localDetector } from '../../src/model/local-detect.ts';
import { masqueradeMark, type ProxyConfig } from '../../src/model/types.ts';
import { ifLocal, ifNotLocal, renderContext, renderServicePort } from '../../src/modes/iptables/render.ts';
import { chainSpecs, emptyNeeds, FAMILIES } from '../../src/modes/nftables/layout.ts';
import { NftablesProxier } from '../../src/modes/nftables/proxier.ts';
import { createProxier } from '../../src/modes/iptables/index.ts';
import { podSourceCIDRs } from '../../src/modes/userspace/sources.ts';
import type { SyncEvent } from '../../src/sync/loop.ts';
import { config, desiredState, endpoint, servicePort } from './model-fixtures.ts';

const HOSTILE = [
  '',
  'a b',
  'a\tb',
  'a"b',
  "a'b",
  'a\\b',
  'a/b',
  'a:b',
  'eth+',
  'eth*',
  '.',
  '..',
  'ünïcode',
  'x\n-A INPUT -j DROP',
  'sixteen-chars-xx',
  '$(reboot)',
];

describe('ruleInterfaceName', () => {
  it('takes what the kernel takes as an interface name, within IFNAMSIZ', () => {
    for (const ok of ['cbr0', 'cni0', 'veth', 'eth0.100', 'br-0a1b2c3d4e5f', 'fifteen-chars-x', 'lxc_1@x']) expect(ruleInterfaceName(ok)).toBe(ok);
  });
  it('refuses what would break or change a rule, and what the kernel refuses', () => {
    for (const bad of HOSTILE) {
      // '$(reboot)' has no space, quote or slash: it is a valid kernel name and harmless in rule text (no shell).
      if (bad === '$(reboot)') continue;
      expect(() => ruleInterfaceName(bad), JSON.stringify(bad)).toThrow(InvalidValueError);
    }
  });
  it('keeps room for the wildcard of a prefix', () => {
    expect(ruleInterfaceName('fourteen-chars', 1)).toBe('fourteen-chars');
    expect(() => ruleInterfaceName('fifteen-chars-x', 1)).toThrow(/prefix/);
  });
});

describe('localDetector', () => {
  const base: ProxyConfig = config({ clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] });
  it('ClusterCIDR (the default): the cluster CIDR of the family', () => {
    expect(localDetector(base, 'IPv4')).toEqual({ kind: 'cidr', cidrs: ['198.19.0.0/16'] });
    expect(localDetector(base, 'IPv6')).toEqual({ kind: 'cidr', cidrs: ['2001:2:0:10::/60'] });
    expect(localDetector({ ...base, clusterCIDRs: ['198.19.0.0/16'] }, 'IPv6')).toMatchObject({
      kind: 'none',
      reason: expect.stringContaining('no --cluster-cidr of IPv6'),
    });
  });
  it("NodeCIDR: the Node's podCIDRs of the family, not the cluster CIDR", () => {
    const c = { ...base, detectLocal: { mode: 'NodeCIDR' as const, podCIDRs: ['198.19.1.0/24', '2001:2:0:11::/64'] } };
    expect(localDetector(c, 'IPv4')).toEqual({ kind: 'cidr', cidrs: ['198.19.1.0/24'] });
    expect(localDetector(c, 'IPv6')).toEqual({ kind: 'cidr', cidrs: ['2001:2:0:11::/64'] });
    expect(localDetector({ ...base, detectLocal: { mode: 'NodeCIDR' } }, 'IPv4')).toMatchObject({ kind: 'none', reason: expect.stringContaining('podCIDR') });
  });
  it('BridgeInterface and InterfaceNamePrefix: the same for both families', () => {
    const bridge = { ...base, detectLocal: { mode: 'BridgeInterface' as const, bridgeInterface: 'cbr0' } };
    const prefix = { ...base, detectLocal: { mode: 'InterfaceNamePrefix' as const, interfaceNamePrefix: 'veth' } };
    for (const f of ['IPv4', 'IPv6'] as const) {
      expect(localDetector(bridge, f)).toEqual({ kind: 'interface', name: 'cbr0' });
      expect(localDetector(prefix, f)).toEqual({ kind: 'prefix', prefix: 'veth' });
    }
  });
  it('refuses hostile interface names', () => {
    for (const bad of HOSTILE.filter((b) => b !== '$(reboot)')) {
      expect(() => checkDetectLocal({ mode: 'BridgeInterface', bridgeInterface: bad })).toThrow(InvalidValueError);
      expect(() => localDetector({ ...base, detectLocal: { mode: 'InterfaceNamePrefix', interfaceNamePrefix: bad } }, 'IPv4')).toThrow(InvalidValueError);
    }
  });
});

describe('iptables rendering of the detector and the masquerade bit', () => {
  const a1 = endpoint('198.19.1.11', 8080);
  const b1 = endpoint('198.19.2.11', 8080, { node: 'node-b' });
  const web = servicePort({ name: 'web', clusterIPs: ['198.18.100.10'], nodePort: 30080, externalTrafficPolicy: 'Local', endpoints: [a1, b1] });
  const rules = (c: Partial<ProxyConfig>) => {
    const ctx = renderContext(desiredState([web], c));
    const r = renderServicePort(web, ctx);
    return { ctx, lines: r.chains.flatMap((ch) => ch.rules.map((x) => `-A ${ch.name} ${x}`)) };
  };

  it("IfLocal / IfNotLocal as upstream's detectors write them", () => {
    expect(ifLocal({ kind: 'cidr', cidrs: ['198.19.0.0/16'] })).toEqual(['-s 198.19.0.0/16']);
    expect(ifNotLocal({ kind: 'cidr', cidrs: ['198.19.0.0/16'] })).toBe('! -s 198.19.0.0/16');
    expect(ifLocal({ kind: 'interface', name: 'cbr0' })).toEqual(['-i cbr0']);
    expect(ifNotLocal({ kind: 'interface', name: 'cbr0' })).toBe('! -i cbr0');
    expect(ifLocal({ kind: 'prefix', prefix: 'veth' })).toEqual(['-i veth+']);
    expect(ifNotLocal({ kind: 'prefix', prefix: 'veth' })).toBe('! -i veth+');
    expect(ifLocal({ kind: 'none', reason: '' })).toEqual([]);
    expect(ifNotLocal({ kind: 'none', reason: '' })).toBeNull();
  });

  it('masquerades ClusterIP traffic that is not local and short-circuits local pods, in every detect-local mode', () => {
    const cases: [Partial<ProxyConfig>, string][] = [
      [{}, '-s 198.19.0.0/16'],
      [{ detectLocal: { mode: 'NodeCIDR', podCIDRs: ['198.19.1.0/24'] } }, '-s 198.19.1.0/24'],
      [{ detectLocal: { mode: 'BridgeInterface', bridgeInterface: 'cbr0' } }, '-i cbr0'],
      [{ detectLocal: { mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' } }, '-i veth+'],
    ];
    for (const [c, match] of cases) {
      const { lines } = rules(c);
      expect(
        lines.filter((l) => l.includes('-d 198.18.100.10') && l.endsWith('-j KUBE-MARK-MASQ')),
        match,
      ).toEqual([expect.stringContaining(` ! ${match} -j KUBE-MARK-MASQ`)]);
      expect(
        lines.filter((l) => l.includes('pod traffic for')),
        match,
      ).toEqual([expect.stringMatching(new RegExp(` ${match.replace('+', '\\+')} -j KUBE-SVC-`))]);
    }
    // NodeCIDR without podCIDRs: no detector, no masquerade rule and no short circuit, and a warning, as upstream.
    const none = rules({ detectLocal: { mode: 'NodeCIDR' } });
    expect(none.lines.some((l) => l.includes('-d 198.18.100.10') && l.includes('KUBE-MARK-MASQ'))).toBe(false);
    expect(none.lines.some((l) => l.includes('pod traffic for'))).toBe(false);
    expect(none.ctx.warnings).toEqual([expect.stringContaining('local traffic is not detected')]);
  });

  it('marks, tests and clears the configured masquerade bit', () => {
    expect(masqueradeMark(config())).toBe(0x4000);
    expect(masqueradeMark(config({ masqueradeBit: 31 }))).toBe(0x80000000);
    const text = createProxier({ config: config({ masqueradeBit: 9 }), iptablesBackend: 'nft', family: 'IPv4' }).dryRun(
      desiredState([web], { masqueradeBit: 9 }),
    );
    expect(text).toContain('-A KUBE-MARK-MASQ -j MARK --or-mark 0x200\n');
    expect(text).toContain('-A KUBE-POSTROUTING -m mark ! --mark 0x200/0x200 -j RETURN\n');
    expect(text).toContain('-A KUBE-POSTROUTING -j MARK --xor-mark 0x200\n');
    expect(text).toContain('-m mark --mark 0x200/0x200 -j ACCEPT\n');
    expect(text).not.toContain('0x4000');
  });
});

describe('nftables rendering of the detector and the masquerade bit', () => {
  const cfg = {
    family: FAMILIES.IPv4,
    clusterCIDRs: [] as string[],
    localInterface: null as string | null,
    masqMark: 0x4000,
    masqueradeAll: false,
    nodePortAddresses: [] as string[],
  };
  const chain = (c: typeof cfg, name: string) => JSON.stringify(chainSpecs(c, emptyNeeds()).find((x) => x.name === name)!.rules);
  const iifname = (op: string, name: string) => JSON.stringify({ match: { op, left: { meta: { key: 'iifname' } }, right: name } });

  it("IfNotLocal masquerades ClusterIP traffic; IfLocal short-circuits pods of Local policies (upstream's IfLocalNFT)", () => {
    const prefix = { ...cfg, localInterface: 'veth*' };
    expect(chain(prefix, 'cluster-ip')).toContain(iifname('!=', 'veth*'));
    expect(chain(prefix, 'external-local')).toContain(iifname('==', 'veth*'));
    expect(chain(prefix, 'cluster-ip')).not.toContain('cluster-cidrs');
    const cidr = { ...cfg, clusterCIDRs: ['198.19.1.0/24'] };
    expect(chain(cidr, 'cluster-ip')).toContain('"op":"!=","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@cluster-cidrs"');
    expect(chain(cfg, 'cluster-ip')).toBe(JSON.stringify([[{ goto: { target: 'svc-select' } }]]));
  });

  it('marks, tests and clears the configured masquerade bit', () => {
    const text = new NftablesProxier({ config: config({ masqueradeBit: 9 }), family: 'IPv4', iptablesBackend: 'auto' }).dryRun(
      desiredState([], { masqueradeBit: 9 }),
    );
    const mark = JSON.stringify({ meta: { key: 'mark' } });
    expect(text).toContain(`{"mangle":{"key":${mark},"value":{"|":[${mark},512]}}}`);
    expect(text).toContain(`{"match":{"op":"==","left":{"&":[${mark},512]},"right":0}}`);
    expect(text).toContain(`{"mangle":{"key":${mark},"value":{"^":[${mark},512]}}}`);
    expect(text).not.toContain('16384');
  });

  it('interface detectors from the configuration, with the wildcard for a prefix', () => {
    const dry = (c: Partial<ProxyConfig>) =>
      new NftablesProxier({ config: config(c), family: 'IPv6', iptablesBackend: 'auto' }).dryRun(desiredState([], c, 'IPv6'));
    expect(dry({ detectLocal: { mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' } })).toContain(iifname('!=', 'veth*'));
    expect(dry({ detectLocal: { mode: 'BridgeInterface', bridgeInterface: 'cbr0' } })).toContain(iifname('!=', 'cbr0'));
  });
});

describe("NodeCIDR: the Node's podCIDRs", () => {
  const node = (spec: Record<string, unknown>) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' }, spec }) as KubeObject;
  it('reads spec.podCIDRs, else spec.podCIDR', () => {
    expect(nodePodCIDRs(node({ podCIDR: '198.19.1.0/24', podCIDRs: ['198.19.1.0/24', '2001:2:0:11::/64'] }))).toEqual(['198.19.1.0/24', '2001:2:0:11::/64']);
    expect(nodePodCIDRs(node({ podCIDR: '198.19.1.0/24' }))).toEqual(['198.19.1.0/24']);
    expect(nodePodCIDRs(node({}))).toEqual([]);
    expect(nodePodCIDRs(null)).toEqual([]);
    expect(nodePodCIDRs(node({ podCIDRs: ['198.19.1.0/24', '198.19.1.0/24\u001b[2J', 7, '2001:2:0:0011::/64'] }))).toEqual([
      '198.19.1.0/24',
      '2001:2:0:11::/64',
    ]);
  });
  it("restarts when they change (upstream's NodePodCIDRHandler), not otherwise; a file source is followed as given", () => {
    const restarts: string[] = [];
    const watch = new NodeWatch({ watched: true, podCIDRs: ['198.19.1.0/24'], restart: (why) => restarts.push(why) });
    watch.observe(node({ podCIDRs: ['198.19.1.0/24'] }));
    expect(restarts).toEqual([]);
    watch.observe(node({ podCIDRs: ['198.19.9.0/24'] }));
    expect(restarts).toEqual([expect.stringContaining('podCIDRs changed')]);
    const file = new NodeWatch({ watched: false, podCIDRs: ['198.19.1.0/24'], restart: (why) => restarts.push(why) });
    file.observe(node({ podCIDRs: ['198.19.9.0/24'] }));
    expect(restarts).toHaveLength(1);
    // Without NodeCIDR the podCIDRs are not watched.
    const plain = new NodeWatch({ watched: true, restart: (why) => restarts.push(why) });
    plain.observe(node({ podCIDRs: ['198.19.9.0/24'] }));
    expect(restarts).toHaveLength(1);
  });
});

describe('userspace: pods by address only', () => {
  it("uses the CIDR detectors' CIDRs, none for the interface detectors", () => {
    const c = config({ clusterCIDRs: ['198.19.0.0/16'] });
    expect(podSourceCIDRs(c, 'IPv4')).toEqual(['198.19.0.0/16']);
    expect(podSourceCIDRs({ ...c, detectLocal: { mode: 'NodeCIDR', podCIDRs: ['198.19.1.0/24'] } }, 'IPv4')).toEqual(['198.19.1.0/24']);
    expect(podSourceCIDRs({ ...c, detectLocal: { mode: 'BridgeInterface', bridgeInterface: 'cbr0' } }, 'IPv4')).toEqual([]);
  });
});

describe('iptables rule-count gauges', () => {
  it('kubeproxy_sync_proxy_rules_iptables_total and _last per table and ip_family, from the sync result', async () => {
    const m = new ProxyMetrics({ families: ['IPv4', 'IPv6'] });
    const state = desiredState([]);
    const event = (iptablesRules: { table: 'nat' | 'filter'; total: number; written: number }[]) =>
      ({
        result: { full: false, durationMs: 1, bytes: 1, servicePortsWritten: 1, iptablesRules },
        state,
        changes: null,
        servicePorts: 0,
        changed: 1,
        serviceChanges: 0,
        endpointChanges: 0,
        triggerTimes: [],
      }) as unknown as SyncEvent;
    m.recordSync(
      event([
        { table: 'nat', total: 120, written: 7 },
        { table: 'filter', total: 9, written: 9 },
      ]),
      state,
      'IPv6',
    );
    const text = await m.registry.metrics();
    expect(text).toContain('kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv6",table="nat"} 120');
    expect(text).toContain('kubeproxy_sync_proxy_rules_iptables_last{ip_family="IPv6",table="nat"} 7');
    expect(text).toContain('kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv6",table="filter"} 9');
    expect(text).toContain('kubeproxy_sync_proxy_rules_iptables_last{ip_family="IPv6",table="filter"} 9');
  });
});
