// UDP conntrack cleanup (src/daemon/conntrack.ts): which flows go, from the change set's previous values, and
// the batch one `conntrack -R` process runs.
import { describe, expect, it } from 'vitest';
import { batchText, changeFlows, staleFlows } from '../../src/daemon/conntrack.ts';
import type { ServicePort } from '../../src/model/types.ts';
import { desiredState, endpoint, servicePort } from './model-fixtures.ts';

const dns = (eps: string[], nodePort: number | null = null): ServicePort =>
  servicePort({
    name: 'dns',
    protocol: 'UDP',
    port: 53,
    clusterIPs: ['198.18.100.70'],
    externalIPs: ['198.18.200.70'],
    nodePort,
    endpoints: eps.map((ip) => endpoint(ip, 5353)),
  });

describe('UDP conntrack cleanup', () => {
  it('deletes flows NATed to endpoints that left, per frontend and NodePort', () => {
    expect(staleFlows(dns(['198.19.1.11', '198.19.2.11'], 30053), dns(['198.19.2.11'], 30053))).toEqual([
      ['--orig-dst', '198.18.100.70', '--orig-port-dst', '53', '--dst-nat', '198.19.1.11'],
      ['--orig-dst', '198.18.200.70', '--orig-port-dst', '53', '--dst-nat', '198.19.1.11'],
      ['--orig-port-dst', '30053', '--dst-nat', '198.19.1.11'],
    ]);
  });
  it('deletes flows of a port that gets its first endpoints, and of removed ports', () => {
    expect(staleFlows(dns([]), dns(['198.19.1.11']))).toEqual([
      ['--orig-dst', '198.18.100.70', '--orig-port-dst', '53'],
      ['--orig-dst', '198.18.200.70', '--orig-port-dst', '53'],
    ]);
    expect(staleFlows(dns(['198.19.1.11']), undefined)).toHaveLength(2);
    expect(staleFlows(undefined, dns(['198.19.1.11']))).toEqual([]);
    expect(staleFlows(dns(['198.19.1.11']), dns(['198.19.1.11']))).toEqual([]);
  });
  it('reads what left from the change set: the previous value of each updated or removed port', () => {
    const before = dns(['198.19.1.11', '198.19.2.11']);
    const after = dns(['198.19.2.11']);
    const state = desiredState([after]);
    const flows = changeFlows(state, { added: [], updated: [after.key], removed: [], previous: new Map([[after.key, before]]) });
    expect(flows).toHaveLength(2);
    expect(changeFlows(desiredState([]), { added: [], updated: [], removed: [before.key], previous: new Map([[before.key, before]]) })).toHaveLength(4);
  });
  it('writes one -D line per deletion, with the family, for conntrack -R', () => {
    expect(batchText('IPv6', [['--orig-dst', '2001:2:0:100::53', '--orig-port-dst', '53']])).toBe(
      '-D -f ipv6 -p udp --orig-dst 2001:2:0:100::53 --orig-port-dst 53\n',
    );
  });
});
