// Golden tests of the rendered iptables-restore text (test/golden/iptables/*.rules; regenerate with
// UPDATE_GOLDEN=1 after checking the diff), and properties of the rendering.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ServicePort } from '../../src/model/types.ts';
import { createProxier } from '../../src/modes/iptables/index.ts';
import { renderContext, renderServicePort, TextBuffer } from '../../src/modes/iptables/render.ts';
import { config, desiredState, endpoint, servicePort } from './model-fixtures.ts';

const GOLDEN = path.resolve(import.meta.dirname, '..', 'golden', 'iptables');
const proxier = createProxier({ config: config(), iptablesBackend: 'nft' });

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
    golden('clusterip-basic', proxier.dryRun(desiredState([web])));
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
    const state = { ...desiredState([api]), node: { name: 'node-a', labels: {}, addresses: ['198.18.0.1'], podCIDRs: [], deleting: false } };
    golden('external-cluster-policy', proxier.dryRun(state));
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
    golden('external-local-policy', proxier.dryRun(desiredState([ingress, remote])));
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
    golden('no-endpoints', proxier.dryRun(desiredState([empty])));
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
    golden('affinity-internal-local-udp-sctp', proxier.dryRun(desiredState(ports)));
  });

  it('configuration: masquerade-all, several cluster CIDRs, --nodeport-addresses', () => {
    const web = servicePort({ namespace: 'shop', name: 'web', clusterIPs: ['198.18.100.20'], nodePort: 30080, endpoints: [a1, b1] });
    const several = desiredState([web], { clusterCIDRs: ['198.19.0.0/16', '198.20.0.0/16'], nodePortAddresses: ['198.18.0.0/24', '2001:db8::/64'] });
    const all = desiredState([web], { masqueradeAll: true, clusterCIDRs: [] });
    golden('config-multi-cidr-nodeport-addresses', proxier.dryRun(several));
    golden('config-masquerade-all', proxier.dryRun(all));
  });

  it('IPv6', () => {
    const v6 = servicePort({
      namespace: 'shop',
      name: 'web6',
      family: 'IPv6',
      clusterIPs: ['fd00:100::10'],
      nodePort: 30081,
      endpoints: [endpoint('fd00:19:1::11', 8080), endpoint('fd00:19:2::11', 8080, { node: 'node-b' })],
    });
    golden('ipv6', proxier.dryRun(desiredState([v6], { clusterCIDRs: ['198.19.0.0/16', 'fd00:19::/48'] }, 'IPv6')));
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
    const text = proxier.dryRun(desiredState([good, bad]));
    expect(text).toContain('shop/good:http');
    expect(text).not.toContain('shop/bad');
    expect(text).not.toContain('198.18.100.2');
  });

  it('neutralises quotes and control characters in names that end up in comments', () => {
    const evil = servicePort({ namespace: 'ns"', name: 'x" -j ACCEPT #', portName: 'p\nq', clusterIPs: ['198.18.100.3'], endpoints: [a1] });
    const text = proxier.dryRun(desiredState([evil]));
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
    const text = proxier.dryRun(desiredState([]));
    const inserts = text.split('\n').filter((l) => /^-[AI] (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) /.test(l));
    expect(inserts).toHaveLength(12);
    expect(new Set(inserts).size).toBe(12);
    expect(inserts.every((l) => / 1 -m /.test(l))).toBe(true);
  });

  it('keeps the NodePort jump the last rule of KUBE-SERVICES', () => {
    const web = servicePort({ namespace: 'shop', name: 'web', clusterIPs: ['198.18.100.20'], nodePort: 30080, externalIPs: ['198.18.200.1'], endpoints: [a1] });
    const rules = proxier
      .dryRun(desiredState([web]))
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
