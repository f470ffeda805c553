// The one endpoint decision (src/model/endpoints.ts): upstream's CategorizeEndpoints and topology fallbacks
// (pkg/proxy/topology_test.go's cases, in this model's terms), the change tracker's previous values, and
// the snapshot a mode receives.
import { describe, expect, it } from 'vitest';
import { categorizeEndpoints, topologyModeFromHints } from '../../src/model/endpoints.ts';
import type { EndpointSlice, Node } from '../../src/model/k8s.ts';
import { ClusterState, buildState } from '../../src/model/store.ts';
import type { Endpoint } from '../../src/model/types.ts';
import { CONFIG, ep, slice, svc } from './model-helpers.ts';

const NODE = { name: 'node-a', zone: 'zone-a' };

function e(ip: string, opts: Partial<Endpoint> = {}): Endpoint {
  return {
    ip,
    port: 80,
    id: `${ip}:80`,
    nodeName: null,
    zone: null,
    isLocal: false,
    ready: true,
    serving: true,
    terminating: false,
    zoneHints: [],
    nodeHints: [],
    ...opts,
  };
}
const ids = (eps: readonly Endpoint[]) => eps.map((x) => x.ip);
const CLUSTER = { internalTrafficPolicy: 'Cluster', externalTrafficPolicy: 'Cluster', externallyAccessible: false } as const;

describe('topologyModeFromHints', () => {
  it('zone hints for this zone on every ready endpoint: PreferSameZone', () => {
    expect(topologyModeFromHints([e('10.0.0.1', { zoneHints: ['zone-a'] }), e('10.0.0.2', { zoneHints: ['zone-b'] })], NODE)).toBe('PreferSameZone');
  });
  it('one ready endpoint without a zone hint turns hints off; a not-ready one does not', () => {
    expect(topologyModeFromHints([e('10.0.0.1', { zoneHints: ['zone-a'] }), e('10.0.0.2')], NODE)).toBe('');
    expect(topologyModeFromHints([e('10.0.0.1', { zoneHints: ['zone-a'] }), e('10.0.0.2', { ready: false })], NODE)).toBe('PreferSameZone');
  });
  it('no hint for this zone, or a node without a zone label: no topology', () => {
    expect(topologyModeFromHints([e('10.0.0.1', { zoneHints: ['zone-b'] })], NODE)).toBe('');
    expect(topologyModeFromHints([e('10.0.0.1', { zoneHints: ['zone-a'] })], { name: 'node-a', zone: '' })).toBe('');
  });
  it('node hints win over zone hints when every ready endpoint has one and one is for this node', () => {
    const eps = [e('10.0.0.1', { nodeHints: ['node-a'], zoneHints: ['zone-a'] }), e('10.0.0.2', { nodeHints: ['node-b'], zoneHints: ['zone-a'] })];
    expect(topologyModeFromHints(eps, NODE)).toBe('PreferSameNode');
    // No node hint for this node: the zone hints still apply.
    expect(topologyModeFromHints(eps, { name: 'node-c', zone: 'zone-a' })).toBe('PreferSameZone');
  });
  it('no ready endpoint: no topology', () => {
    expect(topologyModeFromHints([e('10.0.0.1', { ready: false, zoneHints: ['zone-a'] })], NODE)).toBe('');
  });
});

describe('categorizeEndpoints', () => {
  it('topology narrows the ready cluster endpoints only', () => {
    const c = categorizeEndpoints([e('10.0.0.1', { zoneHints: ['zone-a'] }), e('10.0.0.2', { zoneHints: ['zone-b'] })], CLUSTER, NODE);
    expect(c.topologyMode).toBe('PreferSameZone');
    expect(ids(c.clusterEndpoints)).toEqual(['10.0.0.1']);
    expect(c.internalEndpoints).toBe(c.clusterEndpoints);
  });
  it('topology never applies to the serving-and-terminating fallback', () => {
    const draining = [
      e('10.0.0.1', { ready: false, terminating: true, zoneHints: ['zone-b'] }),
      e('10.0.0.2', { ready: false, terminating: true, zoneHints: ['zone-a'] }),
    ];
    const c = categorizeEndpoints(draining, CLUSTER, NODE);
    expect(c.topologyMode).toBe('');
    expect(ids(c.clusterEndpoints)).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(c.hasAnyEndpoints).toBe(true);
  });
  it("Local policies use this node's ready endpoints, else its serving-and-terminating ones", () => {
    const eps = [e('10.0.0.1', { isLocal: true, ready: false, terminating: true }), e('10.0.0.2')];
    const c = categorizeEndpoints(eps, { internalTrafficPolicy: 'Local', externalTrafficPolicy: 'Cluster', externallyAccessible: false }, NODE);
    expect(c.internalPolicyLocal).toBe(true);
    expect(ids(c.internalEndpoints)).toEqual(['10.0.0.1']);
  });
  it('the external policy applies only to externally accessible ports', () => {
    const eps = [e('10.0.0.1', { isLocal: true }), e('10.0.0.2')];
    const notExternal = categorizeEndpoints(eps, { internalTrafficPolicy: 'Cluster', externalTrafficPolicy: 'Local', externallyAccessible: false }, NODE);
    expect(notExternal.externalPolicyLocal).toBe(false);
    const external = categorizeEndpoints(eps, { internalTrafficPolicy: 'Cluster', externalTrafficPolicy: 'Local', externallyAccessible: true }, NODE);
    expect(external.externalPolicyLocal).toBe(true);
    expect(ids(external.externalEndpoints)).toEqual(['10.0.0.1']);
    expect(ids(external.internalEndpoints)).toEqual(['10.0.0.1', '10.0.0.2']);
  });
  it('no usable endpoint: hasAnyEndpoints false', () => {
    const c = categorizeEndpoints([e('10.0.0.1', { ready: false, serving: false, terminating: true })], CLUSTER, NODE);
    expect(c.hasAnyEndpoints).toBe(false);
    expect(c.clusterEndpoints).toEqual([]);
  });
});

const zonal = (hints: Record<string, string[]>, name = 'zonal-1'): EndpointSlice =>
  slice(
    name,
    'zonal',
    [{ name: 'http', port: 8080, protocol: 'TCP' }],
    Object.entries(hints).map(([ip, zones]) => ({ ...ep(ip, 'node-b'), hints: { forZones: zones.map((z) => ({ name: z })) } })),
  );
const zonalSvc = svc('zonal', { clusterIP: '198.18.100.80', ports: [{ name: 'http', port: 80 }] });
const nodeA = (zone: string | null): Node => ({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: 'node-a', labels: zone ? { 'topology.kubernetes.io/zone': zone } : {} },
});

describe('the store', () => {
  it('reads the zone from this Node and recomputes every service port when it changes', () => {
    const cs = new ClusterState(CONFIG);
    cs.upsert(zonalSvc);
    cs.upsert(zonal({ '198.19.2.81': ['zone-a'], '198.19.2.82': ['zone-b'] }));
    cs.commit();
    expect(cs.current.servicePorts.get('shop/zonal:http')!.clusterEndpoints).toHaveLength(2);
    cs.upsert(nodeA('zone-a'));
    const c = cs.commit();
    expect(c.changes.updated).toEqual(['shop/zonal:http']);
    expect(cs.current.servicePorts.get('shop/zonal:http')!.clusterEndpoints.map((x) => x.ip)).toEqual(['198.19.2.81']);
    cs.upsert(nodeA('zone-b'));
    cs.commit();
    expect(cs.current.servicePorts.get('shop/zonal:http')!.clusterEndpoints.map((x) => x.ip)).toEqual(['198.19.2.82']);
  });

  it('changes carry the previous value of updated and removed service ports', () => {
    const cs = new ClusterState(CONFIG);
    cs.upsert(zonalSvc);
    cs.upsert(zonal({ '198.19.2.81': [] }));
    cs.commit();
    const before = cs.current.servicePorts.get('shop/zonal:http')!;
    cs.upsert(zonal({ '198.19.2.82': [] }));
    const updated = cs.commit().changes;
    expect(updated.previous.get('shop/zonal:http')).toBe(before);
    cs.deleteService('shop', 'zonal');
    const removed = cs.commit().changes;
    expect(removed.previous.get('shop/zonal:http')!.clusterEndpoints.map((x) => x.ip)).toEqual(['198.19.2.82']);
  });

  it('a committed state is a snapshot: later commits do not change it', () => {
    const cs = new ClusterState(CONFIG);
    cs.upsert(zonalSvc);
    cs.upsert(zonal({ '198.19.2.81': [] }));
    const first = cs.commit().state;
    cs.deleteService('shop', 'zonal');
    const second = cs.commit().state;
    expect(first.servicePorts.size).toBe(1);
    expect(second.servicePorts.size).toBe(0);
    // No change: the same snapshot again.
    expect(cs.commit().state).toBe(second);
  });

  it('reads discovery.k8s.io/v1beta1 slices: node and zone from the topology map', () => {
    const beta: EndpointSlice = {
      apiVersion: 'discovery.k8s.io/v1beta1',
      kind: 'EndpointSlice',
      metadata: { name: 'zonal-beta', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'zonal' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [
        { addresses: ['198.19.1.81'], conditions: { ready: true }, topology: { 'kubernetes.io/hostname': 'node-a', 'topology.kubernetes.io/zone': 'zone-a' } },
      ],
    };
    const { state, issues } = buildState([zonalSvc, beta], CONFIG);
    expect(issues).toEqual([]);
    const sp = state.servicePorts.get('shop/zonal:http')!;
    expect(sp.allEndpoints[0]).toMatchObject({ nodeName: 'node-a', zone: 'zone-a', isLocal: true });
    expect(sp.localEndpoints.map((x) => x.ip)).toEqual(['198.19.1.81']);
  });

  it('a Node whose addresses or podCIDRs are not lists is reported, not fatal', () => {
    const bad = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' }, status: { addresses: 'x' }, spec: { podCIDRs: 7 } } as unknown as Node;
    const { issues } = buildState([bad], CONFIG);
    expect(issues.map((i) => i.field).sort()).toEqual(['spec.podCIDRs', 'status.addresses']);
  });
});
