// `explain` must tell the same story as the packets: for every probe of every shared scenario, its verdict,
// endpoint set, stickiness and source handling agree with what the probe expects.
import { describe, expect, it } from 'vitest';
import { explain } from '../../src/model/explain.ts';
import { buildState } from '../../src/model/store.ts';
import { listScenarioFiles, loadScenario } from '../../src/lab/sandbox/scenario.ts';

const CLIENT = '198.18.0.100';
const NODE_A = '198.18.0.1';

describe('explain agrees with every shared scenario probe', () => {
  for (const file of listScenarioFiles()) {
    const sc = loadScenario(file);
    const { state } = buildState(sc.objects as never[], { hostname: 'node-a', clusterCIDRs: ['198.19.0.0/16'], masqueradeAll: false, nodePortAddresses: [] });
    const ipOf = (pod: string) => sc.pods.find((p) => p.name === pod)!.ip;
    for (const p of sc.probes) {
      if (p.from === 'node-b') continue; // node-b runs no proxy
      it(`${sc.name}: ${p.name}`, () => {
        const src = p.from === 'client' ? CLIENT : p.from === 'node-a' ? 'node' : ipOf(p.from.slice(4));
        const e = explain({ dst: p.to.ip, port: p.to.port, protocol: p.to.protocol === 'udp' ? 'UDP' : 'TCP', src, dstIsLocal: p.to.ip === NODE_A }, state);
        const x = p.expect;
        if (x.refused) expect(e.verdict).toBe('reject');
        if (x.dropped) expect(e.verdict).toBe('drop');
        const ips = e.endpoints.map((ep) => ep.id.split(':')[0]).sort();
        if (x.backends) {
          expect(e.verdict).toBe('dnat');
          expect(ips).toEqual(x.backends.map(ipOf).sort());
          for (const ep of e.endpoints) expect(ep.probability).toBeCloseTo(1 / e.endpoints.length);
        }
        if (x.oneOf) for (const ip of ips) expect(x.oneOf.map(ipOf)).toContain(ip);
        if (x.sticky) expect(e.affinitySeconds).not.toBeNull();
        if (x.sourceIP) expect(e.masquerade).toBe(false);
        if (x.sourceNot) expect(e.masquerade === true || (e.masquerade === 'hairpin-only' && x.sourceNot === src)).toBe(true);
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
