// Golden tests of the rendered iptables-restore text (test/golden/iptables/*.rules; regenerate with
// UPDATE_GOLDEN=1 after checking the diff), and properties of the rendering.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DesiredState, IPFamily, ServicePort } from '../../src/model/types.ts';
import { createProxier, definition } from '../../src/modes/iptables/index.ts';
import { renderContext, renderServicePort } from '../../src/modes/iptables/render.ts';
import { TextBuffer } from '../../src/modes/iptables/text-buffer.ts';
import { config, desiredState, endpoint, servicePort } from './model-fixtures.ts';

const GOLDEN = path.resolve(import.meta.dirname, '..', 'golden', 'iptables');
const proxiers = {
  IPv4: createProxier({ config: config(), iptablesBackend: 'nft', family: 'IPv4' }),
  IPv6: createProxier({ config: config(), iptablesBackend: 'nft', family: 'IPv6' }),
};
/** The dry run of a state, by the proxier of its family. */
const dryRun = (state: DesiredState) => proxiers[state.family].dryRun(state);

function golden(name: string, text: string): void {
  const file = path.join(GOLDEN, `${name}.rules`);
  if (process.env.UPDATE_GOLDEN || !existsSync(file)) {
    mkdirSync(GOLDEN, { recursive: true });
    writeFileSync(file, text);
  }
  expect(text).toBe(readFileSync(file, 'utf8'));
}

const a1 = endpoint('198.19.1.11', 8080);
const a3 = endpoint('198.19.1.13', 8080);
const b1 = endpoint('198.19.2.11', 8080, { node: 'node-b' });

describe('golden rules', () => {
  it('clusterip-basic: ClusterIP with a local and a remote endpoint', () => {
    const web = servicePort({ namespace: 'shop', name: 'web', clusterIPs: ['198.18.100.10'], endpoints: [a1, b1] });
    golden('clusterip-basic', dryRun(desiredState([web])));
  });

  it('external: NodePort, externalIP and load-balancer IP with source ranges, Cluster policy', () => {
    const api = servicePort({
      namespace: 'edge',
      name: 'api',
      portName: 'https',
      port: 443,
      clusterIPs: ['198.18.100.30'],
      nodePort: 31443,
      externalIPs: ['198.18.200.10'],
      loadBalancerIPs: ['198.18.200.20'],
      loadBalancerSourceRanges: ['198.18.0.0/24', '203.0.113.0/25'],
      endpoints: [endpoint('198.19.1.11', 8443), endpoint('198.19.2.11', 8443, { node: 'node-b' })],
    });
    const state = { ...desiredState([api]), node: { name: 'node-a', labels: {}, zone: '', addresses: ['198.18.0.1'], podCIDRs: [], deleting: false } };
    golden('external-cluster-policy', dryRun(state));
  });

  it('external Local policy, health check node port, and one without local endpoints', () => {
    const ingress = servicePort({
      namespace: 'edge',
      name: 'ingress',
      clusterIPs: ['198.18.100.60'],
      nodePort: 30060,
      loadBalancerIPs: ['198.18.200.60'],
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32060,
      endpoints: [a1, b1],
    });
    const remote = servicePort({
      namespace: 'edge',
      name: 'remote',
      clusterIPs: ['198.18.100.61'],
      nodePort: 30061,
      externalIPs: ['198.18.200.61'],
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32061,
      endpoints: [b1],
    });
    golden('external-local-policy', dryRun(desiredState([ingress, remote])));
  });

  it('no endpoints: REJECT on every frontend', () => {
    const empty = servicePort({
      namespace: 'shop',
      name: 'empty',
      clusterIPs: ['198.18.100.40'],
      nodePort: 30040,
      externalIPs: ['198.18.200.40'],
      loadBalancerIPs: ['198.18.200.41'],
    });
    golden('no-endpoints', dryRun(desiredState([empty])));
  });

  it('session affinity and internalTrafficPolicy Local (with and without local endpoints), UDP, SCTP', () => {
    const ports: ServicePort[] = [
      servicePort({ namespace: 'shop', name: 'sticky', clusterIPs: ['198.18.100.50'], nodePort: 30050, affinityTimeoutSeconds: 600, endpoints: [a1, b1] }),
      servicePort({ namespace: 'shop', name: 'node-local', clusterIPs: ['198.18.100.112'], internalTrafficPolicy: 'Local', endpoints: [a1, a3, b1] }),
      servicePort({ namespace: 'shop', name: 'remote-only', clusterIPs: ['198.18.100.113'], internalTrafficPolicy: 'Local', endpoints: [b1] }),
      servicePort({
        namespace: 'kube-system',
        name: 'dns',
        portName: 'dns',
        protocol: 'UDP',
        port: 53,
        clusterIPs: ['198.18.100.70'],
        endpoints: [endpoint('198.19.1.11', 5353)],
      }),
      servicePort({
        namespace: 'tel',
        name: 'sig',
        portName: '',
        protocol: 'SCTP',
        port: 3868,
        clusterIPs: ['198.18.100.71'],
        endpoints: [endpoint('198.19.1.11', 3868)],
      }),
    ];
    golden('affinity-internal-local-udp-sctp', dryRun(desiredState(ports)));
  });

  it('configuration: masquerade-all, several cluster CIDRs, --nodeport-addresses', () => {
    const web = servicePort({ namespace: 'shop', name: 'web', clusterIPs: ['198.18.100.20'], nodePort: 30080, endpoints: [a1, b1] });
    const several = desiredState([web], { clusterCIDRs: ['198.19.0.0/16', '198.20.0.0/16'], nodePortAddresses: ['198.18.0.0/24', '2001:db8::/64'] });
    const all = desiredState([web], { masqueradeAll: true, clusterCIDRs: [] });
    golden('config-multi-cidr-nodeport-addresses', dryRun(several));
    golden('config-masquerade-all', dryRun(all));
  });

  it('IPv6: ClusterIP, NodePort, external and LB IPs with source ranges, affinity, a Local policy, no endpoints', () => {
    const a6 = endpoint('2001:2:0:11::11', 8080);
    const b6 = endpoint('2001:2:0:12::11', 8080, { node: 'node-b' });
    const ports = [
      servicePort({
        namespace: 'shop',
        name: 'web6',
        family: 'IPv6',
        clusterIPs: ['2001:2:0:100::10'],
        nodePort: 30081,
        externalIPs: ['2001:2:0:200::10'],
        loadBalancerIPs: ['2001:2:0:200::11'],
        loadBalancerSourceRanges: ['2001:2::/64'],
        affinityTimeoutSeconds: 600,
        endpoints: [a6, b6],
      }),
      servicePort({
        namespace: 'shop',
        name: 'local6',
        family: 'IPv6',
        clusterIPs: ['2001:2:0:100::20'],
        nodePort: 30082,
        externalTrafficPolicy: 'Local',
        endpoints: [b6],
      }),
      servicePort({ namespace: 'shop', name: 'empty6', family: 'IPv6', clusterIPs: ['2001:2:0:100::30'] }),
    ];
    golden('ipv6', dryRun(desiredState(ports, { clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] }, 'IPv6')));
  });
});

describe('IPv6', () => {
  const web6 = (more: Partial<ServicePort> = {}) =>
    servicePort({
      namespace: 'shop',
      name: 'web6',
      family: 'IPv6',
      clusterIPs: ['2001:2:0:100::10'],
      nodePort: 30081,
      endpoints: [endpoint('2001:2:0:11::11', 8080), endpoint('2001:2:0:12::11', 8080, { node: 'node-b' })],
      ...more,
    });
  const text = (ports: ServicePort[]) => dryRun(desiredState(ports, { clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] }, 'IPv6'));

  it('DNATs to [ip]:port, masquerades hairpin and outside traffic, and keeps only its own family of the configuration', () => {
    const t = text([web6()]);
    expect(t).toContain('-j DNAT --to-destination [2001:2:0:11::11]:8080');
    expect(t).toContain('-s 2001:2:0:11::11 -j KUBE-MARK-MASQ');
    expect(t).toContain('-d 2001:2:0:100::10 --dport 80 ! -s 2001:2:0:10::/60 -j KUBE-MARK-MASQ');
    expect(t).toContain('-j MASQUERADE --random-fully');
    expect(t).not.toMatch(/198\.19\.|127\.0\.0/);
  });

  it('records and checks affinity with -m recent, as for IPv4', () => {
    const t = text([web6({ affinityTimeoutSeconds: 300 })]);
    expect(t).toMatch(/-m recent --name (KUBE-SEP-\S+) --rcheck --seconds 300 --reap -j \1/);
    expect(t).toMatch(/-m recent --name KUBE-SEP-\S+ --set -m tcp -p tcp -j DNAT --to-destination \[2001:2:0:11::11\]:8080/);
  });

  it('rejects without endpoints (ip6tables REJECT answers icmp6-port-unreachable)', () => {
    const t = text([web6({ allEndpoints: [] }), servicePort({ namespace: 'shop', name: 'empty6', family: 'IPv6', clusterIPs: ['2001:2:0:100::30'] })]);
    expect(t).toContain('-A KUBE-SERVICES -m comment --comment "shop/empty6:http has no endpoints" -m tcp -p tcp -d 2001:2:0:100::30 --dport 80 -j REJECT');
  });

  it('never serves NodePorts on ::1 and has no localnet guard (no route_localnet for IPv6)', () => {
    const t = text([web6()]);
    expect(t).toMatch(/-m addrtype --dst-type LOCAL ! -d ::1\/128 -j KUBE-NODEPORTS/);
    expect(t).not.toContain('KUBE-FIREWALL');
    expect(t).not.toContain('route_localnet');
  });

  it('leaves out a service port of the other family, and the proxier refuses a state of the other family', () => {
    const ctx = renderContext(desiredState([], {}, 'IPv6'));
    expect(() => renderServicePort(servicePort({ namespace: 'a', name: 'b', clusterIPs: ['198.18.100.1'] }), ctx)).toThrow(/IPv4 service port/);
    expect(() => proxiers.IPv4.dryRun(desiredState([web6()], {}, 'IPv6'))).toThrow(/IPv4 iptables proxier/);
  });
});

describe("the model's endpoint decision", () => {
  const svcChain = (r: ReturnType<typeof renderServicePort>, prefix: string) => r.chains.find((c) => c.name.startsWith(prefix));
  const seps = (rules: string[] | undefined) =>
    (rules ?? []).filter((l) => l.includes('-j KUBE-SEP-') && !l.includes('-m recent')).map((l) => /-> (\S+)"/.exec(l)?.[1]);
  const ctx = renderContext(desiredState([]));

  it('routes ClusterIP traffic to the topology-narrowed Cluster endpoints', () => {
    const hinted = (ip: string, node: string, hint: string) => ({ ...endpoint(ip, 8080, { node }), nodeHints: [hint] });
    const sp = servicePort({
      namespace: 'shop',
      name: 'near',
      clusterIPs: ['198.18.100.10'],
      endpoints: [hinted('198.19.1.11', 'node-a', 'node-a'), hinted('198.19.2.11', 'node-b', 'node-b'), hinted('198.19.2.12', 'node-b', 'node-b')],
    });
    expect(sp.topologyMode).toBe('PreferSameNode');
    expect(seps(svcChain(renderServicePort(sp, ctx), 'KUBE-SVC-')?.rules)).toEqual(['198.19.1.11:8080']);
  });

  it('falls back to serving-and-terminating endpoints when none is ready', () => {
    const sp = servicePort({
      namespace: 'shop',
      name: 'draining',
      clusterIPs: ['198.18.100.11'],
      endpoints: [
        endpoint('198.19.1.11', 8080, { ready: false, serving: true, terminating: true }),
        endpoint('198.19.2.11', 8080, { ready: false, node: 'node-b' }),
      ],
    });
    const r = renderServicePort(sp, ctx);
    expect(seps(svcChain(r, 'KUBE-SVC-')?.rules)).toEqual(['198.19.1.11:8080']);
    expect(r.filter).toEqual([]);
  });

  it('follows the decided fields, never the raw traffic policies', () => {
    const base = servicePort({
      namespace: 'shop',
      name: 'x',
      clusterIPs: ['198.18.100.12'],
      internalTrafficPolicy: 'Local',
      endpoints: [endpoint('198.19.1.11'), endpoint('198.19.2.11', 8080, { node: 'node-b' })],
    });
    // The same decision with the raw field saying otherwise: rendered the same.
    const r = renderServicePort({ ...base, internalTrafficPolicy: 'Cluster' }, ctx);
    expect(r).toEqual(renderServicePort(base, ctx));
    expect(r.frontends[0]?.spec).toMatch(/-j KUBE-SVL-/);
    expect(seps(svcChain(r, 'KUBE-SVL-')?.rules)).toEqual(['198.19.1.11:8080']);
    expect(svcChain(r, 'KUBE-SVC-')).toBeUndefined(); // not externally accessible: no short circuit to serve
  });

  it('drops, not rejects, traffic for a Local policy without local endpoints, and short-circuits pods and the node', () => {
    const sp = servicePort({
      namespace: 'shop',
      name: 'remote',
      clusterIPs: ['198.18.100.13'],
      nodePort: 30013,
      externalTrafficPolicy: 'Local',
      endpoints: [endpoint('198.19.2.11', 8080, { node: 'node-b' })],
    });
    const r = renderServicePort(sp, ctx);
    expect(r.filter.map((f) => f.spec)).toEqual([expect.stringMatching(/has no local endpoints.*--dport 30013 -j DROP$/)]);
    const ext = svcChain(r, 'KUBE-EXT-')?.rules ?? [];
    expect(ext.some((l) => l.includes('-s 198.19.0.0/16 -j KUBE-SVC-'))).toBe(true);
    expect(ext.some((l) => l.includes('--src-type LOCAL -j KUBE-SVC-'))).toBe(true);
    expect(ext.some((l) => l.includes('-j KUBE-SVL-'))).toBe(false);
  });
});

describe('localhost NodePorts (IPv4)', () => {
  const web = servicePort({ namespace: 'shop', name: 'web', clusterIPs: ['198.18.100.20'], nodePort: 30080, endpoints: [endpoint('198.19.1.11')] });
  const nodePortJumps = (t: string) => t.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES') && l.includes('-j KUBE-NODEPORTS'));

  it('are on by default: NodePorts on 127.0.0.1 too, the martian guard in KUBE-FIREWALL first in INPUT and OUTPUT, and a note', () => {
    const t = dryRun(desiredState([web]));
    expect(nodePortJumps(t)).toEqual([expect.not.stringContaining('127.0.0.0/8')]);
    expect(t).toContain(':KUBE-FIREWALL - [0:0]');
    expect(t).toContain(
      '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    );
    const inserts = t.split('\n').filter((l) => l.startsWith('-I '));
    // Inserted last-first at position 1: the guard's jumps are inserted last, so they end up first.
    expect(inserts.filter((l) => l.startsWith('-I INPUT ')).at(-1)).toBe('-I INPUT 1 -j KUBE-FIREWALL');
    expect(inserts.filter((l) => l.startsWith('-I OUTPUT ')).at(-1)).toBe('-I OUTPUT 1 -j KUBE-FIREWALL');
    expect(t.split('\n')[0]).toMatch(/^# .*net\.ipv4\.conf\.all\.route_localnet=1/);
  });

  it('off: no guard, no note, and loopback destinations are not NodePorts', () => {
    const t = dryRun(desiredState([web], { localhostNodePorts: false }));
    expect(nodePortJumps(t)).toEqual([expect.stringContaining('-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS')]);
    expect(t).not.toContain('KUBE-FIREWALL');
    expect(t).not.toContain('route_localnet');
  });

  it('follow --nodeport-addresses: off when they leave loopback out, on when they hold it', () => {
    const without = renderContext(desiredState([], { nodePortAddresses: ['198.18.0.0/24'] }));
    expect(without.localhostNodePorts).toBe(false);
    expect(dryRun(desiredState([web], { nodePortAddresses: ['198.18.0.0/24'] }))).not.toContain('KUBE-FIREWALL');
    const withLoopback = desiredState([web], { nodePortAddresses: ['198.18.0.0/24', '127.0.0.0/8'] });
    expect(renderContext(withLoopback).localhostNodePorts).toBe(true);
    expect(nodePortJumps(dryRun(withLoopback))).toEqual([
      expect.stringContaining('-d 198.18.0.0/24 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'),
      expect.stringContaining('-d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'),
    ]);
  });

  it('off with --nodeport-addresses holding loopback: loopback-only ranges left out (with a warning), wider ones cut', () => {
    const state = desiredState([web], { localhostNodePorts: false, nodePortAddresses: ['127.0.0.0/8', '0.0.0.0/1', '198.18.0.0/24'] });
    expect(renderContext(state).warnings).toEqual([expect.stringContaining('127.0.0.0/8 holds only loopback addresses')]);
    expect(nodePortJumps(dryRun(state))).toEqual([
      expect.stringContaining('-d 0.0.0.0/1 -m addrtype --dst-type LOCAL -m iprange ! --dst-range 127.0.0.0-127.255.255.255 -j KUBE-NODEPORTS'),
      expect.stringContaining('-d 198.18.0.0/24 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'),
    ]);
    // 0.0.0.0/0 is every address, as upstream reads it.
    expect(renderContext(desiredState([], { nodePortAddresses: ['0.0.0.0/0'] })).nodePortCIDRs).toBeNull();
  });
});

describe('definition', () => {
  it("declares the mode: restore text per family, loaded with the family's restore binary", () => {
    expect(definition.name).toBe('iptables');
    expect(definition.keepsClientAddress).toBe(true);
    expect(definition.dryRun.kind).toBe('restore');
    expect(definition.dryRun.combine).toBeNull();
    expect(definition.dryRun.loadCommand('IPv4', 'f')).toEqual(['iptables-restore', '--noflush', 'f']);
    expect(definition.dryRun.loadCommand('IPv6', 'f')).toEqual(['ip6tables-restore', '--noflush', 'f']);
    expect(definition.failureMetric).toBe('kubeproxy_sync_proxy_rules_iptables_restore_failures_total');
    for (const family of ['IPv4', 'IPv6'] as IPFamily[]) expect(definition.create({ config: config(), iptablesBackend: 'nft', family }).family).toBe(family);
  });
});

/** The probability with which each target of a chain is chosen, from the rendered statistic rules. */
function shares(rules: string[]): Map<string, number> {
  const out = new Map<string, number>();
  let remaining = 1;
  for (const rule of rules) {
    if (rule.includes('-m recent')) continue; // affinity: only clients seen before
    const target = /-j (\S+)$/.exec(rule)?.[1];
    if (!target?.startsWith('KUBE-SEP-')) continue;
    const p = /--probability (\S+)/.exec(rule);
    const prob = p ? Number(p[1]) : 1;
    out.set(target, (out.get(target) ?? 0) + remaining * prob);
    remaining *= 1 - prob;
  }
  return out;
}

describe('load balancing', () => {
  for (const affinity of [null, 300]) {
    it(`gives every endpoint an equal share (${affinity ? 'with' : 'without'} affinity)`, () => {
      const ctx = renderContext(desiredState([]));
      for (let n = 1; n <= 25; n++) {
        const eps = Array.from({ length: n }, (_, i) => endpoint(`198.19.${i >> 8}.${(i % 250) + 1}`, 8080, { node: i % 2 ? 'node-b' : 'node-a' }));
        const r = renderServicePort(
          servicePort({ namespace: 'ns', name: `s${n}`, clusterIPs: ['198.18.100.1'], affinityTimeoutSeconds: affinity, endpoints: eps }),
          ctx,
        );
        const svc = r.chains.find((c) => c.name.startsWith('KUBE-SVC-'));
        const got = shares(svc?.rules ?? []);
        expect(got.size).toBe(n);
        for (const share of got.values()) expect(share).toBeCloseTo(1 / n, 8);
        // The last rule takes whatever is left: nothing falls through.
        const total = [...got.values()].reduce((a, b) => a + b, 0);
        expect(total).toBeCloseTo(1, 9);
      }
    });
  }
});

describe('values that must not reach the rule text', () => {
  it('leaves out a service port with a malformed address, keeps the others', () => {
    const good = servicePort({ namespace: 'shop', name: 'good', clusterIPs: ['198.18.100.1'], endpoints: [a1] });
    const bad = servicePort({ namespace: 'shop', name: 'bad', clusterIPs: ['198.18.100.2 -j ACCEPT'], endpoints: [a1] });
    const text = dryRun(desiredState([good, bad]));
    expect(text).toContain('shop/good:http');
    expect(text).not.toContain('shop/bad');
    expect(text).not.toContain('198.18.100.2');
  });

  it('neutralises quotes and control characters in names that end up in comments', () => {
    const evil = servicePort({ namespace: 'ns"', name: 'x" -j ACCEPT #', portName: 'p\nq', clusterIPs: ['198.18.100.3'], endpoints: [a1] });
    const text = dryRun(desiredState([evil]));
    for (const line of text.split('\n').filter((l) => l.includes('ns_'))) {
      // Exactly one quoted comment per rule, no stray quote, nothing after a "#".
      expect(line.match(/"/g)?.length).toBe(2);
      expect(line).not.toContain('#');
    }
    expect(text).toContain('--comment "ns_/x_ -j ACCEPT _:p_q cluster IP"');
  });

  it('rejects endpoints of the wrong family and out-of-range ports', () => {
    const ctx = renderContext(desiredState([]));
    expect(() => renderServicePort(servicePort({ namespace: 'a', name: 'b', clusterIPs: ['fd00::1'], endpoints: [a1] }), ctx)).toThrow(/IPv4/);
    expect(() => renderServicePort(servicePort({ namespace: 'a', name: 'b', port: 70000, clusterIPs: ['198.18.100.1'] }), ctx)).toThrow(/port/);
    expect(() =>
      renderServicePort(servicePort({ namespace: 'a', name: 'b', clusterIPs: ['198.18.100.1'], endpoints: [endpoint('198.19.1.1', 0)] }), ctx),
    ).toThrow(/port/);
  });
});

describe('dry run', () => {
  it('installs the jumps from the built-in chains exactly once each, at the top', () => {
    const text = dryRun(desiredState([], { localhostNodePorts: false }));
    const inserts = text.split('\n').filter((l) => /^-[AI] (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) /.test(l));
    expect(inserts).toHaveLength(12);
    expect(new Set(inserts).size).toBe(12);
    expect(inserts.every((l) => / 1 -m /.test(l))).toBe(true);
  });

  it('keeps the NodePort jump the last rule of KUBE-SERVICES', () => {
    const web = servicePort({ namespace: 'shop', name: 'web', clusterIPs: ['198.18.100.20'], nodePort: 30080, externalIPs: ['198.18.200.1'], endpoints: [a1] });
    const rules = dryRun(desiredState([web]))
      .split('\n')
      .filter((l) => l.startsWith('-A KUBE-SERVICES '));
    expect(rules.at(-1)).toContain('-j KUBE-NODEPORTS');
    expect(rules.filter((l) => l.includes('-j KUBE-NODEPORTS'))).toHaveLength(1);
  });
});

describe('TextBuffer', () => {
  it('appends, grows, and prepends into its headroom or beyond it', () => {
    const out = new TextBuffer(1024, 8);
    out.line('b'.repeat(2000)); // past the estimate
    out.append('c\n');
    out.prepend('a\n'); // fits the headroom
    out.prepend(`${'z'.repeat(100)}\n`); // does not: copied
    expect(out.toBuffer().toString('latin1')).toBe(`${'z'.repeat(100)}\na\n${'b'.repeat(2000)}\nc\n`);
    expect(out.length).toBe(101 + 2 + 2001 + 2);
  });
});
