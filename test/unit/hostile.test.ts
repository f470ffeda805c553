// Hostile objects (issue: hardening): what any namespace owner can write must not take over another
// service's traffic, reach the node itself, or put raw control characters on a terminal.
import { describe, expect, it } from 'vitest';
import { explain } from '../../src/model/explain.ts';
import { formatIssue, issueLine } from '../../src/model/parse.ts';
import { ClusterState, buildState } from '../../src/model/store.ts';
import { SourceFileError, parseObjects } from '../../src/watch/file.ts';
import { CONFIG, ep, slice, svc } from './model-helpers.ts';

const victim = svc('victim', { clusterIP: '198.18.100.10', ports: [{ name: 'http', port: 80 }] }, {}, 'bank');
const victimSlice = slice('victim-1', 'victim', [{ name: 'http', port: 8080 }], [ep('198.19.1.11', 'node-a')], 'bank');
const lb = svc(
  'lb',
  { type: 'LoadBalancer', clusterIP: '198.18.100.20', loadBalancerSourceRanges: ['198.18.0.0/24'], ports: [{ name: 'http', port: 80, nodePort: 30020 }] },
  { status: { loadBalancer: { ingress: [{ ip: '198.18.200.20' }] } } },
  'bank',
);
const lbSlice = slice('lb-1', 'lb', [{ name: 'http', port: 8080 }], [ep('198.19.1.12', 'node-a')], 'bank');
const attacker = (externalIPs: string[], nodePort?: number) =>
  svc(
    'evil',
    {
      type: nodePort ? 'NodePort' : 'ClusterIP',
      clusterIP: '198.18.100.66',
      externalIPs,
      ports: [{ name: 'http', port: 80, ...(nodePort ? { nodePort } : {}) }],
    },
    {},
    'mallory',
  );
const attackerSlice = slice('evil-1', 'evil', [{ name: 'http', port: 8080 }], [ep('198.19.2.66', 'node-b')], 'mallory');

describe('frontend ownership (the CVE-2020-8554 shape)', () => {
  it("an externalIP naming another service's ClusterIP is left out and reported; the ClusterIP keeps routing to its own endpoints", () => {
    const { state, issues } = buildState([attacker(['198.18.100.10']), attackerSlice, victim, victimSlice], CONFIG);
    expect(state.servicePorts.get('mallory/evil:http')!.externalIPs).toEqual([]);
    expect(issues.map(formatIssue)).toContainEqual(
      expect.stringMatching(/Service mallory\/evil: spec\.externalIPs: 198\.18\.100\.10:80\/TCP is left out: it is the clusterIP of Service bank\/victim/),
    );
    const e = explain({ dst: '198.18.100.10', port: 80, protocol: 'TCP', src: '198.19.1.50' }, state);
    expect(e.servicePort).toBe('bank/victim:http');
    expect(e.endpoints.map((x) => x.id)).toEqual(['198.19.1.11:8080']);
  });

  it('an externalIP naming an LB IP cannot skip the LB source ranges', () => {
    const { state } = buildState([attacker(['198.18.200.20']), attackerSlice, lb, lbSlice], CONFIG);
    expect(state.servicePorts.get('mallory/evil:http')!.externalIPs).toEqual([]);
    const e = explain({ dst: '198.18.200.20', port: 80, protocol: 'TCP', src: '198.18.7.7' }, state);
    expect(e.servicePort).toBe('bank/lb:http');
    expect(e.verdict).toBe('drop');
  });

  it('the same owner whatever the order the objects arrive in, and it changes back when the owner goes', () => {
    const a = buildState([victim, victimSlice, attacker(['198.18.100.10']), attackerSlice], CONFIG).state;
    const b = buildState([attacker(['198.18.100.10']), attackerSlice, victim, victimSlice], CONFIG).state;
    expect(a.servicePorts.get('mallory/evil:http')!.externalIPs).toEqual(b.servicePorts.get('mallory/evil:http')!.externalIPs);
    const cs = new ClusterState(CONFIG);
    for (const o of [victim, victimSlice, attacker(['198.18.100.10']), attackerSlice]) cs.upsert(o);
    cs.commit();
    cs.deleteService('bank', 'victim');
    const c = cs.commit();
    expect(c.changes.updated).toContain('mallory/evil:http');
    expect(cs.current.servicePorts.get('mallory/evil:http')!.externalIPs).toEqual(['198.18.100.10']);
  });

  it('two services on one NodePort: the first by name keeps it', () => {
    const other = svc('web', { type: 'NodePort', clusterIP: '198.18.100.30', ports: [{ name: 'http', port: 80, nodePort: 30020 }] }, {}, 'aaa');
    const { state } = buildState([lb, other], CONFIG);
    expect(state.servicePorts.get('aaa/web:http')!.nodePort).toBe(30020);
    expect(state.servicePorts.get('bank/lb:http')!.nodePort).toBeNull();
  });
});

describe('addresses the API server refuses', () => {
  for (const [what, ip] of [
    ['loopback', '127.0.0.1'],
    ['link-local', '169.254.169.254'],
    ['unspecified', '0.0.0.0'],
    ['multicast', '224.0.0.1'],
    ['broadcast', '255.255.255.255'],
    ['IPv6 loopback', '::1'],
    ['IPv6 link-local', 'fe80::1'],
  ]) {
    it(`${what} ${ip} as a ClusterIP, an externalIP or an endpoint is refused with the field named`, () => {
      const asCluster = buildState([svc('a', { clusterIP: ip!, ports: [{ port: 80 }] })], CONFIG);
      expect(asCluster.issues.map((i) => i.field)).toEqual(['spec.clusterIP']);
      const asExternal = buildState([svc('b', { clusterIP: '198.18.100.1', externalIPs: [ip!], ports: [{ port: 80 }] })], CONFIG);
      expect(asExternal.issues.map((i) => i.field)).toEqual(['spec.externalIPs[0]']);
      const s = slice('c-1', 'c', [{ port: 80 }], [ep(ip!, 'node-a')]);
      if (ip!.includes(':')) s.addressType = 'IPv6';
      const asEndpoint = buildState([s], CONFIG);
      expect(asEndpoint.issues.map((i) => i.field)).toEqual(['endpoints[0].addresses[0]']);
    });
  }
});

describe('names as the API server validates them', () => {
  const named = (name: string) => svc(name, { clusterIP: '198.18.100.1', ports: [{ port: 80 }] });
  it('a Service name must be a DNS-1035 label', () => {
    expect(buildState([named('a..b')], CONFIG).issues).toHaveLength(1);
    expect(buildState([named('x'.repeat(64))], CONFIG).issues).toHaveLength(1);
    expect(buildState([named('1abc')], CONFIG).issues).toHaveLength(1);
    expect(buildState([named('a'.repeat(63))], CONFIG).issues).toEqual([]);
  });
  it('an EndpointSlice name is a DNS-1123 subdomain: no empty labels', () => {
    expect(buildState([slice('web..x', 'web', [{ port: 80 }], [])], CONFIG).issues.map((i) => i.field)).toEqual(['metadata.name']);
    expect(buildState([slice('web.x-1', 'web', [{ port: 80 }], [])], CONFIG).issues).toEqual([]);
  });
  it('a service port name is a DNS-1123 label (validateServicePort)', () => {
    const ports = (name: string) => svc('p', { clusterIP: '198.18.100.1', ports: [{ name, port: 80 }] });
    expect(buildState([ports('x'.repeat(64))], CONFIG).issues.map((i) => i.field)).toEqual(['spec.ports[0].name']);
    expect(buildState([ports('Http')], CONFIG).issues.map((i) => i.field)).toEqual(['spec.ports[0].name']);
  });
});

describe('control characters never reach a terminal raw', () => {
  it('an object name with escape sequences is printed escaped', () => {
    const { issues } = buildState([svc('evil\u001b[2J\u0007', { clusterIP: '198.18.100.1', ports: [{ port: 80 }] })], CONFIG);
    const line = formatIssue(issues[0]!);

    expect(line).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(line).toContain('\\u001b[2J');
  });
});

describe('hostile files give a message naming the file, not a stack trace', () => {
  it('a YAML alias bomb ("billion laughs") is refused at its position, before anything is expanded', () => {
    const levels = ['l0: &l0 [x, x, x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 10; i++)
      levels.push(
        `l${i}: &l${i} [${Array(12)
          .fill(`*l${i - 1}`)
          .join(', ')}]`,
      );
    const text = levels.join('\n');
    expect(() => parseObjects(text, 'bomb.yaml')).toThrow(SourceFileError);
    expect(() => parseObjects(text, 'bomb.yaml')).toThrow(/^bomb\.yaml:\d+:\d+: /);
  });
  it('a List that contains itself', () => {
    expect(() => parseObjects('&l\napiVersion: v1\nkind: List\nitems: [*l]\n', 'rec.yaml')).toThrow(/^rec\.yaml: the same object appears more than once/);
  });
  it('JSON goes through JSON.parse; broken JSON is reported with its position by the YAML parser', () => {
    const objs = parseObjects(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [victim] }), 'dump.json');
    expect(objs).toHaveLength(1);
    expect(() => parseObjects('{"apiVersion": "v1", "kind": ', 'dump.json')).toThrow(/^dump\.json:\d+:\d+: /);
  });
  it('discovery.k8s.io/v1beta1 EndpointSlices are read from files', () => {
    const beta = { ...victimSlice, apiVersion: 'discovery.k8s.io/v1beta1' };
    expect(parseObjects(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [beta] }), 'x.json')).toHaveLength(1);
  });
});

describe('node ports outside the NodePort range', () => {
  const ssh = svc('ssh', { type: 'NodePort', clusterIP: '198.18.100.22', ports: [{ name: 'x', port: 22, nodePort: 22 }] });
  it('are reported and still opened by default', () => {
    const { state, issues } = buildState([ssh], CONFIG);
    expect(state.servicePorts.get('shop/ssh:x')!.nodePort).toBe(22);
    expect(issues.map(issueLine)).toEqual([
      'warning: Service shop/ssh: spec.ports[0].nodePort: 22 is outside the NodePort range 30000-32767 (still opened; --refuse-out-of-range-nodeports leaves such ports out)',
    ]);
  });
  it('are left out when the range refuses them; the rest of the service still routes', () => {
    const { state, issues } = buildState([ssh], { ...CONFIG, nodePortRange: { min: 30000, max: 32767, refuse: true } });
    expect(state.servicePorts.get('shop/ssh:x')).toMatchObject({ nodePort: null, clusterIPs: ['198.18.100.22'] });
    expect(issues.map(issueLine)).toEqual(['left out: Service shop/ssh: spec.ports[0].nodePort: 22 is outside the NodePort range 30000-32767']);
  });
});
