// `explain` must tell the same story as the packets: for every probe of every scenario (the repository's own,
// and the shared ones when ../shared/scenarios exists), its verdict, endpoint set, stickiness and source
// handling agree with what the probe expects, in the family of the probe's destination.
import { describe, expect, it } from 'vitest';
import { type IPFamily, inAnyCIDR } from '../../src/model/addr.ts';
import { explain, type Explanation, type PacketQuery } from '../../src/model/explain.ts';
import { buildState } from '../../src/model/store.ts';
import type { DesiredState } from '../../src/model/types.ts';
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
