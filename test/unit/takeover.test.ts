// The takeover's order and scope with fake modes: nothing is removed before every family has synced once; then
// upstream's nftables table of each family and every other mode's rules of each family, never the running
// mode's; a failure is reported and the rest still goes; it runs once.
import { describe, expect, it } from 'vitest';
import type { IPFamily } from '../../src/model/types.ts';
import { Takeover } from '../../src/daemon/takeover.ts';
import type { ModeDefinition, ModeName, Proxier } from '../../src/modes/types.ts';

function fakeModes(calls: string[], failing: string[] = []): Record<ModeName, ModeDefinition> {
  const def = (name: ModeName): ModeDefinition => ({
    name,
    summary: name,
    keepsClientAddress: true,
    failureMetric: `${name}_failures`,
    dryRun: { kind: 'restore', combine: null, loadCommand: () => [] },
    create: ({ family }) =>
      ({
        mode: name,
        family,
        async sync() {
          throw new Error('not used');
        },
        dryRun: () => '',
        dryRunChunks: () => [],
        async cleanup() {
          calls.push(`cleanup ${name} ${family}`);
          if (failing.includes(`${name} ${family}`)) throw new Error('iptables-restore: exit 4');
        },
        async close() {
          calls.push(`close ${name} ${family}`);
        },
      }) as Proxier,
  });
  return { iptables: def('iptables'), nftables: def('nftables'), userspace: def('userspace') };
}

function takeover(mode: ModeName, families: IPFamily[], calls: string[], failing: string[] = [], tables: IPFamily[] = ['IPv4', 'IPv6']) {
  return new Takeover({
    mode,
    families,
    modeOptions: { config: { hostname: 'node-a', clusterCIDRs: [], masqueradeAll: false, nodePortAddresses: [] }, iptablesBackend: 'auto' },
    definitions: fakeModes(calls, failing),
    async removeUpstreamTable(family) {
      calls.push(`upstream table ${family}`);
      return tables.includes(family);
    },
    async removeUpstreamCanaries(family) {
      calls.push(`upstream canaries ${family}`);
      return false;
    },
  });
}

describe('takeover', () => {
  it('waits for the first sync of every family, then removes the other paths of every family, never its own', async () => {
    const calls: string[] = [];
    const t = takeover('nftables', ['IPv4', 'IPv6'], calls);
    t.synced('IPv4');
    t.synced('IPv4');
    expect(await t.idle()).toBeNull();
    expect(calls).toEqual([]);
    t.synced('IPv6');
    const report = await t.idle();
    expect(calls).toEqual([
      'upstream table IPv4',
      'upstream canaries IPv4',
      'upstream table IPv6',
      'upstream canaries IPv6',
      'cleanup iptables IPv4',
      'close iptables IPv4',
      'cleanup iptables IPv6',
      'close iptables IPv6',
      'cleanup userspace IPv4',
      'close userspace IPv4',
      'cleanup userspace IPv6',
      'close userspace IPv6',
    ]);
    expect(report?.failed).toEqual([]);
    expect(report?.removed).toHaveLength(6);
  });

  it('runs once, however many syncs follow', async () => {
    const calls: string[] = [];
    const t = takeover('iptables', ['IPv4'], calls);
    t.synced('IPv4');
    t.synced('IPv4');
    await t.idle();
    t.synced('IPv4');
    await t.idle();
    expect(calls.filter((c) => c.startsWith('cleanup'))).toEqual(['cleanup nftables IPv4', 'cleanup userspace IPv4']);
  });

  it('reports what it could not remove and goes on with the rest; an absent upstream table is not a removal', async () => {
    const calls: string[] = [];
    const t = takeover('userspace', ['IPv4', 'IPv6'], calls, ['iptables IPv4'], ['IPv6']);
    t.synced('IPv6');
    t.synced('IPv4');
    const report = await t.idle();
    expect(report?.failed).toEqual(['what the iptables mode leaves for IPv4: iptables-restore: exit 4']);
    expect(report?.removed).toEqual([
      "upstream kube-proxy's nftables table ip6 kube-proxy",
      'what the iptables mode leaves for IPv6',
      'what the nftables mode leaves for IPv4',
      'what the nftables mode leaves for IPv6',
    ]);
    expect(calls).toContain('close iptables IPv4');
    expect(calls.some((c) => c.includes('userspace'))).toBe(false);
  });
});
