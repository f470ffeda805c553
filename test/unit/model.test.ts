import { describe, expect, it } from 'vitest';
import { ClusterState, buildState } from '../../src/model/store.ts';
import type { DesiredState, ServicePort } from '../../src/model/types.ts';
import { CONFIG, ep, slice, svc } from './model-helpers.ts';

const web = (extra: Record<string, unknown> = {}) =>
  svc('web', { clusterIP: '198.18.100.10', clusterIPs: ['198.18.100.10'], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], ...extra });
const webSlice = (eps = [ep('198.19.1.11', 'node-a'), ep('198.19.2.11', 'node-b')], name = 'web-1') =>
  slice(name, 'web', [{ name: 'http', port: 8080, protocol: 'TCP' }], eps);

function only(state: DesiredState): ServicePort {
  expect(state.servicePorts.size).toBe(1);
  return [...state.servicePorts.values()][0]!;
}
const ids = (eps: readonly { id: string }[]) => eps.map((e) => e.id);

describe('which services are proxied', () => {
  it('routes a ClusterIP service with its endpoints', () => {
    const sp = only(buildState([web(), webSlice()], CONFIG).state);
    expect(sp.key).toBe('shop/web:http');
    expect(sp.clusterIPs).toEqual(['198.18.100.10']);
    expect(ids(sp.clusterEndpoints)).toEqual(['198.19.1.11:8080', '198.19.2.11:8080']);
    expect(ids(sp.localEndpoints)).toEqual(['198.19.1.11:8080']);
  });

  it('ignores ExternalName and headless services', () => {
    const { state, issues, skipped } = buildState(
      [
        svc('ext', { type: 'ExternalName', externalName: 'example.com' }),
        svc('headless', { clusterIP: 'None', ports: [{ port: 80 }] }),
        svc('noip', { clusterIP: '', ports: [{ port: 80 }] }),
      ],
      CONFIG,
    );
    expect(state.servicePorts.size).toBe(0);
    expect(issues).toEqual([]);
    expect(skipped.map((s) => s.object)).toEqual(['Service shop/ext', 'Service shop/headless', 'Service shop/noip']);
  });

  it('ignores services and slices labelled service-proxy-name or headless (any value)', () => {
    const labelled = (l: string) => ({ metadata: { name: 'x', labels: { [l]: '' } } });
    const { state } = buildState(
      [
        svc('a', { clusterIP: '198.18.100.1', ports: [{ port: 80 }] }, labelled('service.kubernetes.io/service-proxy-name')),
        svc('b', { clusterIP: '198.18.100.2', ports: [{ port: 80 }] }, labelled('service.kubernetes.io/headless')),
      ],
      CONFIG,
    );
    expect(state.servicePorts.size).toBe(0);
    const s2 = buildState(
      [
        web(),
        webSlice(),
        slice('web-2', 'web', [{ name: 'http', port: 8080 }], [ep('198.19.1.99', 'node-a')], 'shop', { 'service.kubernetes.io/service-proxy-name': 'other' }),
      ],
      CONFIG,
    ).state;
    expect(ids(only(s2).clusterEndpoints)).toEqual(['198.19.1.11:8080', '198.19.2.11:8080']);
  });
});

describe('service ports', () => {
  it('carries protocol, nodePort, externalIPs, LB IPs (not ipMode Proxy), source ranges, affinity and policies', () => {
    const s = svc(
      'lb',
      {
        type: 'LoadBalancer',
        clusterIP: '198.18.100.30',
        clusterIPs: ['198.18.100.30'],
        externalIPs: ['198.18.200.10'],
        loadBalancerSourceRanges: ['198.18.0.0/24', '198.18.5.7/16'],
        sessionAffinity: 'ClientIP',
        externalTrafficPolicy: 'Local',
        internalTrafficPolicy: 'Local',
        healthCheckNodePort: 32000,
        ports: [{ name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 }],
      },
      { status: { loadBalancer: { ingress: [{ ip: '198.18.200.20' }, { ip: '198.18.200.21', ipMode: 'Proxy' }, { hostname: 'lb.example' }] } } },
    );
    const sp = only(buildState([s], CONFIG).state);
    expect(sp).toMatchObject({
      protocol: 'UDP',
      port: 53,
      nodePort: 30053,
      externalIPs: ['198.18.200.10'],
      loadBalancerIPs: ['198.18.200.20'],
      loadBalancerSourceRanges: ['198.18.0.0/24', '198.18.0.0/16'],
      affinityTimeoutSeconds: 10800,
      externalTrafficPolicy: 'Local',
      internalTrafficPolicy: 'Local',
      healthCheckNodePort: 32000,
      externallyAccessible: true,
      externalPolicyLocal: true,
      internalPolicyLocal: true,
    });
  });

  it('takes the affinity timeout from sessionAffinityConfig, and none without ClientIP', () => {
    const a = only(buildState([web({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } } })], CONFIG).state);
    expect(a.affinityTimeoutSeconds).toBe(600);
    expect(only(buildState([web()], CONFIG).state).affinityTimeoutSeconds).toBeNull();
  });

  it('defaults the protocol to TCP; SCTP is kept', () => {
    const sp = only(buildState([svc('s', { clusterIP: '198.18.100.5', ports: [{ port: 9 }] })], CONFIG).state);
    expect(sp.protocol).toBe('TCP');
    expect(sp.portName).toBe('');
    expect(sp.key).toBe('shop/s:');
    const sctp = only(buildState([svc('s', { clusterIP: '198.18.100.5', ports: [{ port: 9, protocol: 'SCTP' }] })], CONFIG).state);
    expect(sctp.protocol).toBe('SCTP');
  });

  it('applies externalTrafficPolicy only to services reachable from outside', () => {
    const sp = only(buildState([web({ externalTrafficPolicy: 'Local' })], CONFIG).state);
    expect(sp.externalTrafficPolicy).toBe('Cluster');
    expect(sp.externallyAccessible).toBe(false);
    expect(sp.externalPolicyLocal).toBe(false);
  });

  it('ignores nodePort on a ClusterIP service and LB status on a non-LoadBalancer service', () => {
    const sp = only(
      buildState(
        [svc('x', { clusterIP: '198.18.100.5', ports: [{ port: 80, nodePort: 30001 }] }, { status: { loadBalancer: { ingress: [{ ip: '198.18.200.1' }] } } })],
        CONFIG,
      ).state,
    );
    expect(sp.nodePort).toBeNull();
    expect(sp.loadBalancerIPs).toEqual([]);
  });

  it('keeps IP families apart', () => {
    const dual = svc('dual', {
      clusterIPs: ['198.18.100.7', 'fd00::7'],
      externalIPs: ['198.18.200.7', 'fd00:0:0::200'],
      ports: [{ name: 'http', port: 80 }],
    });
    const v6slice = { ...slice('dual-v6', 'dual', [{ name: 'http', port: 8080 }], [ep('fd00::1:11', 'node-a')]), addressType: 'IPv6' };
    const v4slice = slice('dual-v4', 'dual', [{ name: 'http', port: 8080 }], [ep('198.19.1.11', 'node-a')]);
    const v4 = only(buildState([dual, v4slice, v6slice], CONFIG, 'IPv4').state);
    expect(v4.clusterIPs).toEqual(['198.18.100.7']);
    expect(v4.externalIPs).toEqual(['198.18.200.7']);
    expect(ids(v4.clusterEndpoints)).toEqual(['198.19.1.11:8080']);
    const v6 = only(buildState([dual, v4slice, v6slice], CONFIG, 'IPv6').state);
    expect(v6.clusterIPs).toEqual(['fd00::7']);
    expect(v6.externalIPs).toEqual(['fd00::200']);
    expect(ids(v6.clusterEndpoints)).toEqual(['[fd00::1:11]:8080']);
    // A single-stack IPv6 service has no IPv4 service ports.
    expect(buildState([svc('v6', { clusterIP: 'fd00::9', ports: [{ port: 80 }] })], CONFIG).state.servicePorts.size).toBe(0);
  });
});

describe('endpoints', () => {
  it('merges slices of the same service in the same namespace and de-duplicates', () => {
    const { state } = buildState(
      [
        web(),
        webSlice([ep('198.19.1.11', 'node-a'), ep('198.19.2.11', 'node-b')], 'web-1'),
        webSlice([ep('198.19.2.11', 'node-b'), ep('198.19.2.12', 'node-b')], 'web-2'),
        slice('web-other-ns', 'web', [{ name: 'http', port: 8080 }], [ep('198.19.9.9', 'node-a')], 'other'),
      ],
      CONFIG,
    );
    expect(ids(only(state).clusterEndpoints)).toEqual(['198.19.1.11:8080', '198.19.2.11:8080', '198.19.2.12:8080']);
  });

  it('a ready duplicate wins over a not-ready one', () => {
    const { state } = buildState(
      [web(), webSlice([ep('198.19.2.11', 'node-b', { ready: false })], 'web-1'), webSlice([ep('198.19.2.11', 'node-b', { ready: true })], 'web-2')],
      CONFIG,
    );
    expect(only(state).clusterEndpoints[0]!.ready).toBe(true);
  });

  it('resolves named targetPorts through the slice port with the same name and protocol', () => {
    const s = svc('app', {
      clusterIP: '198.18.100.90',
      ports: [
        { name: 'http', port: 80, targetPort: 'web' },
        { name: 'metrics', port: 9090, targetPort: 'prom' },
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 'dns' },
      ],
    });
    const sl = slice(
      'app-1',
      'app',
      [
        { name: 'http', port: 8080, protocol: 'TCP' },
        { name: 'metrics', port: 9100, protocol: 'TCP' },
        { name: 'dns', port: 5353, protocol: 'TCP' }, // wrong protocol: no match
      ],
      [ep('198.19.1.11', 'node-a')],
    );
    const { state } = buildState([s, sl], CONFIG);
    expect(ids(state.servicePorts.get('shop/app:http')!.clusterEndpoints)).toEqual(['198.19.1.11:8080']);
    expect(ids(state.servicePorts.get('shop/app:metrics')!.clusterEndpoints)).toEqual(['198.19.1.11:9100']);
    expect(state.servicePorts.get('shop/app:dns')!.clusterEndpoints).toEqual([]);
  });

  it('ready and serving unset mean true; terminating unset means false (as upstream reads them)', () => {
    const sp = only(buildState([web(), webSlice([ep('198.19.1.11', 'node-a')])], CONFIG).state);
    expect(sp.clusterEndpoints[0]).toMatchObject({ ready: true, serving: true, terminating: false, isLocal: true });
  });

  it('uses ready endpoints, else serving-and-terminating ones, never not-serving ones', () => {
    const rolling = only(
      buildState(
        [
          web(),
          webSlice([
            ep('198.19.1.11', 'node-a', { ready: true, serving: true, terminating: false }),
            ep('198.19.2.11', 'node-b', { ready: false, serving: true, terminating: true }),
            ep('198.19.1.13', 'node-a', { ready: false, serving: false, terminating: false }),
          ]),
        ],
        CONFIG,
      ).state,
    );
    expect(ids(rolling.clusterEndpoints)).toEqual(['198.19.1.11:8080']);
    expect(ids(rolling.allEndpoints)).toEqual(['198.19.1.11:8080', '198.19.1.13:8080', '198.19.2.11:8080']);
    const draining = only(
      buildState(
        [
          web(),
          webSlice([
            ep('198.19.2.11', 'node-b', { ready: false, serving: true, terminating: true }),
            ep('198.19.1.13', 'node-a', { ready: false, serving: false, terminating: true }),
          ]),
        ],
        CONFIG,
      ).state,
    );
    expect(ids(draining.clusterEndpoints)).toEqual(['198.19.2.11:8080']);
    expect(draining.localEndpoints).toEqual([]);
    expect(draining.hasAnyEndpoints).toBe(true);
  });

  it("local endpoints likewise fall back to this node's serving-and-terminating ones", () => {
    const sp = only(
      buildState(
        [
          web({ type: 'NodePort', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, nodePort: 30080 }] }),
          webSlice([ep('198.19.2.11', 'node-b', { ready: true }), ep('198.19.1.11', 'node-a', { ready: false, serving: true, terminating: true })]),
        ],
        CONFIG,
      ).state,
    );
    expect(ids(sp.clusterEndpoints)).toEqual(['198.19.2.11:8080']);
    expect(ids(sp.localEndpoints)).toEqual(['198.19.1.11:8080']);
  });

  it('internalTrafficPolicy Local uses local endpoints for cluster traffic; externalTrafficPolicy Local for external traffic', () => {
    const itp = only(buildState([web({ internalTrafficPolicy: 'Local' }), webSlice()], CONFIG).state);
    expect(ids(itp.internalEndpoints)).toEqual(['198.19.1.11:8080']);
    expect(ids(itp.externalEndpoints)).toEqual(['198.19.1.11:8080', '198.19.2.11:8080']);
    const etp = only(
      buildState([web({ type: 'NodePort', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, nodePort: 30080 }] }), webSlice()], CONFIG).state,
    );
    expect(ids(etp.internalEndpoints)).toEqual(['198.19.1.11:8080', '198.19.2.11:8080']);
    expect(ids(etp.externalEndpoints)).toEqual(['198.19.1.11:8080']);
    const remote = only(buildState([web({ internalTrafficPolicy: 'Local' }), webSlice([ep('198.19.2.11', 'node-b')])], CONFIG).state);
    expect(remote.internalEndpoints).toEqual([]);
    expect(remote.hasAnyEndpoints).toBe(true);
  });

  it('an empty slice gives no endpoints and hasAnyEndpoints false', () => {
    const sp = only(buildState([web(), webSlice([])], CONFIG).state);
    expect(sp.clusterEndpoints).toEqual([]);
    expect(sp.hasAnyEndpoints).toBe(false);
  });
});

describe('invalid objects are reported and left out; the rest still builds', () => {
  const cases: [string, ReturnType<typeof svc>, string][] = [
    ['a bad IP', svc('bad', { clusterIP: '198.18.100.300', ports: [{ port: 80 }] }), 'spec.clusterIP'],
    ['a leading-zero IP', svc('bad', { clusterIPs: ['198.18.100.010'], ports: [{ port: 80 }] }), 'spec.clusterIPs[0]'],
    ['a port out of range', svc('bad', { clusterIP: '198.18.100.9', ports: [{ port: 70000 }] }), 'spec.ports[0].port'],
    ['port 0', svc('bad', { clusterIP: '198.18.100.9', ports: [{ port: 0 }] }), 'spec.ports[0].port'],
    ['a nodePort out of range', svc('bad', { type: 'NodePort', clusterIP: '198.18.100.9', ports: [{ port: 80, nodePort: 65536 }] }), 'spec.ports[0].nodePort'],
    [
      'an unparseable source range',
      svc('bad', { type: 'LoadBalancer', clusterIP: '198.18.100.9', loadBalancerSourceRanges: ['10.0.0.0/33'], ports: [{ port: 80 }] }),
      'spec.loadBalancerSourceRanges[0]',
    ],
    ['a bad externalIP', svc('bad', { clusterIP: '198.18.100.9', externalIPs: ['1.2.3'], ports: [{ port: 80 }] }), 'spec.externalIPs[0]'],
    ['a bad protocol', svc('bad', { clusterIP: '198.18.100.9', ports: [{ port: 80, protocol: 'ICMP' }] }), 'spec.ports[0].protocol'],
    [
      'a missing name',
      { apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'shop' }, spec: { clusterIP: '198.18.100.9', ports: [{ port: 80 }] } },
      'metadata.name',
    ],
    ['a rule-injecting name', svc('x" -j ACCEPT #', { clusterIP: '198.18.100.9', ports: [{ port: 80 }] }), 'metadata.name'],
    ['a rule-injecting port name', svc('bad', { clusterIP: '198.18.100.9', ports: [{ name: 'a b', port: 80 }] }), 'spec.ports[0].name'],
  ];
  for (const [what, bad, field] of cases) {
    it(`a Service with ${what}`, () => {
      const { state, issues } = buildState([bad, web(), webSlice()], CONFIG);
      expect(issues.length).toBeGreaterThan(0);
      expect(issues[0]!.field).toBe(field);
      expect(issues[0]!.object).toMatch(/^Service shop\//);
      expect(issues[0]!.message).not.toBe('');
      expect([...state.servicePorts.keys()]).toEqual(['shop/web:http']);
    });
  }

  it('an EndpointSlice with a bad address or port', () => {
    const bad1 = webSlice([ep('198.19.1.011', 'node-a')], 'web-bad');
    const bad2 = slice('web-bad2', 'web', [{ name: 'http', port: -1 }], [ep('198.19.1.12', 'node-a')]);
    const { state, issues } = buildState([web(), webSlice(), bad1, bad2], CONFIG);
    expect(issues.map((i) => `${i.object} ${i.field}`)).toEqual([
      'EndpointSlice shop/web-bad endpoints[0].addresses[0]',
      'EndpointSlice shop/web-bad2 ports[0].port',
    ]);
    expect(ids(only(state).clusterEndpoints)).toEqual(['198.19.1.11:8080', '198.19.2.11:8080']);
  });

  it('a Service that becomes invalid stops being routed', () => {
    const cs = new ClusterState(CONFIG);
    cs.upsert(web());
    cs.upsert(webSlice());
    cs.commit();
    const r = cs.upsert(web({ clusterIP: 'nonsense', clusterIPs: undefined }));
    expect(r.kind).toBe('invalid');
    expect(cs.commit().changes).toMatchObject({ added: [], updated: [], removed: ['shop/web:http'] });
  });
});

describe('incremental updates', () => {
  function seeded() {
    const cs = new ClusterState(CONFIG);
    cs.upsert(web());
    cs.upsert(webSlice());
    cs.upsert(
      svc('api', {
        clusterIP: '198.18.100.11',
        ports: [
          { name: 'http', port: 80 },
          { name: 'grpc', port: 90 },
        ],
      }),
    );
    cs.upsert(
      slice(
        'api-1',
        'api',
        [
          { name: 'http', port: 8080 },
          { name: 'grpc', port: 9090 },
        ],
        [ep('198.19.1.20', 'node-a')],
      ),
    );
    const first = cs.commit();
    expect(first.changes.added.sort()).toEqual(['shop/api:grpc', 'shop/api:http', 'shop/web:http']);
    return cs;
  }

  it('a changed EndpointSlice updates only its service ports, other objects are untouched', () => {
    const cs = seeded();
    const before = cs.current.servicePorts.get('shop/api:http');
    cs.upsert(webSlice([ep('198.19.1.11', 'node-a')]));
    const c = cs.commit();
    expect(c.changes).toMatchObject({ added: [], updated: ['shop/web:http'], removed: [] });
    expect(c.endpointChanges).toBe(1);
    expect(cs.current.servicePorts.get('shop/api:http')).toBe(before);
    expect(ids(cs.current.servicePorts.get('shop/web:http')!.clusterEndpoints)).toEqual(['198.19.1.11:8080']);
  });

  it('an unchanged re-apply reports no change', () => {
    const cs = seeded();
    cs.upsert(webSlice());
    cs.upsert(web());
    expect(cs.commit().changes).toMatchObject({ added: [], updated: [], removed: [] });
  });

  it('adding and removing ports and services reports added and removed keys', () => {
    const cs = seeded();
    cs.upsert(
      svc('api', {
        clusterIP: '198.18.100.11',
        ports: [
          { name: 'http', port: 80 },
          { name: 'admin', port: 91 },
        ],
      }),
    );
    const c = cs.commit();
    expect(c.changes).toMatchObject({ added: ['shop/api:admin'], updated: [], removed: ['shop/api:grpc'] });
    cs.deleteService('shop', 'web');
    expect(cs.commit().changes).toMatchObject({ added: [], updated: [], removed: ['shop/web:http'] });
    cs.deleteEndpointSlice('shop', 'api-1');
    // admin had no endpoints in that slice: only http changes.
    expect(cs.commit().changes.updated).toEqual(['shop/api:http']);
  });

  it('a slice that moves to another service updates both', () => {
    const cs = seeded();
    cs.upsert(slice('web-1', 'api', [{ name: 'http', port: 8080 }], [ep('198.19.1.11', 'node-a')]));
    expect(cs.commit().changes.updated.sort()).toEqual(['shop/api:http', 'shop/web:http']);
  });

  it('replaceAll deletes what is no longer listed', () => {
    const cs = seeded();
    cs.replaceAll([web(), webSlice()]);
    expect(cs.commit().changes.removed.sort()).toEqual(['shop/api:grpc', 'shop/api:http']);
  });

  it('a list in parts (listing): each part applied at once, what was not listed deleted only when the list ends', () => {
    const cs = seeded();
    const list = cs.listing(['Service']);
    expect(list.add([web()])).toEqual([]);
    cs.commit();
    // Not ended (a list that failed half-way): shop/api, not listed, is still there.
    expect([...cs.commit().state.servicePorts.keys()].sort()).toEqual(['shop/api:grpc', 'shop/api:http', 'shop/web:http']);
    list.end();
    expect([...cs.commit().state.servicePorts.keys()]).toEqual(['shop/web:http']);
  });

  it('replaceAll of some kinds deletes only what is no longer listed of those kinds (the API source lists each kind on its own)', () => {
    const cs = seeded();
    const ids = cs
      .commit()
      .state.servicePorts.get('shop/web:http')!
      .allEndpoints.map((e) => e.id);
    expect(ids.length).toBeGreaterThan(0);
    // Only the slices listed, and none of them: the services stay, their endpoints go.
    cs.replaceAll([], ['EndpointSlice']);
    const c = cs.commit();
    expect(c.changes.removed).toEqual([]);
    expect(c.state.servicePorts.get('shop/web:http')?.allEndpoints).toEqual([]);
    // Only the services listed, without api: api goes, web keeps its (relisted) slice.
    cs.upsert(webSlice());
    cs.commit();
    cs.replaceAll([web()], ['Service']);
    const d = cs.commit();
    expect(d.changes.removed.sort()).toEqual(['shop/api:grpc', 'shop/api:http']);
    expect(d.state.servicePorts.get('shop/web:http')?.allEndpoints.map((e) => e.id)).toEqual(ids);
  });
});

describe('network programming latency', () => {
  const stamped = (at: number, name = 'web-1') => {
    const s = webSlice(undefined, name) as { metadata: { annotations?: Record<string, string> } };
    s.metadata.annotations = { 'endpoints.kubernetes.io/last-change-trigger-time': new Date(at).toISOString() };
    return s as never;
  };
  it('counts the trigger times of changes made since the state began tracking, not older ones (as upstream)', () => {
    const cs = new ClusterState(CONFIG);
    cs.upsert(web());
    cs.upsert(stamped(Date.now() - 3_600_000));
    expect(cs.commit().triggerTimes).toEqual([]);
    const now = Date.now() + 1000;
    cs.upsert(stamped(now, 'web-2'));
    expect(cs.commit().triggerTimes).toEqual([now]);
  });
});

describe("each family's model counts only the changes that are its own (revision: the daemon syncs only those)", () => {
  const families = () => ({ v4: new ClusterState(CONFIG, 'IPv4'), v6: new ClusterState(CONFIG, 'IPv6') });
  const apply = (f: ReturnType<typeof families>, o: Parameters<ClusterState['upsert']>[0]) => {
    const before = [f.v4.revision, f.v6.revision];
    f.v4.upsert(o);
    f.v6.upsert(o);
    return [f.v4.revision !== before[0], f.v6.revision !== before[1]];
  };
  const v4Service = svc('web', { clusterIP: '198.18.100.10', ports: [{ name: 'http', port: 80 }] });
  const dualService = svc('dual', {
    clusterIP: '198.18.100.11',
    clusterIPs: ['198.18.100.11', '2001:2:0:100::11'],
    ipFamilies: ['IPv4', 'IPv6'],
    ports: [{ name: 'http', port: 80 }],
  });
  const v6Slice = { ...slice('dual-6', 'dual', [{ name: 'http', port: 8080 }], [ep('2001:2:0:10::1', 'node-a')]), addressType: 'IPv6' };

  it('an IPv4-only Service and an IPv4 EndpointSlice: IPv4 only; a dual-stack Service: both; an IPv6 slice: IPv6 only', () => {
    const f = families();
    expect(apply(f, v4Service)).toEqual([true, false]);
    expect(apply(f, slice('web-1', 'web', [{ name: 'http', port: 8080 }], [ep('198.19.1.10', 'node-a')]))).toEqual([true, false]);
    expect(apply(f, dualService)).toEqual([true, true]);
    expect(apply(f, v6Slice)).toEqual([false, true]);
  });

  it("this node's Node: both (the zone decides topology in each); deleting what a family never held: neither", () => {
    const f = families();
    expect(apply(f, { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a', labels: { 'topology.kubernetes.io/zone': 'z1' } } })).toEqual([true, true]);
    const before = [f.v4.revision, f.v6.revision];
    f.v4.deleteService('shop', 'web');
    f.v6.deleteEndpointSlice('shop', 'web-1');
    expect([f.v4.revision, f.v6.revision]).toEqual(before);
  });
});
