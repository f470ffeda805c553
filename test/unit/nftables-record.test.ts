// The planner's one-string record of a service port's elements gives back exactly the lists it was given.
import { describe, expect, it } from 'vitest';
import type { ElemList } from '../../src/modes/nftables/elements.ts';
import { decodeElems, encodeElems } from '../../src/modes/nftables/record.ts';
import { render, servicePort, endpoint } from './nftables-fixtures.ts';

const roundTrip = (elems: ElemList, shared: ElemList) => expect(decodeElems(encodeElems(elems, shared))).toEqual({ elems, shared });

describe('record', () => {
  it('gives back a rendered service port, own and shared elements, in order', () => {
    const sp = servicePort({
      name: 'web',
      clusterIPs: ['198.18.100.1'],
      nodePort: 30080,
      externalTrafficPolicy: 'Local',
      affinityTimeoutSeconds: 60,
      endpoints: [endpoint('198.19.1.1', 8080, { node: 'node-a' }), endpoint('198.19.1.2', 9090, { node: 'node-b' })],
    });
    const r = render(sp);
    expect(r.elems.length).toBeGreaterThan(20);
    roundTrip(r.elems, r.shared);
    expect(encodeElems(r.elems, r.shared).length).toBeLessThan(r.elems.join('').length);
  });

  it('keeps keys that share more than 255 characters, at every length around the limit', () => {
    for (let len = 245; len <= 260; len++) {
      const key = `"${'x'.repeat(len)}"`;
      roundTrip(['svc-addr', key, '"198.19.1.1"', 'svc-addr', `${key.slice(0, -1)}y"`, '"198.19.1.2"', 'svc-port', key, '8080', 'svc-port', key, '8081'], []);
    }
  });

  it('tells a null value from a value, and an empty list from an element', () => {
    roundTrip([], []);
    roundTrip([], ['hairpin', '198.19.1.1', null]);
    // Whatever the lists hold, each comes back as itself (an element of a shared set among own ones too).
    roundTrip(['hairpin', '198.19.1.1', null], ['svc-port', '{"concat":["198.18.100.1","tcp",80]}', '8080']);
    roundTrip(
      ['svc-counts', '{"concat":["198.18.100.1","tcp",80,7]}', null, 'svc-addr', '{"concat":["198.18.100.1","tcp",80,7]}', '"1"'],
      ['#count:svc', '1', null],
    );
    expect(encodeElems([], [])).toBe('');
    expect(() => encodeElems(['svc-addr', 'k', ''], [])).toThrow(/empty value/);
    expect(() => encodeElems(['no-such-set', 'k', null], [])).toThrow(/no code/);
  });
});
