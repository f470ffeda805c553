// The nftables mode's definition and --dry-run output: one family's table per proxier, both families in one
// batch when combined, warnings on stderr and never in the output. (Loading the combined batch into a kernel:
// test/e2e/nftables-ipv6.test.ts.)
import { afterEach, describe, expect, it, vi } from 'vitest';
import { definition, NftablesProxier } from '../../src/modes/nftables/index.ts';
import type { IPFamily } from '../../src/model/types.ts';
import { commands, config, desiredState, endpoint, servicePort } from './nftables-fixtures.ts';

const CFG = config({ clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] });
const proxier = (family: IPFamily) => new NftablesProxier({ config: CFG, family, iptablesBackend: 'auto' });

const v4 = desiredState([servicePort({ name: 'web', clusterIPs: ['198.18.100.10'], nodePort: 30080, endpoints: [endpoint('198.19.1.11')] })], CFG, 'IPv4');
const v6 = desiredState(
  [servicePort({ name: 'web', family: 'IPv6', clusterIPs: ['2001:2:0:100::10'], nodePort: 30080, endpoints: [endpoint('2001:2:0:11::11')] })],
  CFG,
  'IPv6',
);

/** The table families the commands of a batch name. */
const tableFamilies = (json: string) => [...new Set(commands(json).map(([, , body]) => body.family as string))];

afterEach(() => {
  vi.restoreAllMocks();
});

describe('the nftables mode definition', () => {
  it('declares the mode: client addresses kept, nft JSON batches, upstream’s failure metric', () => {
    expect(definition.name).toBe('nftables');
    expect(definition.keepsClientAddress).toBe(true);
    expect(definition.failureMetric).toBe('kubeproxy_sync_proxy_rules_nftables_sync_failures_total');
    expect(definition.dryRun.kind).toBe('nft-json');
    expect(definition.dryRun.loadCommand('IPv6', '/tmp/rules.json')).toEqual(['nft', '-j', '-f', '/tmp/rules.json']);
    const p = definition.create({ config: CFG, family: 'IPv6', iptablesBackend: 'auto' });
    expect([p.mode, p.family]).toEqual(['nftables', 'IPv6']);
  });
});

describe('--dry-run', () => {
  it('prints its family’s table only: ip for IPv4, ip6 for IPv6', () => {
    const four = proxier('IPv4').dryRun(v4);
    const six = proxier('IPv6').dryRun(v6);
    expect(tableFamilies(four)).toEqual(['ip']);
    expect(tableFamilies(six)).toEqual(['ip6']);
    expect(six).toContain('"2001:2:0:11::11"');
    expect(() => proxier('IPv4').dryRun(v6)).toThrow(/IPv4 nftables proxier was handed an IPv6 state/);
  });

  it('combines both families into one batch: one metainfo first, then the IPv4 table’s commands, then the IPv6 table’s', () => {
    const four = proxier('IPv4').dryRun(v4);
    const six = proxier('IPv6').dryRun(v6);
    const both = [...definition.dryRun.combine!(four, six)].join('');
    const doc = JSON.parse(both) as { nftables: Record<string, unknown>[] };
    expect(doc.nftables.filter((c) => 'metainfo' in c)).toHaveLength(1);
    expect(doc.nftables[0]).toEqual({ metainfo: { json_schema_version: 1 } });
    expect(commands(both)).toEqual([...commands(four), ...commands(six)]);
    expect(() => [...definition.dryRun.combine!('not json', six)]).toThrow(/not a batch/);
    // The same batch from both families' pieces, as --dry-run writes it.
    const pieces = definition.dryRun.combine!(proxier('IPv4').dryRunChunks(v4), proxier('IPv6').dryRunChunks(v6));
    expect([...pieces].join('')).toBe(both);
  });

  it('sends warnings to stderr, never into the output, which stays a loadable batch', () => {
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const bad = servicePort({ name: 'bad', clusterIPs: ['198.18.100.66'], externalIPs: ['2001:2:0:200::1'], endpoints: [endpoint('198.19.1.11')] });
    // (Configured CIDRs are validated when flags are parsed, and model/config.ts gives each family its own.)
    const out = new NftablesProxier({ config: config({ clusterCIDRs: ['198.19.0.0/16'] }), family: 'IPv4', iptablesBackend: 'auto' }).dryRun(
      desiredState([bad], {}, 'IPv4'),
    );
    const written = stderr.mock.calls.map((c) => String(c[0])).join('');
    expect(written).toContain('warning: nftables IPv4: service port "shop/bad:http" left out: not an IPv4 address: "2001:2:0:200::1"');
    expect(out).not.toContain('warning');
    expect(out).not.toContain('198.18.100.66');
    expect(() => JSON.parse(out)).not.toThrow();
  });
});
