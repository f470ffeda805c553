// `explain` must tell the same story as the packets: for every probe of every scenario (the repository's own,
// and the shared ones when ../shared/scenarios exists), its verdict, endpoint set, stickiness and source
// handling agree with what the probe expects, in the family of the probe's destination.
import { describe, expect, it } from 'vitest';
import { type IPFamily, inAnyCIDR } from '../../src/model/addr.ts';
import { explain, type Explanation, type PacketQuery } from '../../src/model/explain.ts';
import { buildState } from '../../src/model/store.ts';
import type { DesiredState, ProxyConfig } from '../../src/model/types.ts';
import {
  type Expectation,
  listScenarioFiles,
  loadScenario,
  NODE_POD_SUBNETS,
  podAddress,
  type ProbeSpec,
  type Scenario,
  targetFamily,
} from '../../src/lab/sandbox/scenario.ts';
import { clusterCIDRs, NETWORK } from '../../src/lab/sandbox/topology.ts';

const LOOPBACK = ['127.0.0.0/8', '::1/128'];

/** node-a's own addresses in a family: its LAN address, its cbr0 address, loopback. */
function nodeAAddress(ip: string, family: IPFamily): boolean {
  return ip === NETWORK[family]['node-a'] || ip === NODE_POD_SUBNETS['node-a'][family].gateway || inAnyCIDR(LOOPBACK, ip);
}

/**
 * The connection node-a's proxy sees for a probe, or why it sees none: node-b and the client reach node-a
 * only at its own addresses and (the client) the external ranges it routes there.
 */
function queryOf(sc: Scenario, p: ProbeSpec): PacketQuery | string {
  const family = targetFamily(p.to);
  const dst = p.to.ip;
  const local = nodeAAddress(dst, family);
  const q = { dst, port: p.to.port, protocol: p.to.protocol === 'udp' ? ('UDP' as const) : ('TCP' as const), dstIsLocal: local };
  if (p.from === 'node-a') return { ...q, src: 'node' };
  if (p.from.startsWith('pod:'))
    return {
      ...q,
      src: podAddress(
        sc.pods.find((x) => x.name === p.from.slice(4))!,
        family,
      )!,
    };
  const reachesNodeA = local || (p.from === 'client' && inAnyCIDR([NETWORK[family].externalRange], dst));
  if (!reachesNodeA) return `${p.from} does not route ${dst} to node-a`;
  return { ...q, src: NETWORK[family][p.from as 'client' | 'node-b'] };
}

/** How explain's answer departs from one expectation; [] when it agrees. */
function disagreements(e: Explanation, x: Expectation, sc: Scenario, q: PacketQuery, family: IPFamily): string[] {
  const out: string[] = [];
  const check = (ok: boolean, what: string) => {
    if (!ok) out.push(what);
  };
  const ipOf = (pod: string) =>
    podAddress(
      sc.pods.find((p) => p.name === pod)!,
      family,
    )!;
  const ips = e.endpoints.map((ep) => ep.id.replace(/^\[?([^\]]*?)\]?:\d+$/, '$1')).sort();
  if (x.refused) check(e.verdict === 'reject', `refused, but explain says ${e.verdict}`);
  // Traffic the proxy leaves alone goes by node-a's default route to the client, which drops it.
  if (x.dropped) check(e.verdict === 'drop' || (e.verdict === 'no-match' && !q.dstIsLocal), `dropped, but explain says ${e.verdict}`);
  if (x.backends) {
    check(e.verdict === 'dnat', `answered, but explain says ${e.verdict}`);
    check(JSON.stringify(ips) === JSON.stringify(x.backends.map(ipOf).sort()), `backends ${x.backends}, but explain lists ${ips}`);
    check(
      e.endpoints.every((ep) => Math.abs(ep.probability - 1 / e.endpoints.length) < 1e-9),
      'endpoints not equally likely',
    );
  }
  if (x.oneOf) check(e.verdict === 'dnat' && ips.every((ip) => x.oneOf!.map(ipOf).includes(ip)), `oneOf ${x.oneOf}, but explain lists ${ips}`);
  if (x.sticky) check(e.affinitySeconds !== null, 'sticky, but explain has no affinity');
  // The endpoint sees the sender's own address only when nothing masqueraded it.
  if (x.sourceIP) check(e.masquerade === (x.sourceIP !== q.src), `source ${x.sourceIP} seen, but explain says masquerade ${e.masquerade}`);
  if (x.sourceNot) {
    check(e.masquerade === true || (e.masquerade === 'hairpin-only' && x.sourceNot === q.src), `source hidden, but explain says masquerade ${e.masquerade}`);
  }
  return out;
}

describe('explain agrees with every scenario probe', () => {
  for (const file of listScenarioFiles()) {
    const sc = loadScenario(file);
    const config = { hostname: 'node-a', clusterCIDRs: clusterCIDRs(sc.pods), masqueradeAll: false, nodePortAddresses: [] };
    const states = new Map<IPFamily, DesiredState>((['IPv4', 'IPv6'] as const).map((f) => [f, buildState(sc.objects as never[], config, f).state]));
    for (const p of sc.probes) {
      const q = queryOf(sc, p);
      if (typeof q === 'string') continue; // node-a's proxy never sees it
      it(`${sc.name}: ${p.name}`, () => {
        const family = targetFamily(p.to);
        const e = explain(q, states.get(family)!);
        // Where modes differ (upstream's do too), explain must tell what one of them does.
        const candidates = [p.expect, ...Object.values(p.modes ?? {}).map((m) => m.expect)];
        const failures = candidates.map((x) => disagreements(e, x, sc, q, family));
        if (failures.some((f) => f.length === 0)) return;
        expect.fail(`explain disagrees with the probe:\n  ${failures.map((f) => f.join('; ')).join('\n  ')}\n${e.steps.join('\n')}`);
      });
    }
  }

  it('says when nothing matches', () => {
    const { state } = buildState([], { hostname: 'node-a', clusterCIDRs: [], masqueradeAll: false, nodePortAddresses: [] });
    const e = explain({ dst: '198.18.100.1', port: 80, protocol: 'TCP', src: 'node' }, state);
    expect(e.verdict).toBe('no-match');
    expect(e.steps.join('\n')).toContain('does not touch this packet');
  });
});

describe('explain tells local pods as the detect-local mode does', () => {
  const objects = [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'shop' },
      spec: { clusterIP: '198.18.100.1', clusterIPs: ['198.18.100.1'], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: ['198.19.2.10'], conditions: { ready: true }, nodeName: 'node-b' }],
    },
  ];
  const base = { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [] };
  const ask = (config: ProxyConfig, src: string) =>
    explain({ dst: '198.18.100.1', port: 80, protocol: 'TCP', src }, buildState(objects as never[], config).state);

  it("NodeCIDR: only this node's podCIDR is a local pod; a pod of another node is masqueraded", () => {
    const config: ProxyConfig = { ...base, detectLocal: { mode: 'NodeCIDR', podCIDRs: ['198.19.1.0/24'] } };
    expect(ask(config, '198.19.1.5')).toMatchObject({ verdict: 'dnat', masquerade: false });
    expect(ask(config, '198.19.3.5')).toMatchObject({ verdict: 'dnat', masquerade: true });
    expect(ask(config, '198.19.1.5').steps[0]).toContain('a local pod: source in 198.19.1.0/24');
  });

  it('an interface detector: an address does not show it, and explain says so', () => {
    const config: ProxyConfig = { ...base, detectLocal: { mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' } };
    const e = ask(config, '198.19.1.5');
    expect(e).toMatchObject({ verdict: 'dnat', masquerade: true });
    expect(e.steps[0]).toContain('input interface veth*');
  });

  it('no detector (no CIDR of the family): nothing is masqueraded, as upstream', () => {
    const e = ask({ ...base, clusterCIDRs: [] }, '198.18.200.9');
    expect(e).toMatchObject({ verdict: 'dnat', masquerade: false });
    expect(e.steps[0]).toContain('local traffic is not detected');
  });
});
