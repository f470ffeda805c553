// The fixed chains and the cluster-dependent rules of the nftables layout (layout.ts). What they do to
// packets, with the planner's elements, is in nftables-behaviour.test.ts.
import { describe, expect, it } from 'vitest';
import { type ChainSpec, chainSpecs, COUNT_BASE, emptyNeeds, FAMILIES, LOCAL_BIT, type Needs, SLOT_BASE } from '../../src/modes/nftables/layout.ts';

const cfg = {
  family: FAMILIES.IPv4,
  clusterCIDRs: ['198.19.0.0/16'],
  localInterface: null,
  masqMark: 0x4000,
  masqueradeAll: false,
  nodePortAddresses: [] as string[],
};
const chain = (chains: ChainSpec[], name: string) => {
  const c = chains.find((x) => x.name === name);
  if (!c) throw new Error(`no chain ${name}`);
  return c;
};
const text = (c: ChainSpec) => JSON.stringify(c.rules);

describe('base chains', () => {
  const chains = chainSpecs(cfg, emptyNeeds());

  it('hook nat prerouting/output/postrouting and filter input/forward/output (before and after DNAT) at kube-proxy’s priorities', () => {
    const bases = chains.filter((c) => c.base).map((c) => [c.name, c.base!.type, c.base!.hook, c.base!.prio]);
    expect(bases).toEqual([
      ['filter-input', 'filter', 'input', -110],
      ['filter-forward', 'filter', 'forward', -110],
      ['filter-output', 'filter', 'output', -110],
      ['filter-output-post-dnat', 'filter', 'output', -90],
      ['nat-prerouting', 'nat', 'prerouting', -100],
      ['nat-output', 'nat', 'output', -100],
      ['nat-postrouting', 'nat', 'postrouting', 100],
    ]);
  });

  it('REJECT through the no-endpoint maps on new connections, NodePorts only on local non-loopback addresses', () => {
    const input = text(chain(chains, 'filter-input'));
    expect(input).toContain('"data":"@no-endpoint-services"');
    expect(input).toContain('{"match":{"op":"==","left":{"fib":{"result":"type","flags":["daddr"]}},"right":"local"}}');
    expect(input).toContain('{"prefix":{"addr":"127.0.0.0","len":8}}');
    expect(text(chain(chains, 'reject-chain'))).toBe('[[{"reject":{"type":"icmp","expr":"port-unreachable"}}]]');
  });

  it('cluster-ips-check: after DNAT (forward, output-post-dnat), new connections still to a ClusterIP are rejected; after the no-endpoint REJECT', () => {
    const forward = chain(chains, 'filter-forward').rules.map((r) => JSON.stringify(r));
    const jumpCheck = '[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"new"}},{"jump":{"target":"cluster-ips-check"}}]';
    expect(forward.indexOf(jumpCheck)).toBeGreaterThan(forward.findIndex((r) => r.includes('@no-endpoint-services')));
    expect(chain(chains, 'filter-output-post-dnat').rules.map((r) => JSON.stringify(r))).toEqual([jumpCheck]);
    expect(text(chain(chains, 'filter-output'))).not.toContain('cluster-ips-check');
    expect(text(chain(chains, 'filter-input'))).not.toContain('cluster-ips-check');
    expect(text(chain(chains, 'cluster-ips-check'))).toBe(
      '[[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"@cluster-ips"}},{"reject":{"type":"icmp","expr":"port-unreachable"}}]]',
    );
  });

  it('IPv6: ip6 payloads, ICMPv6 port unreachable, NodePorts never on ::1', () => {
    const v6 = chainSpecs({ ...cfg, family: FAMILIES.IPv6, clusterCIDRs: ['2001:2:0:10::/60'] }, emptyNeeds());
    const all = JSON.stringify(v6);
    expect(all).not.toContain('"protocol":"ip"');
    expect(text(chain(v6, 'reject-chain'))).toBe('[[{"reject":{"type":"icmpv6","expr":"port-unreachable"}}]]');
    expect(text(chain(v6, 'cluster-ips-check'))).toContain('{"reject":{"type":"icmpv6","expr":"port-unreachable"}}');
    expect(text(chain(v6, 'services'))).toContain('{"prefix":{"addr":"::1","len":128}}');
    expect(text(chain(v6, 'svc-dnat'))).toContain('"dnat":{"family":"ip6"');
    expect(text(chain(v6, 'cluster-ip'))).toContain('{"payload":{"protocol":"ip6","field":"saddr"}}');
  });

  it('restricts NodePorts to --nodeport-addresses when given, still never on loopback', () => {
    const c = chainSpecs({ ...cfg, nodePortAddresses: ['198.18.0.0/24', '127.0.0.0/8'] }, emptyNeeds());
    expect(text(chain(c, 'services'))).toContain('"right":"@nodeport-addresses"');
    expect(text(chain(c, 'services'))).toContain(
      '{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"127.0.0.0","len":8}}}}',
    );
  });

  it('masquerades ClusterIP traffic from outside the cluster CIDRs, all of it with --masquerade-all, none without CIDRs', () => {
    expect(text(chain(chains, 'cluster-ip'))).toBe(
      JSON.stringify([
        [{ match: { op: '!=', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: '@cluster-cidrs' } }, { jump: { target: 'mark-for-masquerade' } }],
        [{ goto: { target: 'svc-select' } }],
      ]),
    );
    expect(text(chain(chainSpecs({ ...cfg, masqueradeAll: true }, emptyNeeds()), 'cluster-ip'))).toBe(
      JSON.stringify([[{ jump: { target: 'mark-for-masquerade' } }], [{ goto: { target: 'svc-select' } }]]),
    );
    expect(text(chain(chainSpecs({ ...cfg, clusterCIDRs: [] }, emptyNeeds()), 'cluster-ip'))).toBe(JSON.stringify([[{ goto: { target: 'svc-select' } }]]));
  });

  it('Local policy: pods and the node (masqueraded) use every endpoint, others the local ones', () => {
    const rules = chain(chains, 'external-local').rules.map((r) => JSON.stringify(r));
    expect(rules).toHaveLength(4);
    expect(rules[0]).toContain('@cluster-cidrs');
    expect(rules[0]).toContain('"goto":{"target":"svc-select"}');
    expect(rules[1]).toContain('"flags":["saddr"]');
    expect(rules[1]).toContain('mark-for-masquerade');
    expect(rules[3]).toBe('[{"goto":{"target":"svc-select-local"}}]');
  });

  it('masquerades marked and hairpin traffic, clearing the mark, and resets the scratch register', () => {
    const m = text(chain(chains, 'masquerading'));
    expect(m).toContain('"right":"@hairpin"');
    expect(m).toContain('{"masquerade":{"flags":["fully-random"]}}');
    expect(m).toContain('{"mangle":{"key":{"meta":{"key":"priority"}},"value":0}}');
  });
});

describe('rules that follow the cluster', () => {
  const needs: Needs = { ...emptyNeeds(), counts: { svc: [3, 1], 'svc-local': [2], np: [], 'np-local': [] }, timeouts: { svc: [600], np: [] } };
  const chains = chainSpecs(cfg, needs);

  it('one rule per distinct endpoint count: check the count, then a random position below it', () => {
    const select = chain(chains, 'svc-select').rules.map((r) => JSON.stringify(r));
    const perCount = select.filter((r) => r.includes('numgen'));
    expect(perCount).toEqual(
      [1, 3].map((n) =>
        JSON.stringify([
          { mangle: { key: { meta: { key: 'priority' } }, value: COUNT_BASE + n } },
          {
            match: {
              op: '==',
              left: {
                concat: [
                  { payload: { protocol: 'ip', field: 'daddr' } },
                  { meta: { key: 'l4proto' } },
                  { payload: { protocol: 'th', field: 'dport' } },
                  { meta: { key: 'priority' } },
                ],
              },
              right: '@svc-counts',
            },
          },
          { mangle: { key: { meta: { key: 'priority' } }, value: { numgen: { mode: 'random', mod: n, offset: SLOT_BASE } } } },
          { goto: { target: 'svc-dnat' } },
        ]),
      ),
    );
    const local = chain(chains, 'svc-select-local').rules.map((r) => JSON.stringify(r));
    expect(local.filter((r) => r.includes('numgen'))).toHaveLength(1);
    expect(local.find((r) => r.includes('numgen'))).toContain(`"mod":2,"offset":${SLOT_BASE + LOCAL_BIT}`);
    expect(chain(chains, 'np-select').rules.filter((r) => JSON.stringify(r).includes('numgen'))).toHaveLength(0);
  });

  it('ends every choice with a DROP: a frontend we handle never leaves without DNAT', () => {
    for (const name of ['svc-select', 'svc-select-local', 'np-select', 'np-select-local', 'svc-dnat', 'np-dnat']) {
      expect(JSON.stringify(chain(chains, name).rules.at(-1))).toBe('[{"drop":null}]');
    }
  });

  it('affinity chains per timeout: probe 16 bits, refresh, DNAT; store rewrites every bit', () => {
    const probe = chain(chains, 'svc-affinity-600');
    expect(probe.rules).toHaveLength(2 + 16 + 1 + 2 + 1);
    const store = chain(chains, 'svc-affinity-store-600');
    expect(store.rules).toHaveLength(33);
    expect(JSON.stringify(store.rules[0])).toContain('"op":"update"');
    expect(JSON.stringify(store.rules[0])).toContain('"timeout":600');
    expect(JSON.stringify(store.rules[1])).toContain('"op":"delete"');
    expect(chains.some((c) => c.name === 'np-affinity-600')).toBe(false);
  });
});
