// UDP conntrack cleanup (src/daemon/conntrack.ts): which flows go, from the change set's previous values, and
// the batch one `conntrack -R` process runs.
import { describe, expect, it } from 'vitest';
import { ConntrackCleaner, batchText, changeFlows, staleFlows } from '../../src/daemon/conntrack.ts';
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

describe('the conntrack batch, run', () => {
  it('reports how long a batch took and how many flows it deleted (from the flows conntrack -R prints)', async () => {
    const { mkdtempSync, writeFileSync, chmodSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'kpt-ct-'));
    // A stand-in for the conntrack tool that prints two deleted flows, as `conntrack -R` does.
    const fake = join(dir, 'conntrack');
    writeFileSync(
      fake,
      '#!/bin/sh\necho "udp      17 49 src=198.18.0.5 dst=198.18.100.70 sport=1001 dport=53 [UNREPLIED] src=198.19.1.11 dst=198.18.0.5 sport=5353 dport=1001 mark=0 use=1"\necho "udp      17 20 src=198.18.0.6 dst=198.18.100.70 sport=1002 dport=53 src=198.19.1.11 dst=198.18.0.6 sport=5353 dport=1002 mark=0 use=1"\n',
    );
    chmodSync(fake, 0o755);
    const batches: [number, number][] = [];
    const cleaner = new ConntrackCleaner('IPv4', fake, (s, d) => batches.push([s, d]));
    const before = dns(['198.19.1.11']);
    cleaner.afterSync(desiredState([]), { added: [], updated: [], removed: [before.key], previous: new Map([[before.key, before]]) });
    await cleaner.idle();
    rmSync(dir, { recursive: true, force: true });
    expect(batches).toHaveLength(1);
    expect(batches[0]![1]).toBe(2);
    expect(cleaner.failures).toBe(0);
  });
});
