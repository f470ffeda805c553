import { describe, expect, it } from 'vitest';
import { InvalidValueError } from '../../src/model/addr.ts';
import type { IPFamily, ProxyConfig, ServicePort } from '../../src/model/types.ts';
import type { ListenerClass } from '../../src/modes/userspace/balancer.ts';
import { createProxier, definition } from '../../src/modes/userspace/index.ts';
import { CHAINS, familyConfig, frontendsOf, renderRules, tableText } from '../../src/modes/userspace/rules.ts';
import type { PortalTarget, RenderedRules } from '../../src/modes/userspace/rules.ts';
import { splitSaved, udpFlowDeletion } from '../../src/modes/userspace/kernel.ts';
import { CONFIG, endpoint, servicePort, state } from './userspace-fixtures.ts';

const A = endpoint('198.19.1.11', 8080, true);
const B = endpoint('198.19.2.11', 8080);

/** Listener ports: 40000 + 10 * index of the service port + class offset; UDP host ports + 5. */
function render(
  sps: ServicePort[],
  config: ProxyConfig = CONFIG,
  listenerPorts = { tcp: [] as number[], udp: [] as number[] },
  family: IPFamily = 'IPv4',
): RenderedRules {
  const offset: Record<ListenerClass, number> = { all: 0, internal: 1, external: 2 };
  return renderRules({
    config: familyConfig(config, family),
    servicePorts: sps,
    target: (sp, cls): PortalTarget | null => {
      if (sp.protocol === 'SCTP') return null;
      const port = 40000 + 10 * sps.indexOf(sp) + offset[cls];
      return { port, hostPort: sp.protocol === 'UDP' ? port + 5 : port };
    },
    listenerPorts,
  });
}

const byChain = (lines: string[], chain: string) => lines.filter((l) => l.startsWith(`-A ${chain} `));

describe('renderRules', () => {
  it('redirects a ClusterIP from pods (PREROUTING) and from the node (OUTPUT) to the listener', () => {
    const r = render([servicePort('web', { endpoints: [A, B] })]);
    expect(r.nat).toEqual([
      '-A KUBE-PORTALS-CONTAINER -d 198.18.100.10/32 -p tcp -m tcp --dport 80 -m comment --comment "shop/web:http cluster IP" -j REDIRECT --to-ports 40000',
      '-A KUBE-PORTALS-HOST -d 198.18.100.10/32 -p tcp -m tcp --dport 80 -m comment --comment "shop/web:http cluster IP" -j REDIRECT --to-ports 40000',
    ]);
    expect(r.filter).toEqual([]);
  });

  it('sends the node’s own UDP traffic to the loopback socket and records UDP redirects per port', () => {
    const r = render([servicePort('dns', { protocol: 'UDP', port: 53, endpoints: [A] })]);
    expect(byChain(r.nat, CHAINS.container)[0]).toContain('-p udp -m udp --dport 53');
    expect(byChain(r.nat, CHAINS.container)[0]).toMatch(/--to-ports 40000$/);
    expect(byChain(r.nat, CHAINS.host)[0]).toMatch(/--to-ports 40005$/);
    expect([...r.udpRedirects.keys()].sort()).toEqual([40000, 40005]);
  });

  it('rejects every frontend of a service port without endpoints, and redirects none', () => {
    const sp = servicePort('empty', { nodePort: 30040, externalIPs: ['198.18.200.40'], loadBalancerIPs: ['198.18.200.41'] });
    const r = render([sp]);
    expect(r.nat).toEqual([]);
    expect(r.filter).toEqual([
      '-A KUBE-PORTALS-DENY -d 198.18.100.10/32 -p tcp -m tcp --dport 80 -m comment --comment "shop/empty:http cluster IP has no endpoints" -j REJECT',
      '-A KUBE-PORTALS-DENY -d 198.18.200.40/32 -p tcp -m tcp --dport 80 -m comment --comment "shop/empty:http external IP has no endpoints" -j REJECT',
      '-A KUBE-PORTALS-DENY -d 198.18.200.41/32 -p tcp -m tcp --dport 80 -m comment --comment "shop/empty:http load balancer IP has no endpoints" -j REJECT',
      '-A KUBE-PORTALS-DENY -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30040 -m comment --comment "shop/empty:http node port has no endpoints" -j REJECT',
    ]);
  });

  it('drops ClusterIP traffic under internalTrafficPolicy Local without local endpoints, external traffic still flows', () => {
    const r = render([servicePort('remote', { endpoints: [B], internalTrafficPolicy: 'Local', nodePort: 30090 })]);
    expect(r.filter).toEqual([
      '-A KUBE-PORTALS-DENY -d 198.18.100.10/32 -p tcp -m tcp --dport 80 -m comment --comment "shop/remote:http cluster IP has no local endpoints" -j DROP',
    ]);
    expect(r.nat.every((l) => l.includes('node port'))).toBe(true);
    expect(r.nat.every((l) => l.endsWith('--to-ports 40002'))).toBe(true);
  });

  it('under externalTrafficPolicy Local uses two listeners, and without local endpoints serves only pods and the node', () => {
    const split = render([servicePort('ing', { endpoints: [A, B], externalTrafficPolicy: 'Local', loadBalancerIPs: ['198.18.200.60'] })]);
    expect(split.nat.filter((l) => l.includes('cluster IP')).every((l) => l.endsWith('--to-ports 40001'))).toBe(true);
    expect(split.nat.filter((l) => l.includes('load balancer IP')).every((l) => l.endsWith('--to-ports 40002'))).toBe(true);
    expect(split.filter).toEqual([]);

    const r = render([servicePort('ing', { endpoints: [B], externalTrafficPolicy: 'Local', loadBalancerIPs: ['198.18.200.60'], nodePort: 30060 })]);
    expect(byChain(r.nat, CHAINS.container)).toEqual([
      '-A KUBE-PORTALS-CONTAINER -d 198.18.100.10/32 -p tcp -m tcp --dport 80 -m comment --comment "shop/ing:http cluster IP" -j REDIRECT --to-ports 40001',
      '-A KUBE-PORTALS-CONTAINER -s 198.19.0.0/16 -d 198.18.200.60/32 -p tcp -m tcp --dport 80 -m comment --comment "shop/ing:http load balancer IP" -j REDIRECT --to-ports 40002',
      '-A KUBE-PORTALS-CONTAINER -s 198.19.0.0/16 -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30060 -m comment --comment "shop/ing:http node port" -j REDIRECT --to-ports 40002',
    ]);
    expect(byChain(r.nat, CHAINS.host).every((l) => !l.includes(' -s '))).toBe(true);
    expect(byChain(r.nat, CHAINS.host)).toHaveLength(3);
    expect(r.filter.map((l) => l.replace(/ -m comment .*? -j/, ' -j'))).toEqual([
      '-A KUBE-PORTALS-DENY -d 198.18.200.60/32 -p tcp -m tcp --dport 80 -j DROP',
      '-A KUBE-PORTALS-DENY -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30060 -j DROP',
    ]);
  });

  it('lets only loadBalancerSourceRanges reach an LB IP, and drops the rest', () => {
    const sp = servicePort('fw', { endpoints: [A], loadBalancerIPs: ['198.18.200.70'], loadBalancerSourceRanges: ['198.18.0.0/24', '198.19.7.0/24'] });
    const r = render([sp]);
    const lb = r.nat.filter((l) => l.includes('198.18.200.70'));
    expect(lb.map((l) => /-s (\S+)/.exec(l)?.[1])).toEqual(['198.18.0.0/24', '198.19.7.0/24', '198.18.0.0/24', '198.19.7.0/24']);
    expect(r.filter).toHaveLength(1);
    expect(r.filter[0]).toContain('-d 198.18.200.70/32');
    expect(r.filter[0]).toContain('source not in loadBalancerSourceRanges');
    expect(r.filter[0]).toMatch(/-j DROP$/);

    // Local policy without local endpoints: pods must be in a source range too.
    const local = render([
      servicePort('fw', {
        endpoints: [B],
        externalTrafficPolicy: 'Local',
        loadBalancerIPs: ['198.18.200.70'],
        loadBalancerSourceRanges: ['198.18.0.0/24', '198.19.7.0/24'],
      }),
    ]);
    const container = byChain(local.nat, CHAINS.container).filter((l) => l.includes('198.18.200.70'));
    expect(container.map((l) => /-s (\S+)/.exec(l)?.[1])).toEqual(['198.19.7.0/24']);
  });

  it('matches NodePorts on the --nodeport-addresses only, and puts NodePorts last in each chain', () => {
    const sps = [servicePort('np', { endpoints: [A], nodePort: 30080 }), servicePort('z', { endpoints: [A], clusterIPs: ['198.18.100.99'] })];
    const r = render(sps, { ...CONFIG, nodePortAddresses: ['198.18.0.0/24', '198.19.1.0/24'] });
    const container = byChain(r.nat, CHAINS.container);
    expect(container.map((l) => (l.includes('node port') ? 'np' : 'ip'))).toEqual(['ip', 'ip', 'np', 'np']);
    expect(container[2]).toContain('-d 198.18.0.0/24 -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080');
    expect(container[3]).toContain('-d 198.19.1.0/24 -m addrtype --dst-type LOCAL');
    expect(byChain(r.nat, CHAINS.host).map((l) => (l.includes('node port') ? 'np' : 'ip'))).toEqual(['ip', 'ip', 'np', 'np']);
  });

  it('rejects the frontends of service ports it cannot proxy (SCTP)', () => {
    const r = render([servicePort('sctp', { protocol: 'SCTP', endpoints: [A] })]);
    expect(r.nat).toEqual([]);
    expect(r.filter[0]).toContain('-p sctp -m sctp --dport 80');
    expect(r.filter[0]).toMatch(/cannot be proxied \(SCTP\)" -j REJECT$/);
  });

  it('guards listener ports against direct connections, 15 ports per multiport rule', () => {
    const tcp = Array.from({ length: 17 }, (_, i) => 41000 - i);
    const r = render([], CONFIG, { tcp, udp: [42000] });
    expect(r.filter[0]).toBe('-A KUBE-PORTALS-GUARD -m conntrack --ctstate DNAT -m comment --comment "redirected to a listener" -j RETURN');
    expect(r.filter[1]).toContain(`-p tcp -m multiport --dports ${Array.from({ length: 15 }, (_, i) => 40984 + i).join(',')} `);
    expect(r.filter[1]).toMatch(/-j REJECT --reject-with tcp-reset$/);
    expect(r.filter[2]).toContain('--dports 40999,41000 ');
    expect(r.filter[3]).toContain('-p udp -m multiport --dports 42000 ');
    expect(r.filter[3]).toMatch(/-j REJECT$/);
  });

  it('refuses malformed addresses and ports instead of writing them into rules', () => {
    const config = familyConfig(CONFIG, 'IPv4');
    const refused = (sp: ServicePort) => () => frontendsOf(sp, config);
    expect(refused(servicePort('x', { endpoints: [A], clusterIPs: ['198.18.100.1 -j ACCEPT'] }))).toThrow(InvalidValueError);
    expect(refused(servicePort('x', { endpoints: [A], clusterIPs: ['198.18.100.1 -j ACCEPT'] }))).toThrow(/not an IPv4 address/);
    expect(refused(servicePort('x', { endpoints: [A], nodePort: 70000 }))).toThrow(/not a port: 70000/);
    expect(refused(servicePort('x', { endpoints: [A], loadBalancerIPs: ['198.18.200.1'], loadBalancerSourceRanges: ['nope'] }))).toThrow(/not an IPv4 CIDR/);
    // An address of the other family is as wrong as a malformed one.
    expect(refused(servicePort('x', { endpoints: [A], externalIPs: ['2001:2:0:200::1'] }))).toThrow(/not an IPv4 address/);
  });

  it('keeps comments free of characters that would change the rule', () => {
    const r = render([servicePort('x', { key: 'shop/x:"evil" -j ACCEPT', endpoints: [A] })]);
    expect(r.nat[0]).toContain('--comment "shop/x:_evil_ -j ACCEPT cluster IP"');
    expect(splitSaved(r.nat[0].replace(/^-A \S+ /, ''))).toContain('shop/x:_evil_ -j ACCEPT cluster IP');
  });
});

describe('tableText and dryRun', () => {
  it('declares (and so flushes) exactly our chains', () => {
    expect(tableText('nat', ['-A KUBE-PORTALS-HOST -j RETURN'])).toBe(
      '*nat\n:KUBE-PORTALS-CONTAINER - [0:0]\n:KUBE-PORTALS-HOST - [0:0]\n-A KUBE-PORTALS-HOST -j RETURN\nCOMMIT\n',
    );
  });

  it('prints the listeners as comments and both tables with the jumps for a fresh node', () => {
    const sps = [
      servicePort('web', { endpoints: [A, B], nodePort: 30080, externalTrafficPolicy: 'Local' }),
      servicePort('dns', { protocol: 'UDP', port: 53, clusterIPs: ['198.18.100.70'], endpoints: [A, B] }),
    ];
    const p = createProxier({ config: CONFIG, iptablesBackend: 'nft', family: 'IPv4' });
    const out = p.dryRun(state(sps));
    const comments = out.split('\n').filter((l) => l.startsWith('#'));
    expect(comments).toContain('#   udp 0.0.0.0:32768 + 127.0.0.1:32769 shop/dns:http (all frontends) -> 198.19.1.11:8080 198.19.2.11:8080');
    expect(comments).toContain('#   tcp 0.0.0.0:32770 shop/web:http (internal frontends) -> 198.19.1.11:8080 198.19.2.11:8080');
    expect(comments).toContain('#   tcp 0.0.0.0:32771 shop/web:http (external frontends) -> 198.19.1.11:8080');
    expect(out).toContain(
      '-A KUBE-PORTALS-HOST -d 198.18.100.70/32 -p udp -m udp --dport 53 -m comment --comment "shop/dns:http cluster IP" -j REDIRECT --to-ports 32769',
    );
    expect(out).toContain('-I PREROUTING 1 -m comment --comment "kube-proxy-ts userspace portals" -j KUBE-PORTALS-CONTAINER');
    expect(out).toContain('-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "kube-proxy-ts userspace service denials" -j KUBE-PORTALS-DENY');
    expect(out).toContain('--dports 32770,32771 ');
    // Everything that is not a comment is restore input: tables, chain declarations, rules, COMMIT.
    for (const line of out.split('\n').filter((l) => l !== '' && !l.startsWith('#')))
      expect(line).toMatch(/^(\*(filter|nat)|:KUBE-PORTALS-[A-Z]+ - \[0:0\]|-[AI] [A-Z-]+ .+|COMMIT)$/);
  });

  it('numbers dry-run listeners from a configured port range', () => {
    const p = createProxier({ config: CONFIG, iptablesBackend: 'nft', family: 'IPv4', portRange: { min: 50000, max: 50100 } });
    const out = p.dryRun(state([servicePort('web', { endpoints: [A] })]));
    expect(out).toContain('from the configured range 50000-50100');
    expect(out).toContain('--to-ports 50000');
  });
});

describe('IPv6 rules', () => {
  const A6 = endpoint('2001:2:0:11::11', 8080, true);
  const B6 = endpoint('2001:2:0:12::11', 8080);
  const DUAL: ProxyConfig = { ...CONFIG, clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] };
  const render6 = (sps: ServicePort[], config: ProxyConfig = DUAL, listenerPorts = { tcp: [] as number[], udp: [] as number[] }) =>
    render(sps, config, listenerPorts, 'IPv6');
  const v6 = (name: string, over: Parameters<typeof servicePort>[1] = {}) => servicePort(name, { family: 'IPv6', ...over });

  it('redirects an IPv6 ClusterIP (/128) from pods and from the node', () => {
    const r = render6([v6('web', { endpoints: [A6, B6] })]);
    expect(r.nat).toEqual([
      '-A KUBE-PORTALS-CONTAINER -d 2001:2:0:100::10/128 -p tcp -m tcp --dport 80 -m comment --comment "shop/web:http cluster IP" -j REDIRECT --to-ports 40000',
      '-A KUBE-PORTALS-HOST -d 2001:2:0:100::10/128 -p tcp -m tcp --dport 80 -m comment --comment "shop/web:http cluster IP" -j REDIRECT --to-ports 40000',
    ]);
    expect(r.filter).toEqual([]);
  });

  it('rejects every frontend of an IPv6 service port without endpoints (plain REJECT: ICMPv6 port unreachable)', () => {
    const r = render6([v6('empty', { nodePort: 30040, externalIPs: ['2001:2:0:200::40'] })]);
    expect(r.nat).toEqual([]);
    expect(r.filter).toEqual([
      '-A KUBE-PORTALS-DENY -d 2001:2:0:100::10/128 -p tcp -m tcp --dport 80 -m comment --comment "shop/empty:http cluster IP has no endpoints" -j REJECT',
      '-A KUBE-PORTALS-DENY -d 2001:2:0:200::40/128 -p tcp -m tcp --dport 80 -m comment --comment "shop/empty:http external IP has no endpoints" -j REJECT',
      '-A KUBE-PORTALS-DENY -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30040 -m comment --comment "shop/empty:http node port has no endpoints" -j REJECT',
    ]);
  });

  it('under externalTrafficPolicy Local without local endpoints redirects only IPv6 pods (their cluster CIDR) and the node', () => {
    const r = render6([v6('ing', { endpoints: [B6], externalTrafficPolicy: 'Local', loadBalancerIPs: ['2001:2:0:200::60'], nodePort: 30060 })]);
    expect(byChain(r.nat, CHAINS.container)).toEqual([
      '-A KUBE-PORTALS-CONTAINER -d 2001:2:0:100::10/128 -p tcp -m tcp --dport 80 -m comment --comment "shop/ing:http cluster IP" -j REDIRECT --to-ports 40001',
      '-A KUBE-PORTALS-CONTAINER -s 2001:2:0:10::/60 -d 2001:2:0:200::60/128 -p tcp -m tcp --dport 80 -m comment --comment "shop/ing:http load balancer IP" -j REDIRECT --to-ports 40002',
      '-A KUBE-PORTALS-CONTAINER -s 2001:2:0:10::/60 -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30060 -m comment --comment "shop/ing:http node port" -j REDIRECT --to-ports 40002',
    ]);
    expect(r.filter.map((l) => l.replace(/ -m comment .*? -j/, ' -j'))).toEqual([
      '-A KUBE-PORTALS-DENY -d 2001:2:0:200::60/128 -p tcp -m tcp --dport 80 -j DROP',
      '-A KUBE-PORTALS-DENY -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30060 -j DROP',
    ]);
  });

  it('intersects IPv6 loadBalancerSourceRanges with the IPv6 cluster CIDR', () => {
    const sp = v6('fw', {
      endpoints: [B6],
      externalTrafficPolicy: 'Local',
      loadBalancerIPs: ['2001:2:0:200::70'],
      loadBalancerSourceRanges: ['2001:2::/64', '2001:2:0:17::/64'],
    });
    const container = byChain(render6([sp]).nat, CHAINS.container).filter((l) => l.includes('2001:2:0:200::70'));
    expect(container.map((l) => /-s (\S+)/.exec(l)?.[1])).toEqual(['2001:2:0:17::/64']);
  });

  it('guards IPv6 listener ports as IPv4 ones', () => {
    const r = render6([], DUAL, { tcp: [41000], udp: [42000] });
    expect(r.filter).toEqual([
      '-A KUBE-PORTALS-GUARD -m conntrack --ctstate DNAT -m comment --comment "redirected to a listener" -j RETURN',
      '-A KUBE-PORTALS-GUARD -p tcp -m multiport --dports 41000 -m comment --comment "direct connection to a listener" -j REJECT --reject-with tcp-reset',
      '-A KUBE-PORTALS-GUARD -p udp -m multiport --dports 42000 -m comment --comment "direct connection to a listener" -j REJECT',
    ]);
  });
});

describe('--nodeport-addresses of both families', () => {
  const MIXED: ProxyConfig = { ...CONFIG, clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'], nodePortAddresses: ['198.18.0.0/24', '2001:2::/64'] };
  const nodePortMatches = (r: RenderedRules) => byChain(r.nat, CHAINS.container).map((l) => /^-A \S+ (.*?) -p tcp/.exec(l)?.[1]);

  it('each family matches only its own CIDRs', () => {
    expect(familyConfig(MIXED, 'IPv4')).toMatchObject({ clusterCIDRs: ['198.19.0.0/16'], nodePortCIDRs: ['198.18.0.0/24'] });
    expect(familyConfig(MIXED, 'IPv6')).toMatchObject({ clusterCIDRs: ['2001:2:0:10::/60'], nodePortCIDRs: ['2001:2::/64'] });
    const np = { endpoints: [endpoint('198.19.1.11', 8080, true)], nodePort: 30080, clusterIPs: [] };
    expect(nodePortMatches(render([servicePort('np', np)], MIXED))).toEqual(['-d 198.18.0.0/24 -m addrtype --dst-type LOCAL']);
    const np6 = { family: 'IPv6' as const, endpoints: [endpoint('2001:2:0:11::11', 8080, true)], nodePort: 30080, clusterIPs: [] };
    expect(nodePortMatches(render([servicePort('np', np6)], MIXED, undefined, 'IPv6'))).toEqual(['-d 2001:2::/64 -m addrtype --dst-type LOCAL']);
  });

  it('a family without CIDRs of its own, or with a /0, accepts NodePorts on every local address (upstream MatchAll)', () => {
    expect(familyConfig({ ...CONFIG, nodePortAddresses: ['198.18.0.0/24'] }, 'IPv6').nodePortCIDRs).toBeNull();
    expect(familyConfig({ ...CONFIG, nodePortAddresses: ['198.18.0.0/24', '0.0.0.0/0'] }, 'IPv4').nodePortCIDRs).toBeNull();
    expect(familyConfig({ ...CONFIG, nodePortAddresses: [] }, 'IPv4').nodePortCIDRs).toBeNull();
  });

  it('both families’ proxiers render a full rule set (no throw) from one mixed configuration', () => {
    for (const family of ['IPv4', 'IPv6'] as const) {
      const ip = family === 'IPv4' ? '198.19.1.11' : '2001:2:0:11::11';
      const sp = servicePort('np', { family, endpoints: [endpoint(ip, 8080, true)], nodePort: 30080 });
      const out = createProxier({ config: MIXED, iptablesBackend: 'nft', family }).dryRun(state([sp], MIXED, family));
      expect(out).toContain(`-d ${family === 'IPv4' ? '198.18.0.0/24' : '2001:2::/64'} -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080`);
      expect(out).not.toContain(family === 'IPv4' ? '2001:2' : '198.18.0.0/24');
    }
  });
});

describe('the IPv6 proxier', () => {
  const config: ProxyConfig = { ...CONFIG, clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] };
  const A6 = endpoint('2001:2:0:11::11', 8080, true);

  it('prints IPv6 listeners and ip6tables-restore input for its family', () => {
    const sps = [
      servicePort('web', { family: 'IPv6', endpoints: [A6] }),
      servicePort('dns', { family: 'IPv6', protocol: 'UDP', port: 53, clusterIPs: ['2001:2:0:100::53'], endpoints: [A6] }),
    ];
    const out = createProxier({ config, iptablesBackend: 'nft', family: 'IPv6' }).dryRun(state(sps, config, 'IPv6'));
    expect(out).toContain('# kube-proxy-ts userspace mode, node node-a, IPv6: 2 service ports');
    expect(out).toContain('#   udp [::]:32768 + [::1]:32769 shop/dns:http (all frontends) -> [2001:2:0:11::11]:8080');
    expect(out).toContain('#   tcp [::]:32770 shop/web:http (all frontends) -> [2001:2:0:11::11]:8080');
    expect(out).toContain(
      '-A KUBE-PORTALS-HOST -d 2001:2:0:100::53/128 -p udp -m udp --dport 53 -m comment --comment "shop/dns:http cluster IP" -j REDIRECT --to-ports 32769',
    );
  });

  it('refuses a state of the other family', () => {
    const p = createProxier({ config, iptablesBackend: 'nft', family: 'IPv6' });
    expect(() => p.dryRun(state([], config, 'IPv4'))).toThrow(/IPv6 userspace proxier was handed an IPv4 state/);
    expect(p.family).toBe('IPv6');
  });

  it('leaves out a service port with a value that cannot reach a rule, and keeps the others', () => {
    const bad = servicePort('bad', { family: 'IPv6', endpoints: [A6], externalIPs: ['198.18.200.1'] });
    const good = servicePort('good', { family: 'IPv6', endpoints: [A6], clusterIPs: ['2001:2:0:100::20'] });
    const out = createProxier({ config, iptablesBackend: 'nft', family: 'IPv6' }).dryRun(state([bad, good], config, 'IPv6'));
    expect(out).toContain('#   shop/bad:http: left out');
    expect(out).not.toContain('shop/bad:http cluster IP');
    expect(out).toContain('-d 2001:2:0:100::20/128');
  });
});

describe('definition', () => {
  it('declares a mode whose backends see the node, with one restore output per family', () => {
    expect(definition).toMatchObject({
      name: 'userspace',
      keepsClientAddress: false,
      failureMetric: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
      dryRun: { kind: 'restore', combine: null },
    });
    expect(definition.dryRun.loadCommand('IPv4', 'f')).toEqual(['iptables-restore', '--noflush', 'f']);
    expect(definition.dryRun.loadCommand('IPv6', 'f')).toEqual(['ip6tables-restore', '--noflush', 'f']);
    expect(definition.create({ config: CONFIG, iptablesBackend: 'nft', family: 'IPv6' }).family).toBe('IPv6');
  });
});

describe('conntrack deletions', () => {
  it('delete only the proxier’s own family’s UDP flows of a listener port', () => {
    expect(udpFlowDeletion('IPv4', 40000)).toEqual(['conntrack', '-D', '-f', 'ipv4', '-p', 'udp', '--reply-port-src', '40000']);
    expect(udpFlowDeletion('IPv6', 40000)).toEqual(['conntrack', '-D', '-f', 'ipv6', '-p', 'udp', '--reply-port-src', '40000']);
    expect(() => udpFlowDeletion('IPv6', 0)).toThrow(/not a port/);
  });
});
