// What the generated rules and elements do to the first packet of a connection, followed through the
// table by a small interpreter (nftables-sim.ts): endpoint choice, masquerade, Local policies, REJECT
// and DROP, source ranges, NodePorts, ClientIP affinity across incremental syncs, cluster-ips-check, IPv6.
import { describe, expect, it } from 'vitest';
import { hostPort } from '../../src/model/addr.ts';
import { Planner } from '../../src/modes/nftables/planner.ts';
import type { IPFamily, ServicePort } from '../../src/model/types.ts';
import { config, desiredState, endpoint, servicePort } from './nftables-fixtures.ts';
import { type Packet, Table } from './nftables-sim.ts';

const POD = '198.19.1.12';
const CLIENT = '198.18.0.100';
const NODE_IP = '198.18.0.1';

function install(ports: ServicePort[], cfg = {}, family: IPFamily = 'IPv4'): { p: Planner; t: Table } {
  const p = new Planner({ family, config: config(cfg) });
  return { p, t: new Table(p.full(desiredState(ports, cfg, family)).json!) };
}

const to = (daddr: string, dport: number, saddr = POD, extra: Partial<Packet> = {}): Packet => ({ saddr, daddr, proto: 'tcp', dport, ...extra });

/** The endpoint reached for every value numgen can give (mod N); the mod it was asked for. */
function everyChoice(t: Table, pkt: Packet): { mods: number[]; addrs: string[] } {
  const mods: number[] = [];
  t.nat(pkt, (m) => {
    mods.push(m);
    return 0;
  });
  const n = mods[0] ?? 0;
  const addrs: string[] = [];
  for (let r = 0; r < n; r++) {
    const o = t.nat(pkt, () => r);
    addrs.push(o.verdict === 'dnat' ? hostPort(o.addr, o.port) : o.verdict);
  }
  return { mods, addrs };
}

const eps = (n: number, first = 10, port = 8080) =>
  Array.from({ length: n }, (_, i) => endpoint(`198.19.1.${first + i}`, port, { node: i % 2 ? 'node-b' : 'node-a' }));
const clusterIP = (name: string, ip: string, list: ReturnType<typeof eps>, extra = {}) => servicePort({ name, clusterIPs: [ip], endpoints: list, ...extra });

describe('endpoint choice', () => {
  it('is even: with services of several endpoint counts side by side, each value of numgen mod N reaches a different endpoint', () => {
    const counts = [1, 2, 3, 7, 10];
    const { t } = install(counts.map((n, i) => clusterIP(`s${n}`, `198.18.100.${i + 1}`, eps(n, 10 + 20 * i))));
    counts.forEach((n, i) => {
      const { mods, addrs } = everyChoice(t, to(`198.18.100.${i + 1}`, 80));
      expect(mods).toEqual([n]);
      expect(new Set(addrs).size).toBe(n);
      expect(addrs.sort()).toEqual(
        eps(n, 10 + 20 * i)
          .map((e) => `${e.ip}:8080`)
          .sort(),
      );
    });
  });

  it('takes each endpoint’s own port when they differ', () => {
    const { t } = install([clusterIP('mixed', '198.18.100.1', [endpoint('198.19.1.1', 8080), endpoint('198.19.1.2', 9090)])]);
    expect(everyChoice(t, to('198.18.100.1', 80)).addrs.sort()).toEqual(['198.19.1.1:8080', '198.19.1.2:9090']);
  });

  it('does not touch traffic to other ports or addresses', () => {
    const { t } = install([clusterIP('web', '198.18.100.1', eps(2))]);
    expect(t.nat(to('198.18.100.1', 81))).toEqual({ verdict: 'accept', masquerade: false });
    expect(t.nat(to('198.18.100.2', 80))).toEqual({ verdict: 'accept', masquerade: false });
  });
});

describe('masquerade', () => {
  const web = clusterIP('web', '198.18.100.1', eps(2), { externalIPs: ['198.18.200.1'], nodePort: 30080 });

  it('ClusterIP: pods keep their source, the node and outside sources are masqueraded', () => {
    const { t } = install([web]);
    expect(t.nat(to('198.18.100.1', 80))).toMatchObject({ verdict: 'dnat', masquerade: false });
    expect(t.nat(to('198.18.100.1', 80, NODE_IP, { saddrLocal: true }))).toMatchObject({ verdict: 'dnat', masquerade: true });
    expect(t.nat(to('198.18.100.1', 80, CLIENT))).toMatchObject({ verdict: 'dnat', masquerade: true });
  });

  it('--masquerade-all masquerades pods too; without cluster CIDRs only external traffic is', () => {
    expect(install([web], { masqueradeAll: true }).t.nat(to('198.18.100.1', 80))).toMatchObject({ masquerade: true });
    const noCIDR = install([web], { clusterCIDRs: [] }).t;
    expect(noCIDR.nat(to('198.18.100.1', 80, CLIENT))).toMatchObject({ verdict: 'dnat', masquerade: false });
    expect(noCIDR.nat(to('198.18.200.1', 80, CLIENT))).toMatchObject({ verdict: 'dnat', masquerade: true });
  });

  it('external traffic under the Cluster policy is masqueraded, whatever the source', () => {
    const { t } = install([web]);
    expect(t.nat(to('198.18.200.1', 80, CLIENT))).toMatchObject({ verdict: 'dnat', masquerade: true });
    expect(t.nat(to('198.18.200.1', 80, POD))).toMatchObject({ verdict: 'dnat', masquerade: true });
    expect(t.nat(to(NODE_IP, 30080, CLIENT, { daddrLocal: true }))).toMatchObject({ verdict: 'dnat', masquerade: true });
  });

  it('hairpin: an endpoint that reaches itself is masqueraded, other pods are not', () => {
    const { t } = install([clusterIP('self', '198.18.100.80', [endpoint('198.19.1.11')])]);
    expect(t.nat(to('198.18.100.80', 80, '198.19.1.11'))).toMatchObject({ verdict: 'dnat', addr: '198.19.1.11', masquerade: true });
    expect(t.nat(to('198.18.100.80', 80, POD))).toMatchObject({ verdict: 'dnat', addr: '198.19.1.11', masquerade: false });
  });
});

describe('traffic policies', () => {
  const local = endpoint('198.19.1.11');
  const remote = endpoint('198.19.2.11', 8080, { node: 'node-b' });

  it('externalTrafficPolicy Local: outside clients reach local endpoints with their source; pods reach all; the node all, masqueraded', () => {
    const { t } = install([
      servicePort({
        name: 'lb',
        clusterIPs: ['198.18.100.60'],
        loadBalancerIPs: ['198.18.200.60'],
        nodePort: 30060,
        externalTrafficPolicy: 'Local',
        endpoints: [local, remote],
      }),
    ]);
    for (const target of [to('198.18.200.60', 80, CLIENT), to(NODE_IP, 30060, CLIENT, { daddrLocal: true })]) {
      const c = everyChoice(t, target);
      expect(c.addrs).toEqual(['198.19.1.11:8080']);
      expect(t.nat(target)).toMatchObject({ masquerade: false });
    }
    expect(everyChoice(t, to('198.18.200.60', 80, POD)).addrs.sort()).toEqual(['198.19.1.11:8080', '198.19.2.11:8080']);
    expect(t.nat(to('198.18.200.60', 80, POD))).toMatchObject({ masquerade: false });
    const fromNode = to(NODE_IP, 30060, NODE_IP, { daddrLocal: true, saddrLocal: true });
    expect(everyChoice(t, fromNode).addrs.sort()).toEqual(['198.19.1.11:8080', '198.19.2.11:8080']);
    expect(t.nat(fromNode)).toMatchObject({ masquerade: true });
  });

  it('externalTrafficPolicy Local without local endpoints: outside clients are dropped, pods still served', () => {
    const { t } = install([servicePort({ name: 'lb', clusterIPs: ['198.18.100.60'], nodePort: 30060, externalTrafficPolicy: 'Local', endpoints: [remote] })]);
    expect(t.nat(to(NODE_IP, 30060, CLIENT, { daddrLocal: true }))).toEqual({ verdict: 'drop' });
    expect(t.nat(to(NODE_IP, 30060, POD, { daddrLocal: true }))).toMatchObject({ verdict: 'dnat', addr: '198.19.2.11' });
  });

  it('internalTrafficPolicy Local: local endpoints only; none on this node: DROP', () => {
    const { t } = install([
      servicePort({ name: 'only-local', clusterIPs: ['198.18.100.112'], internalTrafficPolicy: 'Local', endpoints: [local, remote] }),
      servicePort({ name: 'remote-only', clusterIPs: ['198.18.100.113'], internalTrafficPolicy: 'Local', endpoints: [remote] }),
    ]);
    expect(everyChoice(t, to('198.18.100.112', 80)).addrs).toEqual(['198.19.1.11:8080']);
    expect(t.nat(to('198.18.100.113', 80))).toEqual({ verdict: 'drop' });
  });

  it('no endpoints at all: not translated, and REJECTed by the filter chains (ClusterIP, externalIP, NodePort)', () => {
    const { t } = install([servicePort({ name: 'empty', clusterIPs: ['198.18.100.40'], externalIPs: ['198.18.200.40'], nodePort: 30040 })]);
    expect(t.nat(to('198.18.100.40', 80))).toMatchObject({ verdict: 'accept' });
    expect(t.filter('forward', to('198.18.100.40', 80))).toBe('reject');
    expect(t.filter('output', to('198.18.100.40', 80, NODE_IP, { saddrLocal: true }))).toBe('reject');
    expect(t.filter('forward', to('198.18.200.40', 80, CLIENT))).toBe('reject');
    expect(t.filter('input', to(NODE_IP, 30040, CLIENT, { daddrLocal: true }))).toBe('reject');
    expect(t.filter('forward', to('198.18.100.41', 80))).toBe('accept');
    expect(t.filter('forward', to('198.18.100.40', 80, POD, { ctState: 'established' }))).toBe('accept');
  });
});

describe('frontends', () => {
  it('load-balancer source ranges: allowed sources are translated, others dropped; no endpoints: REJECT for allowed ones', () => {
    const lb = (list: ReturnType<typeof eps>) =>
      servicePort({
        name: 'lb',
        clusterIPs: ['198.18.100.30'],
        loadBalancerIPs: ['198.18.200.20'],
        loadBalancerSourceRanges: ['198.18.0.0/24'],
        endpoints: list,
      });
    const { t } = install([lb(eps(2))]);
    expect(t.nat(to('198.18.200.20', 80, CLIENT))).toMatchObject({ verdict: 'dnat', masquerade: true });
    expect(t.nat(to('198.18.200.20', 80, '10.1.2.3'))).toEqual({ verdict: 'drop' });
    expect(t.nat(to('198.18.100.30', 80, '10.1.2.3'))).toMatchObject({ verdict: 'dnat' });
    const empty = install([lb([])]).t;
    expect(empty.nat(to('198.18.200.20', 80, '10.1.2.3'))).toEqual({ verdict: 'drop' });
    expect(empty.nat(to('198.18.200.20', 80, CLIENT))).toMatchObject({ verdict: 'accept' });
    expect(empty.filter('forward', to('198.18.200.20', 80, CLIENT))).toBe('reject');
  });

  it('NodePorts: only on local addresses, never loopback; --nodeport-addresses narrows them', () => {
    const np = servicePort({ name: 'np', clusterIPs: ['198.18.100.20'], nodePort: 30080, endpoints: eps(1) });
    const { t } = install([np]);
    expect(t.nat(to(NODE_IP, 30080, CLIENT, { daddrLocal: true }))).toMatchObject({ verdict: 'dnat', addr: '198.19.1.10', port: 8080 });
    expect(t.nat(to('198.18.0.77', 30080, CLIENT))).toMatchObject({ verdict: 'accept' });
    expect(t.nat(to('127.0.0.1', 30080, '127.0.0.1', { daddrLocal: true, saddrLocal: true }))).toMatchObject({ verdict: 'accept' });
    const narrowed = install([np], { nodePortAddresses: ['10.0.0.0/8'] }).t;
    expect(narrowed.nat(to(NODE_IP, 30080, CLIENT, { daddrLocal: true }))).toMatchObject({ verdict: 'accept' });
    expect(narrowed.nat(to('10.0.0.5', 30080, CLIENT, { daddrLocal: true }))).toMatchObject({ verdict: 'dnat' });
  });
});

describe('ClientIP affinity', () => {
  const key = 'shop/sticky:http';
  const sticky = (list: ReturnType<typeof eps>) => servicePort({ name: 'sticky', clusterIPs: ['198.18.100.50'], affinityTimeoutSeconds: 600, endpoints: list });

  it('a client keeps its endpoint whatever numgen says; another client gets its own choice', () => {
    const { t } = install([sticky(eps(5))]);
    const first = t.nat(to('198.18.100.50', 80), () => 3);
    expect(first).toMatchObject({ verdict: 'dnat', addr: '198.19.1.13' });
    for (const r of [0, 1, 2, 4]) expect(t.nat(to('198.18.100.50', 80), () => r)).toMatchObject({ addr: '198.19.1.13' });
    expect(t.nat(to('198.18.100.50', 80, '198.19.1.99'), () => 1)).toMatchObject({ addr: '198.19.1.11' });
  });

  it('when its endpoint is removed the client is served by another and stays there; survivors keep their clients', () => {
    let now = 0;
    const p = new Planner({ family: 'IPv4', config: config(), now: () => now });
    const t = new Table(p.full(desiredState([sticky(eps(5))])).json!);
    expect(t.nat(to('198.18.100.50', 80), () => 3)).toMatchObject({ addr: '198.19.1.13' });
    expect(t.nat(to('198.18.100.50', 80, '198.19.1.99'), () => 1)).toMatchObject({ addr: '198.19.1.11' });
    now = 1000;
    const without13 = eps(5).filter((e) => e.ip !== '198.19.1.13');
    t.apply(p.update(desiredState([sticky(without13)]), [key]).json!);
    const moved = t.nat(to('198.18.100.50', 80), () => 0);
    expect(moved).toMatchObject({ verdict: 'dnat', addr: '198.19.1.10' });
    for (const r of [1, 2, 3]) expect(t.nat(to('198.18.100.50', 80), () => r)).toMatchObject({ addr: '198.19.1.10' });
    expect(t.nat(to('198.18.100.50', 80, '198.19.1.99'), () => 3)).toMatchObject({ addr: '198.19.1.11' });
    // A new endpoint takes no remembered client: 13's slot is held, the newcomer gets a fresh one.
    now = 2000;
    t.apply(p.update(desiredState([sticky([...without13, endpoint('198.19.1.50')])]), [key]).json!);
    expect(t.nat(to('198.18.100.50', 80), () => 4)).toMatchObject({ addr: '198.19.1.10' });
  });

  it('a service without affinity spreads the same client', () => {
    const { t } = install([clusterIP('spread', '198.18.100.51', eps(2))]);
    expect(t.nat(to('198.18.100.51', 80), () => 0)).toMatchObject({ addr: '198.19.1.10' });
    expect(t.nat(to('198.18.100.51', 80), () => 1)).toMatchObject({ addr: '198.19.1.11' });
  });
});

describe('cluster-ips-check', () => {
  const remote = endpoint('198.19.2.11', 8080, { node: 'node-b' });
  const { t } = install([
    clusterIP('web', '198.18.100.1', eps(2)),
    servicePort({ name: 'empty', clusterIPs: ['198.18.100.40'] }),
    servicePort({ name: 'remote-only', clusterIPs: ['198.18.100.113'], internalTrafficPolicy: 'Local', endpoints: [remote] }),
  ]);
  const fromNode = (daddr: string, dport: number, extra: Partial<Packet> = {}) => to(daddr, dport, NODE_IP, { saddrLocal: true, ...extra });

  it('refuses at once a port or protocol of a ClusterIP that no service port serves, from pods and from the node', () => {
    expect(t.connect(to('198.18.100.1', 81))).toEqual({ verdict: 'reject' });
    expect(t.connect(to('198.18.100.1', 80, POD, { proto: 'udp' }))).toEqual({ verdict: 'reject' });
    expect(t.connect(fromNode('198.18.100.1', 81))).toEqual({ verdict: 'reject' });
    // The check runs after DNAT: the node's own packets meet it in filter-output-post-dnat, not before nat.
    expect(t.filter('output', fromNode('198.18.100.1', 81))).toBe('accept');
    expect(t.filter('output-post-dnat', fromNode('198.18.100.1', 81))).toBe('reject');
  });

  it('lets served ports through (translated), and addresses that are no ClusterIP alone', () => {
    expect(t.connect(to('198.18.100.1', 80))).toMatchObject({ verdict: 'dnat', port: 8080 });
    expect(t.connect(fromNode('198.18.100.1', 80))).toMatchObject({ verdict: 'dnat', port: 8080 });
    expect(t.connect(to('198.18.100.2', 80))).toEqual({ verdict: 'accept', masquerade: false });
    expect(t.connect(to('198.18.100.1', 81, POD, { ctState: 'established' }))).toMatchObject({ verdict: 'accept' });
  });

  it('keeps the other verdicts of a served port: no endpoints REJECT; internalTrafficPolicy Local without a local endpoint DROP', () => {
    expect(t.connect(to('198.18.100.40', 80))).toEqual({ verdict: 'reject' });
    expect(t.connect(to('198.18.100.113', 80))).toEqual({ verdict: 'drop' });
    expect(t.connect(fromNode('198.18.100.113', 80))).toEqual({ verdict: 'drop' });
  });
});

describe('IPv6', () => {
  const V6_POD = '2001:2:0:11::12';
  const V6_NODE = '2001:2::1';
  const V6_CLIENT = '2001:2::100';
  const a1 = endpoint('2001:2:0:11::11');
  const b1 = endpoint('2001:2:0:12::11', 8080, { node: 'node-b' });
  const cfg = { clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] };
  const v6 = (name: string, extra: object) => servicePort({ name, family: 'IPv6', endpoints: [a1, b1], ...extra });

  it('ClusterIP: every endpoint, pods unmasqueraded, outside sources masqueraded; unserved ports refused', () => {
    const { t } = install([v6('web', { clusterIPs: ['2001:2:0:100::10'] })], cfg, 'IPv6');
    expect(everyChoice(t, to('2001:2:0:100::10', 80, V6_POD)).addrs.sort()).toEqual(['[2001:2:0:11::11]:8080', '[2001:2:0:12::11]:8080']);
    expect(t.connect(to('2001:2:0:100::10', 80, V6_POD))).toMatchObject({ verdict: 'dnat', masquerade: false });
    expect(t.connect(to('2001:2:0:100::10', 80, V6_CLIENT))).toMatchObject({ verdict: 'dnat', masquerade: true });
    expect(t.connect(to('2001:2:0:100::10', 81, V6_POD))).toEqual({ verdict: 'reject' });
    // Hairpin: the endpoint reaching itself is masqueraded.
    expect(t.connect(to('2001:2:0:100::10', 80, '2001:2:0:11::11'), () => 0)).toMatchObject({ addr: '2001:2:0:11::11', masquerade: true });
  });

  it('NodePort on the node’s IPv6 address under the Local policy, with affinity; LB source ranges', () => {
    const { t } = install(
      [
        v6('lb', {
          clusterIPs: ['2001:2:0:100::20'],
          nodePort: 30443,
          loadBalancerIPs: ['2001:2:0:200::20'],
          loadBalancerSourceRanges: ['2001:2::/64'],
          externalTrafficPolicy: 'Local',
          affinityTimeoutSeconds: 30,
        }),
      ],
      cfg,
      'IPv6',
    );
    const np = to(V6_NODE, 30443, V6_CLIENT, { daddrLocal: true });
    expect(t.connect(np)).toEqual({ verdict: 'dnat', addr: '2001:2:0:11::11', port: 8080, masquerade: false });
    expect(t.connect(to('::1', 30443, '::1', { daddrLocal: true, saddrLocal: true }))).toMatchObject({ verdict: 'accept' });
    expect(t.connect(to('2001:2:0:200::20', 80, V6_CLIENT))).toMatchObject({ verdict: 'dnat', addr: '2001:2:0:11::11', masquerade: false });
    expect(t.connect(to('2001:2:0:200::20', 80, '2001:db8::1'))).toEqual({ verdict: 'drop' });
    // Affinity: the pod's first choice sticks whatever numgen says.
    const pod = to('2001:2:0:100::20', 80, V6_POD);
    const first = t.connect(pod, () => 1);
    expect(first).toMatchObject({ verdict: 'dnat', addr: '2001:2:0:12::11' });
    expect(t.connect(pod, () => 0)).toMatchObject({ addr: '2001:2:0:12::11' });
  });

  it('no endpoints: REJECT (ICMPv6 in the kernel) on the ClusterIP and the NodePort', () => {
    const { t } = install([servicePort({ name: 'empty', family: 'IPv6', clusterIPs: ['2001:2:0:100::30'], nodePort: 30030 })], cfg, 'IPv6');
    expect(t.connect(to('2001:2:0:100::30', 80, V6_POD))).toEqual({ verdict: 'reject' });
    expect(t.connect(to(V6_NODE, 30030, V6_CLIENT, { daddrLocal: true }))).toEqual({ verdict: 'reject' });
  });
});
