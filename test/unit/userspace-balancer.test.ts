import { describe, expect, it } from 'vitest';
import { Balancer, FAILED_ENDPOINT_BACKOFF_MS, listenerClasses } from '../../src/modes/userspace/balancer.ts';
import { SourceClassifier, cidrWithin, intersectCidrs } from '../../src/modes/userspace/sources.ts';
import { endpoint, servicePort } from './userspace-fixtures.ts';

const clients = new SourceClassifier({ family: 'IPv4', clusterCIDRs: ['198.19.0.0/16'], readAddresses: () => ['198.18.0.1', '198.19.1.1'] });
const A = endpoint('198.19.1.11', 8080, true);
const B = endpoint('198.19.2.11', 8080);
const C = endpoint('198.19.2.12', 8080);

function picks(b: Balancer, n: number, client = '198.19.1.12', cls: 'all' | 'internal' | 'external' = 'all'): string[] {
  return Array.from({ length: n }, () => b.pick(cls, client)?.id ?? 'none');
}

describe('listenerClasses', () => {
  it('gives one listener unless a Local policy makes internal and external frontends differ', () => {
    expect(listenerClasses(servicePort('a'))).toEqual(['all']);
    expect(listenerClasses(servicePort('a', { nodePort: 30080 }))).toEqual(['all']);
    expect(listenerClasses(servicePort('a', { internalTrafficPolicy: 'Local' }))).toEqual(['all']);
    expect(listenerClasses(servicePort('a', { nodePort: 30080, externalTrafficPolicy: 'Local' }))).toEqual(['internal', 'external']);
    expect(listenerClasses(servicePort('a', { externalIPs: ['198.18.200.1'], internalTrafficPolicy: 'Local' }))).toEqual(['internal', 'external']);
  });
});

describe('Balancer', () => {
  it('goes round robin over the cluster endpoints', () => {
    const b = new Balancer(servicePort('a', { endpoints: [A, B, C] }), clients);
    expect(picks(b, 6)).toEqual([A.id, B.id, C.id, A.id, B.id, C.id]);
  });

  it('skips endpoints that already failed for this connection, and gives up when all did', () => {
    const b = new Balancer(servicePort('a', { endpoints: [A, B, C] }), clients);
    expect(b.pick('all', '198.19.1.12', new Set([A.id]))?.id).toBe(B.id);
    expect(b.pick('all', '198.19.1.12', new Set([C.id, A.id]))?.id).toBe(B.id);
    expect(b.pick('all', '198.19.1.12', new Set([A.id, B.id, C.id]))).toBeNull();
  });

  it('passes over an endpoint that just failed, unless nothing else is left, for a short while', () => {
    let now = 0;
    const b = new Balancer(servicePort('a', { endpoints: [A, B, C] }), clients, () => now);
    b.failed(B.id);
    expect(picks(b, 4)).toEqual([A.id, C.id, A.id, C.id]);
    b.failed(A.id);
    b.failed(C.id);
    expect(picks(b, 3)).toEqual([A.id, B.id, C.id]); // all in backoff: plain round robin
    now = FAILED_ENDPOINT_BACKOFF_MS + 1;
    expect(picks(b, 3)).toEqual([A.id, B.id, C.id]);
    b.failed(C.id);
    b.update(servicePort('a', { endpoints: [A, B] }));
    b.update(servicePort('a', { endpoints: [A, B, C] }));
    expect(picks(b, 3)).toEqual([A.id, B.id, C.id]); // backoff of a removed endpoint is forgotten
  });

  it('returns null without endpoints', () => {
    expect(new Balancer(servicePort('a'), clients).pick('all', '198.19.1.12')).toBeNull();
  });

  it('keeps a client on one endpoint with ClientIP affinity, and spreads different clients', () => {
    const b = new Balancer(servicePort('a', { endpoints: [A, B, C], affinityTimeoutSeconds: 60 }), clients);
    const first = picks(b, 10, '198.19.1.12');
    expect(new Set(first).size).toBe(1);
    const others = ['198.19.1.13', '198.19.1.14'].map((c) => b.pick('all', c)?.id);
    expect(new Set([first[0], ...others]).size).toBe(3);
    expect(b.affinityEntries).toBe(3);
  });

  it('lets affinity expire after the timeout, counted from the last use', () => {
    let now = 1_000_000;
    const b = new Balancer(servicePort('a', { endpoints: [A, B], affinityTimeoutSeconds: 10 }), clients, () => now);
    expect(b.pick('all', '198.19.1.12')?.id).toBe(A.id); // round robin moves on to B for the next choice
    now += 9_000;
    expect(b.pick('all', '198.19.1.12')?.id).toBe(A.id); // renewed: now expires 10 s from here
    now += 9_000;
    expect(b.pick('all', '198.19.1.12')?.id).toBe(A.id);
    now += 10_001;
    expect(b.pick('all', '198.19.1.12')?.id).toBe(B.id); // expired: a fresh round-robin choice
    expect(b.pick('all', '198.19.1.12')?.id).toBe(B.id); // and sticky again
  });

  it('moves the affinity of a client whose endpoint failed to the one that answered', () => {
    const b = new Balancer(servicePort('a', { endpoints: [A, B], affinityTimeoutSeconds: 60 }), clients);
    expect(b.pick('all', '198.19.1.12')?.id).toBe(A.id);
    expect(b.pick('all', '198.19.1.12', new Set([A.id]))?.id).toBe(B.id);
    expect(b.pick('all', '198.19.1.12')?.id).toBe(B.id);
  });

  it('purges affinity to removed endpoints and keeps the rest', () => {
    const b = new Balancer(servicePort('a', { endpoints: [A, B], affinityTimeoutSeconds: 60 }), clients);
    expect(b.pick('all', '198.19.1.12')?.id).toBe(A.id);
    expect(b.pick('all', '198.19.1.13')?.id).toBe(B.id);
    b.update(servicePort('a', { endpoints: [B, C], affinityTimeoutSeconds: 60 }));
    expect(b.affinityEntries).toBe(1);
    expect(b.pick('all', '198.19.1.13')?.id).toBe(B.id);
    expect(b.pick('all', '198.19.1.12')?.id).not.toBe(A.id);
    b.update(servicePort('a', { endpoints: [B, C] }));
    expect(b.affinityEntries).toBe(0);
  });

  it('uses only local endpoints for internal traffic under internalTrafficPolicy Local', () => {
    const b = new Balancer(servicePort('a', { endpoints: [A, B, C], internalTrafficPolicy: 'Local' }), clients);
    expect(new Set(picks(b, 6))).toEqual(new Set([A.id]));
  });

  it('under externalTrafficPolicy Local serves outside clients from local endpoints, pod and node clients from all', () => {
    const sp = servicePort('a', { endpoints: [A, B, C], nodePort: 30080, externalTrafficPolicy: 'Local' });
    const b = new Balancer(sp, clients);
    expect(new Set(picks(b, 6, '198.18.0.100', 'external'))).toEqual(new Set([A.id]));
    expect(new Set(picks(b, 6, '198.19.2.50', 'external'))).toEqual(new Set([A.id, B.id, C.id]));
    expect(new Set(picks(b, 6, '198.18.0.1', 'external'))).toEqual(new Set([A.id, B.id, C.id]));
    expect(new Set(picks(b, 6, '127.0.0.1', 'external'))).toEqual(new Set([A.id, B.id, C.id]));
    expect(new Set(picks(b, 6, '198.18.0.100', 'internal'))).toEqual(new Set([A.id, B.id, C.id]));
  });

  it('finds nothing for outside clients of a Local policy without local endpoints', () => {
    const b = new Balancer(servicePort('a', { endpoints: [B, C], nodePort: 30080, externalTrafficPolicy: 'Local' }), clients);
    expect(b.pick('external', '198.18.0.100')).toBeNull();
    expect(b.pick('external', '198.19.1.12')).not.toBeNull();
  });
});

describe('client classification and CIDRs', () => {
  it('tells pods, the node and outsiders apart', () => {
    expect(clients.isPod('198.19.200.1')).toBe(true);
    expect(clients.isPod('198.18.0.100')).toBe(false);
    expect(clients.isNodeLocal('198.18.0.1')).toBe(true);
    expect(clients.isNodeLocal('127.0.0.5')).toBe(true);
    expect(clients.isNodeLocal('198.18.0.100')).toBe(false);
    expect(new SourceClassifier({ family: 'IPv4', clusterCIDRs: [] }).isPod('198.19.1.1')).toBe(false);
  });

  it('knows only its own family: pod CIDRs, node addresses and loopback of that family', () => {
    const read = (family: string) => (family === 'IPv6' ? ['2001:2::1'] : ['198.18.0.1']);
    const v6 = new SourceClassifier({ family: 'IPv6', clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'], readAddresses: read });
    expect(v6.isPod('2001:2:0:11::62')).toBe(true);
    expect(v6.isPod('2001:2::100')).toBe(false);
    expect(v6.isPod('198.19.1.12')).toBe(false);
    expect(v6.isNodeLocal('::1')).toBe(true);
    expect(v6.isNodeLocal('2001:2::1')).toBe(true);
    expect(v6.isNodeLocal('2001:2::100')).toBe(false);
    expect(v6.isNodeLocal('127.0.0.1')).toBe(false);
    const v4 = new SourceClassifier({ family: 'IPv4', clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'], readAddresses: read });
    expect(v4.isPod('2001:2:0:11::62')).toBe(false);
    expect(v4.isNodeLocal('2001:2::1')).toBe(false);
  });

  it('re-reads the node addresses once they are older than the refresh interval', () => {
    let now = 0;
    let addresses = ['198.18.0.1'];
    const c = new SourceClassifier({ family: 'IPv4', clusterCIDRs: [], readAddresses: () => addresses, refreshMs: 1000, now: () => now });
    expect(c.isNodeLocal('198.18.0.7')).toBe(false);
    addresses = ['198.18.0.1', '198.18.0.7'];
    expect(c.isNodeLocal('198.18.0.7')).toBe(false);
    now = 1001;
    expect(c.isNodeLocal('198.18.0.7')).toBe(true);
  });

  it('intersects CIDR lists', () => {
    expect(cidrWithin('198.19.1.0/24', '198.19.0.0/16')).toBe(true);
    expect(cidrWithin('198.19.0.0/16', '198.19.1.0/24')).toBe(false);
    expect(intersectCidrs([null], ['198.19.0.0/16'])).toEqual(['198.19.0.0/16']);
    expect(intersectCidrs(['198.19.5.0/24', '198.18.0.0/24', '198.0.0.0/8'], ['198.19.0.0/16'])).toEqual(['198.19.5.0/24', '198.19.0.0/16']);
    expect(intersectCidrs(['10.0.0.0/8'], ['198.19.0.0/16'])).toEqual([]);
    expect(cidrWithin('2001:2:0:11::/64', '2001:2:0:10::/60')).toBe(true);
    expect(cidrWithin('2001:2:0:11::/64', '198.19.0.0/16')).toBe(false);
    expect(intersectCidrs(['2001:2::/48'], ['2001:2:0:10::/60'])).toEqual(['2001:2:0:10::/60']);
  });
});

describe('the model’s endpoint decision, as the balancer takes it', () => {
  it('uses serving-and-terminating endpoints when no endpoint is ready (the model’s fallback)', () => {
    const gone = endpoint('198.19.2.21', 8080);
    const terminating = { ...gone, ready: false, serving: true, terminating: true };
    const b = new Balancer(servicePort('t', { endpoints: [terminating] }), clients);
    expect(picks(b, 2)).toEqual([terminating.id, terminating.id]);
  });

  it('splits listeners whenever internal and external frontends may choose differently', () => {
    // internalTrafficPolicy Local on an externally accessible port: ClusterIPs local, NodePort cluster-wide.
    const sp = servicePort('a', { endpoints: [A, B], nodePort: 30080, internalTrafficPolicy: 'Local' });
    expect(listenerClasses(sp)).toEqual(['internal', 'external']);
    const b = new Balancer(sp, clients);
    expect(new Set(picks(b, 4, '198.19.1.12', 'internal'))).toEqual(new Set([A.id]));
    expect(new Set(picks(b, 4, '198.18.0.100', 'external'))).toEqual(new Set([A.id, B.id]));
    expect(b.needsClient('external')).toBe(false);
  });
});
