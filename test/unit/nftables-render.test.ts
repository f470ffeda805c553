// What each kind of service port contributes to the nftables table (elements.ts).
import { describe, expect, it } from 'vitest';
import { InvalidValueError } from '../../src/model/addr.ts';
import { checkPort, disjointCIDRs } from '../../src/modes/nftables/elements.ts';
import { COUNT_BASE, LOCAL_BIT, SLOT_BASE } from '../../src/modes/nftables/layout.ts';
import { elemsOf, endpoint, keysOf, render, servicePort } from './nftables-fixtures.ts';

const web = (extra: Parameters<typeof servicePort>[0] | object = {}) =>
  servicePort({
    name: 'web',
    clusterIPs: ['198.18.100.10'],
    endpoints: [endpoint('198.19.1.11'), endpoint('198.19.2.11', 8080, { node: 'node-b' })],
    ...extra,
  });

describe('a ClusterIP service port', () => {
  const r = render(web());

  it('is classified to the cluster-ip chain, with its key as the element comment', () => {
    expect(elemsOf(r.elems, 'service-ips')).toEqual([
      { key: ['198.18.100.10', 'tcp', 80], value: { goto: { target: 'cluster-ip' } }, comment: 'shop/web:http' },
    ]);
  });

  it('has its endpoint count, one address per slot and one port', () => {
    expect(elemsOf(r.elems, 'svc-counts')).toEqual([{ key: ['198.18.100.10', 'tcp', 80, COUNT_BASE + 2], value: null }]);
    expect(elemsOf(r.elems, 'svc-addr')).toEqual([
      { key: ['198.18.100.10', 'tcp', 80, SLOT_BASE], value: '198.19.1.11' },
      { key: ['198.18.100.10', 'tcp', 80, SLOT_BASE + 1], value: '198.19.2.11' },
    ]);
    expect(elemsOf(r.elems, 'svc-port')).toEqual([{ key: ['198.18.100.10', 'tcp', 80], value: 8080 }]);
    expect(elemsOf(r.elems, 'svc-slot-port')).toEqual([]);
    expect(elemsOf(r.elems, 'svc-slots')).toEqual([]);
  });

  it('asks for a rule for its endpoint count', () => {
    expect(keysOf(r.shared, '#count:svc')).toEqual([2]);
  });

  it('lists only its local endpoint as a hairpin candidate', () => {
    expect(elemsOf(r.shared, 'hairpin')).toEqual([{ key: '198.19.1.11', value: null }]);
  });

  it('maps ports per slot when endpoints use different ports', () => {
    const mixed = render(web({ endpoints: [endpoint('198.19.1.11', 8080), endpoint('198.19.1.12', 9090)] }));
    expect(elemsOf(mixed.elems, 'svc-port')).toEqual([]);
    expect(elemsOf(mixed.elems, 'svc-slot-port')).toEqual([
      { key: ['198.18.100.10', 'tcp', 80, SLOT_BASE], value: 8080 },
      { key: ['198.18.100.10', 'tcp', 80, SLOT_BASE + 1], value: 9090 },
    ]);
  });

  it('uses UDP and SCTP protocols in its keys', () => {
    expect(elemsOf(render(web({ protocol: 'UDP', port: 53 })).elems, 'service-ips')[0]!.key).toEqual(['198.18.100.10', 'udp', 53]);
    expect(elemsOf(render(web({ protocol: 'SCTP' })).elems, 'service-ips')[0]!.key).toEqual(['198.18.100.10', 'sctp', 80]);
  });
});

describe('service ports without usable endpoints', () => {
  it('REJECT on every frontend when there are no endpoints at all', () => {
    const r = render(web({ endpoints: [], externalIPs: ['198.18.200.40'], nodePort: 30040 }));
    expect(elemsOf(r.elems, 'service-ips')).toEqual([]);
    expect(elemsOf(r.elems, 'no-endpoint-services').map((e) => [e.key, e.value])).toEqual([
      [['198.18.100.10', 'tcp', 80], { goto: { target: 'reject-chain' } }],
      [['198.18.200.40', 'tcp', 80], { goto: { target: 'reject-chain' } }],
    ]);
    expect(elemsOf(r.elems, 'no-endpoint-nodeports').map((e) => [e.key, e.value])).toEqual([[['tcp', 30040], { goto: { target: 'reject-chain' } }]]);
    expect(elemsOf(r.shared, '#count:svc')).toEqual([]);
  });

  it('DROP internal traffic with internalTrafficPolicy Local and no local endpoint', () => {
    const r = render(web({ internalTrafficPolicy: 'Local', endpoints: [endpoint('198.19.2.11', 8080, { node: 'node-b' })] }));
    expect(elemsOf(r.elems, 'service-ips').map((e) => e.value)).toEqual([{ drop: null }]);
    expect(elemsOf(r.elems, 'no-endpoint-services')).toEqual([]);
    expect(elemsOf(r.elems, 'svc-addr')).toEqual([]);
  });

  it('uses only local endpoints for the ClusterIP with internalTrafficPolicy Local', () => {
    const r = render(web({ internalTrafficPolicy: 'Local' }));
    expect(elemsOf(r.elems, 'svc-addr').map((e) => e.value)).toEqual(['198.19.1.11']);
  });
});

describe('external frontends', () => {
  it('Cluster policy: externalIPs, LB IPs and the NodePort masquerade and use every endpoint', () => {
    const r = render(web({ externalIPs: ['198.18.200.10'], loadBalancerIPs: ['198.18.200.20'], nodePort: 31443 }));
    expect(elemsOf(r.elems, 'service-ips').map((e) => [e.key, e.value])).toEqual([
      [['198.18.100.10', 'tcp', 80], { goto: { target: 'cluster-ip' } }],
      [['198.18.200.10', 'tcp', 80], { goto: { target: 'external' } }],
      [['198.18.200.20', 'tcp', 80], { goto: { target: 'external' } }],
    ]);
    expect(elemsOf(r.elems, 'service-nodeports').map((e) => [e.key, e.value])).toEqual([[['tcp', 31443], { goto: { target: 'nodeport' } }]]);
    expect(elemsOf(r.elems, 'np-addr').map((e) => [e.key, e.value])).toEqual([
      [['tcp', 31443, SLOT_BASE], '198.19.1.11'],
      [['tcp', 31443, SLOT_BASE + 1], '198.19.2.11'],
    ]);
    expect(elemsOf(r.elems, 'np-port')).toEqual([{ key: ['tcp', 31443], value: 8080 }]);
    expect(keysOf(r.shared, '#count:svc')).toEqual([2]);
    expect(keysOf(r.shared, '#count:np')).toEqual([2]);
  });

  it('Local policy: a second, local endpoint set with LOCAL_BIT slots, for sources that are neither pods nor the node', () => {
    const r = render(web({ loadBalancerIPs: ['198.18.200.60'], nodePort: 30060, externalTrafficPolicy: 'Local' }));
    expect(elemsOf(r.elems, 'service-ips').map((e) => e.value)).toEqual([{ goto: { target: 'cluster-ip' } }, { goto: { target: 'external-local' } }]);
    expect(elemsOf(r.elems, 'service-nodeports').map((e) => e.value)).toEqual([{ goto: { target: 'nodeport-local' } }]);
    expect(elemsOf(r.elems, 'svc-local-counts')).toEqual([{ key: ['198.18.200.60', 'tcp', 80, COUNT_BASE + 1], value: null }]);
    expect(elemsOf(r.elems, 'svc-addr').filter((e) => (e.key as unknown[])[0] === '198.18.200.60')).toEqual([
      { key: ['198.18.200.60', 'tcp', 80, SLOT_BASE], value: '198.19.1.11' },
      { key: ['198.18.200.60', 'tcp', 80, SLOT_BASE + 1], value: '198.19.2.11' },
      { key: ['198.18.200.60', 'tcp', 80, SLOT_BASE + LOCAL_BIT], value: '198.19.1.11' },
    ]);
    expect(keysOf(r.shared, '#count:svc-local')).toEqual([1]);
    expect(keysOf(r.shared, '#count:np-local')).toEqual([1]);
    // Pods may reach any endpoint through an external frontend without masquerade: all are hairpin candidates.
    expect(elemsOf(r.shared, 'hairpin').map((e) => e.key)).toEqual(['198.19.1.11', '198.19.2.11']);
  });

  it('Local policy without local endpoints: no local set (others are dropped), pods and the node still reach every endpoint', () => {
    const r = render(web({ nodePort: 30060, externalTrafficPolicy: 'Local', endpoints: [endpoint('198.19.2.11', 8080, { node: 'node-b' })] }));
    expect(elemsOf(r.elems, 'service-nodeports').map((e) => e.value)).toEqual([{ goto: { target: 'nodeport-local' } }]);
    expect(elemsOf(r.elems, 'np-local-counts')).toEqual([]);
    expect(elemsOf(r.elems, 'np-counts')).toEqual([{ key: ['tcp', 30060, COUNT_BASE + 1], value: null }]);
  });

  it('LB source ranges: the firewall chain and one allow element per disjoint range', () => {
    const r = render(web({ loadBalancerIPs: ['198.18.200.20'], loadBalancerSourceRanges: ['198.18.0.0/24', '198.18.0.100/32', '10.0.0.0/8'] }));
    expect(elemsOf(r.elems, 'service-ips').map((e) => e.value)).toEqual([{ goto: { target: 'cluster-ip' } }, { goto: { target: 'firewall' } }]);
    expect(elemsOf(r.elems, 'firewall-allow').map((e) => e.key)).toEqual([
      ['198.18.200.20', 'tcp', 80, { prefix: { addr: '10.0.0.0', len: 8 } }],
      ['198.18.200.20', 'tcp', 80, { prefix: { addr: '198.18.0.0', len: 24 } }],
    ]);
    const local = render(web({ loadBalancerIPs: ['198.18.200.20'], loadBalancerSourceRanges: ['10.0.0.0/8'], externalTrafficPolicy: 'Local' }));
    expect(elemsOf(local.elems, 'service-ips').map((e) => e.value)[1]).toEqual({ goto: { target: 'firewall-local' } });
    // A range that holds the node's address admits the LB IPs themselves too (a VIP-like LB IP local to the node).
    const viaNode = render(web({ loadBalancerIPs: ['198.18.200.20', '198.18.200.21'], loadBalancerSourceRanges: ['198.18.0.0/24'] }), ['198.18.0.1']);
    expect(elemsOf(viaNode.elems, 'firewall-allow').map((e) => (e.key as unknown[])[3])).toEqual([
      { prefix: { addr: '198.18.0.0', len: 24 } },
      { prefix: { addr: '198.18.200.20', len: 32 } },
      { prefix: { addr: '198.18.200.21', len: 32 } },
      { prefix: { addr: '198.18.0.0', len: 24 } },
      { prefix: { addr: '198.18.200.20', len: 32 } },
      { prefix: { addr: '198.18.200.21', len: 32 } },
    ]);
    const none = render(web({ loadBalancerIPs: ['198.18.200.20'], loadBalancerSourceRanges: ['10.0.0.0/8'], endpoints: [] }));
    expect(elemsOf(none.elems, 'service-ips').map((e) => e.value)).toEqual([{ goto: { target: 'firewall-only' } }]);
    expect(elemsOf(none.elems, 'no-endpoint-services')).toHaveLength(2);
  });
});

describe('ClientIP affinity', () => {
  const r = render(web({ affinityTimeoutSeconds: 600, nodePort: 30050 }));

  it('sends the frontends through the affinity chains of its timeout', () => {
    expect(elemsOf(r.elems, 'svc-affinity').map((e) => [e.key, e.value])).toEqual([[['198.18.100.10', 'tcp', 80], { jump: { target: 'svc-affinity-600' } }]]);
    expect(elemsOf(r.elems, 'svc-affinity-store').map((e) => e.value)).toEqual([{ jump: { target: 'svc-affinity-store-600' } }]);
    expect(elemsOf(r.elems, 'np-affinity').map((e) => e.value)).toEqual([{ jump: { target: 'np-affinity-600' } }]);
    expect(keysOf(r.shared, '#timeout:svc')).toEqual([600]);
    expect(keysOf(r.shared, '#timeout:np')).toEqual([600]);
  });

  it('maps random positions to stable slots', () => {
    expect(elemsOf(r.elems, 'svc-slots').map((e) => [(e.key as unknown[])[3], e.value])).toEqual([
      [SLOT_BASE, SLOT_BASE],
      [SLOT_BASE + 1, SLOT_BASE + 1],
    ]);
  });

  it('caps the timeout at Kubernetes’ maximum', () => {
    expect(keysOf(render(web({ affinityTimeoutSeconds: 999_999 })).shared, '#timeout:svc')).toEqual([86400]);
  });
});

describe('cluster-ips', () => {
  it('holds every ClusterIP, with endpoints or without (traffic to a port no service port serves is rejected)', () => {
    expect(elemsOf(render(web()).shared, 'cluster-ips')).toEqual([{ key: '198.18.100.10', value: null }]);
    expect(elemsOf(render(web({ endpoints: [] })).shared, 'cluster-ips')).toEqual([{ key: '198.18.100.10', value: null }]);
    expect(elemsOf(render(web({ externalIPs: ['198.18.200.10'] })).shared, 'cluster-ips').map((e) => e.key)).toEqual(['198.18.100.10']);
  });
});

describe('values checked by the one rule (model/addr.ts)', () => {
  it('keeps the first of equal frontends', () => {
    expect(checkPort(web({ externalIPs: ['198.18.100.10'] }), 'IPv4').frontends.map((x) => x.role)).toEqual(['cluster-ip']);
  });

  it('refuses a whole service port with an invalid value or one of the other family', () => {
    const refused = (extra: object) => () => checkPort(web(extra), 'IPv4');
    expect(refused({ externalIPs: ['not-an-ip'] })).toThrow(InvalidValueError);
    expect(refused({ loadBalancerIPs: ['2001:2:0:200::1'] })).toThrow(/not an IPv4 address: "2001:2:0:200::1"/);
    expect(refused({ loadBalancerSourceRanges: ['198.18.0.0/33'] })).toThrow(/not an IPv4 CIDR/);
    expect(refused({ endpoints: [endpoint('198.19.1.11'), endpoint('2001:2:0:11::5')] })).toThrow(/not an IPv4 address/);
    expect(refused({ nodePort: 70000 })).toThrow(/not a port/);
    expect(() => checkPort(web(), 'IPv6')).toThrow(/an IPv4 service port in the IPv6 table/);
  });

  it('makes CIDR lists nft accepts in an interval set: nested ranges folded into the outer one', () => {
    expect(disjointCIDRs(['10.1.0.0/16', '10.0.0.0/8', '192.168.1.0/24', '192.168.0.0/24', '0.0.0.0/0'], 'IPv4')).toEqual(['0.0.0.0/0']);
    expect(disjointCIDRs(['10.1.0.0/16', '10.0.0.0/8', '192.168.1.0/24', '192.168.0.0/24'], 'IPv4')).toEqual([
      '10.0.0.0/8',
      '192.168.0.0/24',
      '192.168.1.0/24',
    ]);
    expect(disjointCIDRs(['fd00::/8', 'fd00:1::/32', 'fe80::/10'], 'IPv6')).toEqual(['fd00::/8', 'fe80::/10']);
  });
});

describe('IPv6 service ports, for the ip6 table', () => {
  const a1 = endpoint('2001:2:0:11::11');
  const b1 = endpoint('2001:2:0:12::11', 8080, { node: 'node-b' });
  const v6 = (extra: object = {}) => servicePort({ name: 'v6', family: 'IPv6', clusterIPs: ['2001:2:0:100::10'], endpoints: [a1, b1], ...extra });

  it('ClusterIP: addresses in canonical form in keys and values', () => {
    const r = render(v6());
    expect(elemsOf(r.elems, 'service-ips').map((e) => [e.key, e.value])).toEqual([[['2001:2:0:100::10', 'tcp', 80], { goto: { target: 'cluster-ip' } }]]);
    expect(elemsOf(r.elems, 'svc-addr').map((e) => [e.key, e.value])).toEqual([
      [['2001:2:0:100::10', 'tcp', 80, SLOT_BASE], '2001:2:0:11::11'],
      [['2001:2:0:100::10', 'tcp', 80, SLOT_BASE + 1], '2001:2:0:12::11'],
    ]);
    expect(elemsOf(r.shared, 'cluster-ips').map((e) => e.key)).toEqual(['2001:2:0:100::10']);
    expect(elemsOf(r.shared, 'hairpin').map((e) => e.key)).toEqual(['2001:2:0:11::11']);
  });

  it('LB IP with source ranges, NodePort and affinity under the Local policy', () => {
    const r = render(
      v6({
        loadBalancerIPs: ['2001:2:0:200::20'],
        loadBalancerSourceRanges: ['2001:2::/64', '2001:2::100/128'],
        nodePort: 30443,
        externalTrafficPolicy: 'Local',
        affinityTimeoutSeconds: 30,
      }),
    );
    expect(elemsOf(r.elems, 'service-ips').map((e) => [e.key, e.value])).toEqual([
      [['2001:2:0:100::10', 'tcp', 80], { goto: { target: 'cluster-ip' } }],
      [['2001:2:0:200::20', 'tcp', 80], { goto: { target: 'firewall-local' } }],
    ]);
    expect(elemsOf(r.elems, 'firewall-allow').map((e) => e.key)).toEqual([['2001:2:0:200::20', 'tcp', 80, { prefix: { addr: '2001:2::', len: 64 } }]]);
    expect(elemsOf(r.elems, 'service-nodeports').map((e) => e.value)).toEqual([{ goto: { target: 'nodeport-local' } }]);
    expect(elemsOf(r.elems, 'np-addr').map((e) => e.value)).toEqual(['2001:2:0:11::11', '2001:2:0:12::11', '2001:2:0:11::11']);
    expect(keysOf(r.shared, '#timeout:np')).toEqual([30]);
    expect(elemsOf(r.shared, 'hairpin').map((e) => e.key)).toEqual(['2001:2:0:11::11', '2001:2:0:12::11']);
  });

  it('no endpoints: REJECT', () => {
    const r = render(v6({ endpoints: [], nodePort: 30444 }));
    expect(elemsOf(r.elems, 'no-endpoint-services').map((e) => e.key)).toEqual([['2001:2:0:100::10', 'tcp', 80]]);
    expect(elemsOf(r.elems, 'no-endpoint-nodeports').map((e) => e.key)).toEqual([['tcp', 30444]]);
  });
});
