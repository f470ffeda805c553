// The nftables proxier against the real nft and kernel, in network namespaces of its own: full and
// incremental batches, failures, periodic resyncs, --dry-run (one family, and both combined in one batch)
// and --cleanup (per family).
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, runOk } from '../../src/exec.ts';
import { definition, NftError, NftablesProxier } from '../../src/modes/nftables/index.ts';
import type { NftablesModeOptions } from '../../src/modes/nftables/index.ts';
import type { ChangeSet, DesiredState, ServicePort } from '../../src/model/types.ts';
import { newPrefix } from '../../src/lab/sandbox/topology.ts';
import { config, desiredState, endpoint, servicePort, withEndpoints } from '../unit/nftables-fixtures.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, nft): run them as root');

const prefix = newPrefix();
const namespaces: string[] = [];
let tmp = '';

async function netns(name: string): Promise<string> {
  const ns = `${prefix}-${name}`;
  await runOk(['ip', 'netns', 'add', ns]);
  namespaces.push(ns);
  return ns;
}

const nft = (ns: string, ...args: string[]) => runOk(['ip', 'netns', 'exec', ns, 'nft', ...args]);

/**
 * The table as nft prints it, lines sorted: element order within a set is the kernel's (an interval set's depends
 * on the order they were added in), so the set's braces go on lines of their own, never with its first or last element.
 */
async function table(ns: string, family: 'ip' | 'ip6' = 'ip'): Promise<string[]> {
  const r = await nft(ns, 'list', 'table', family, 'kube-proxy-ts');
  return r.stdout
    .split('\n')
    .flatMap((line) => {
      let l = line.trim().replace(/,$/, '');
      const out: string[] = [];
      if (l.startsWith('elements = { ')) {
        out.push('elements = {');
        l = l.slice('elements = { '.length);
      }
      if (l.endsWith(' }')) out.push(l.slice(0, -2), '}');
      else out.push(l);
      return out;
    })
    .filter((l) => l.length > 0)
    .sort();
}

async function mapValues(ns: string, name: string): Promise<string> {
  return (await nft(ns, 'list', 'map', 'ip', 'kube-proxy-ts', name)).stdout;
}

function svc(i: number, eps = 10): ServicePort {
  return servicePort({
    name: `svc-${i}`,
    clusterIPs: [`198.18.${64 + (i >> 8)}.${i & 255}`],
    nodePort: i % 10 === 0 ? 30000 + i : null,
    endpoints: Array.from({ length: eps }, (_, j) =>
      endpoint(`198.19.${(i >> 4) & 255}.${((i & 15) << 4) + j + 1}`, 8080, { node: j % 2 ? 'node-b' : 'node-a' }),
    ),
  });
}

const updated = (key: string): ChangeSet => ({ added: [], updated: [key], removed: [], previous: new Map() });

function proxier(ns: string, extra: Partial<NftablesModeOptions> = {}): NftablesProxier {
  return new NftablesProxier({ config: config(), family: 'IPv4', iptablesBackend: 'auto', netns: ns, ...extra });
}

/** The tables in a namespace, as "family name". */
async function tables(ns: string): Promise<string[]> {
  return (await nft(ns, 'list', 'tables')).stdout
    .split('\n')
    .map((l) => l.replace(/^table /, '').trim())
    .filter((l) => l.length > 0)
    .sort();
}

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'nft-e2e-'));
});

afterAll(async () => {
  for (const ns of namespaces) await run(['ip', 'netns', 'del', ns]);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('nftables proxier, applied', () => {
  it('installs the table; --dry-run output loaded into a fresh namespace gives the same table', async () => {
    const live = await netns('live');
    const fresh = await netns('dry');
    const state = desiredState([
      svc(1),
      svc(10),
      servicePort({
        name: 'lb',
        clusterIPs: ['198.18.100.30'],
        loadBalancerIPs: ['198.18.200.20'],
        loadBalancerSourceRanges: ['198.18.0.0/24'],
        externalTrafficPolicy: 'Local',
        endpoints: [endpoint('198.19.1.11'), endpoint('198.19.2.11', 8443, { node: 'node-b' })],
      }),
      servicePort({ name: 'sticky', clusterIPs: ['198.18.100.50'], affinityTimeoutSeconds: 600, endpoints: [endpoint('198.19.1.11')] }),
      servicePort({ name: 'empty', clusterIPs: ['198.18.100.40'], nodePort: 30040 }),
    ]);
    const p = proxier(live);
    const r = await p.sync(state, null);
    expect(r.full).toBe(true);
    expect(r.servicePortsWritten).toBe(5);
    const file = path.join(tmp, 'dry.json');
    await writeFile(file, p.dryRun(state));
    await nft(fresh, '-j', '-f', file);
    expect(await table(fresh)).toEqual(await table(live));
    expect((await table(live)).join('\n')).toContain('jump svc-affinity-600');
    await p.close();
  });

  it('a one-endpoint change sends a small batch of the same size at 200 and 2,000 services, and the kernel has it', async () => {
    const sizes: number[] = [];
    for (const n of [200, 2000]) {
      const ns = await netns(`inc${n}`);
      const ports = Array.from({ length: n }, (_, i) => svc(i));
      const p = proxier(ns);
      await p.sync(desiredState(ports), null);
      const seven = svc(7);
      const gone = seven.clusterEndpoints[3]!;
      const changed = withEndpoints(
        seven,
        seven.clusterEndpoints.map((e, j) => (j === 3 ? endpoint('198.19.250.250', 8080, { node: 'node-b' }) : e)),
      );
      ports[7] = changed;
      const r = await p.sync(desiredState(ports), updated(changed.key));
      expect(r.full).toBe(false);
      expect(r.servicePortsWritten).toBe(1);
      sizes.push(r.bytes);
      const addrs = await mapValues(ns, 'svc-addr');
      expect(addrs).toContain('198.19.250.250');
      expect(addrs).not.toContain(`: ${gone.ip},`);
      await p.close();
    }
    expect(sizes[0]).toBeLessThan(1100);
    expect(sizes[1]).toBe(sizes[0]);
  });

  it('a failed batch leaves the previous table, is counted, and the next sync replaces the table', async () => {
    const ns = await netns('fail');
    const flag = path.join(tmp, 'fail-now');
    const wrapper = path.join(tmp, 'nft-wrapper');
    await writeFile(wrapper, `#!/bin/sh\nif [ -e '${flag}' ]; then echo 'Error: forced failure' >&2; exit 1; fi\nexec nft "$@"\n`);
    await chmod(wrapper, 0o755);
    const p = proxier(ns, { nftBinary: wrapper });
    const before = [svc(1, 2), svc(2, 2)];
    await p.sync(desiredState(before), null);
    const after = [svc(1, 2), svc(2, 3)];
    await writeFile(flag, '');
    const err = await p.sync(desiredState(after), updated(after[1]!.key)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).message).toContain('forced failure');
    expect(p.stats.failures).toBe(1);
    // The kernel still has the two-endpoint service.
    expect(await mapValues(ns, 'svc-addr')).not.toContain('198.19.0.35');
    await rm(flag);
    const r = await p.sync(desiredState(after), updated(after[1]!.key));
    expect(r.full).toBe(true);
    expect(r.servicePortsWritten).toBe(2);
    expect(await mapValues(ns, 'svc-addr')).toContain('198.19.0.35');
    expect(p.stats).toMatchObject({ failures: 1, fullSyncs: 2 });
    await p.close();
  });

  it('a first sync into a namespace without the table applies it in steps (the same table as one batch); with the table there, one batch', async () => {
    // Every 50th a load balancer with source ranges: interval elements (firewall-allow) in every part.
    const lb = (i: number) =>
      servicePort({
        name: `lb-${i}`,
        clusterIPs: [`198.18.${64 + (i >> 8)}.${i & 255}`],
        loadBalancerIPs: [`198.18.200.${i >> 1}`],
        loadBalancerSourceRanges: [`198.18.${i >> 2}.0/24`, `198.19.${i >> 2}.128/25`],
        endpoints: [endpoint('198.19.1.11')],
      });
    const state = desiredState(Array.from({ length: 300 }, (_, i) => (i % 50 === 0 ? lb(i) : svc(i))));
    const phasedNs = await netns('phased');
    const phased = proxier(phasedNs, { parallelApply: 3, stepsMinElements: 0, partElements: 60 });
    await phased.sync(state, null);
    expect(phased.stats).toMatchObject({ fullSyncs: 1, fullSyncsInParts: 1 });
    const oneNs = await netns('onebatch');
    const one = proxier(oneNs, { parallelApply: 1 });
    await one.sync(state, null);
    expect(one.stats).toMatchObject({ fullSyncs: 1, fullSyncsInParts: 0 });
    expect(await table(phasedNs)).toEqual(await table(oneNs));
    expect((await table(phasedNs)).join('\n')).toContain('198.18.62.0/24');
    // A restarted proxy finds its table: replacing it must be one transaction (traffic is flowing through it).
    const restarted = proxier(phasedNs, { parallelApply: 3, stepsMinElements: 0, partElements: 60 });
    await restarted.sync(state, null);
    expect(restarted.stats).toMatchObject({ fullSyncs: 1, fullSyncsInParts: 0 });
    expect(await table(phasedNs)).toEqual(await table(oneNs));
    for (const p of [phased, one, restarted]) await p.close();
  });

  it('when a step fails, the first sync replaces what was applied with one batch, and succeeds', async () => {
    const ns = await netns('phasefail');
    // nft fails on a batch of elements without a table (the parts of the steps), and runs anything else.
    const wrapper = path.join(tmp, 'nft-no-element-batches');
    await writeFile(
      wrapper,
      `#!/bin/sh\nfor f; do :; done\nif grep -qs '"element"' "$f" && ! grep -qs '{"add":{"table"' "$f"; then echo 'Error: forced failure' >&2; exit 1; fi\nexec nft "$@"\n`,
    );
    await chmod(wrapper, 0o755);
    const state = desiredState(Array.from({ length: 50 }, (_, i) => svc(i)));
    const p = proxier(ns, { nftBinary: wrapper, parallelApply: 2, stepsMinElements: 0, partElements: 30 });
    const r = await p.sync(state, null);
    expect(r.full).toBe(true);
    expect(p.stats).toMatchObject({ fullSyncs: 1, fullSyncsInParts: 0, failures: 0 });
    const ref = await netns('phasefail-ref');
    const one = proxier(ref, { parallelApply: 1 });
    await one.sync(state, null);
    expect(await table(ns)).toEqual(await table(ref));
    for (const x of [p, one]) await x.close();
  });

  it('a periodic resync keeps the table (and affinity) when intact, and replaces it when it changed behind our back', async () => {
    const ns = await netns('resync');
    const p = proxier(ns, { verifyRulesEvery: 2 });
    const state = desiredState([
      servicePort({ name: 'sticky', clusterIPs: ['198.18.100.50'], affinityTimeoutSeconds: 600, endpoints: [endpoint('198.19.1.11')] }),
    ]);
    await p.sync(state, null);
    // A remembered client, as the packet path would leave it.
    await nft(ns, 'add', 'element', 'ip', 'kube-proxy-ts', 'svc-aff-present', '{ 198.19.1.12 . 198.18.100.50 . tcp . 80 timeout 10m }');
    const quiet = await p.sync(state, null); // periodic sync 1: chains checked
    expect(quiet).toMatchObject({ full: true, bytes: 0, servicePortsWritten: 0 });
    expect((await nft(ns, 'list', 'set', 'ip', 'kube-proxy-ts', 'svc-aff-present')).stdout).toContain('198.19.1.12');
    // A flushed chain is seen when rules are counted (periodic sync 2).
    await nft(ns, 'flush', 'chain', 'ip', 'kube-proxy-ts', 'services');
    const repaired = await p.sync(state, null);
    expect(p.drift()).toEqual([expect.stringMatching(/^chain services has 0 rules, \d+ installed$/)]);
    expect(repaired.bytes).toBeGreaterThan(0);
    expect((await nft(ns, 'list', 'chain', 'ip', 'kube-proxy-ts', 'services')).stdout).toContain('vmap @service-ips');
    // A deleted table is seen by every periodic sync (3: chains only).
    await nft(ns, 'delete', 'table', 'ip', 'kube-proxy-ts');
    const restored = await p.sync(state, null);
    expect(p.drift()).toContain('chain services is missing');
    expect(restored.bytes).toBeGreaterThan(0);
    expect((await nft(ns, 'list', 'chain', 'ip', 'kube-proxy-ts', 'services')).stdout).toContain('vmap @service-ips');
    expect(p.stats.fullSyncs).toBe(3);
    await p.close();
  });

  it('cleanup deletes its family’s tables (ours and kube-proxy’s), leaves the other family’s alone, and does not fail when there are none', async () => {
    const ns = await netns('clean');
    const p = proxier(ns);
    await p.sync(desiredState([svc(1)]), null);
    const v6 = proxier(ns, { family: 'IPv6' });
    await v6.sync(desiredState([], {}, 'IPv6'), null);
    // kube-proxy's own nftables tables, as a node moving from kube-proxy has them.
    await nft(ns, 'add', 'table', 'ip', 'kube-proxy');
    await nft(ns, 'add', 'table', 'ip6', 'kube-proxy');
    expect(await tables(ns)).toEqual(['ip kube-proxy', 'ip kube-proxy-ts', 'ip6 kube-proxy', 'ip6 kube-proxy-ts']);
    await p.cleanup();
    expect(await tables(ns)).toEqual(['ip6 kube-proxy', 'ip6 kube-proxy-ts']);
    await p.cleanup();
    await v6.cleanup();
    expect(await tables(ns)).toEqual([]);
    // After cleanup the next sync installs the table again.
    expect((await p.sync(desiredState([svc(1)]), updated('shop/svc-1:http'))).full).toBe(true);
    await p.close();
    await v6.close();
  });

  it('an IPv6 proxier programs the ip6 table only', async () => {
    const ns = await netns('v6');
    const cfg = config({ clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] });
    const v6: DesiredState = desiredState(
      [
        servicePort({
          name: 'v6',
          family: 'IPv6',
          clusterIPs: ['2001:2:0:100::10'],
          nodePort: 30080,
          loadBalancerIPs: ['2001:2:0:200::1'],
          loadBalancerSourceRanges: ['2001:2::/64'],
          affinityTimeoutSeconds: 30,
          endpoints: [endpoint('2001:2:0:11::11'), endpoint('2001:2:0:12::11', 8080, { node: 'node-b' })],
        }),
      ],
      cfg,
      'IPv6',
    );
    const p = proxier(ns, { config: cfg, family: 'IPv6' });
    const r = await p.sync(v6, null);
    expect(r.full).toBe(true);
    expect(await tables(ns)).toEqual(['ip6 kube-proxy-ts']);
    const listing = (await nft(ns, 'list', 'table', 'ip6', 'kube-proxy-ts')).stdout;
    expect(listing).toContain('2001:2:0:100::10 . tcp . 80');
    expect(listing).toContain('2001:2:0:10::/60');
    // nft prints the family's default reject (ICMPv6 port unreachable in an ip6 table) as plain `reject`.
    expect(listing).toMatch(/chain reject-chain \{\s+reject\s+\}/);
    expect(listing).toContain('ip6 daddr @cluster-ips reject');
    await expect(p.sync(desiredState([svc(1)]), null)).rejects.toThrow(/IPv6 nftables proxier was handed an IPv4 state/);
    await p.cleanup();
    await p.close();
  });

  it('the combined --dry-run of both families loads as one batch and gives the tables both proxiers install', async () => {
    const live = await netns('live2');
    const fresh = await netns('dry2');
    const cfg = config({ clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] });
    const four = desiredState([svc(1), svc(10)], cfg);
    const six = desiredState(
      [
        servicePort({
          name: 'v6',
          family: 'IPv6',
          clusterIPs: ['2001:2:0:100::10'],
          nodePort: 30081,
          endpoints: [endpoint('2001:2:0:11::11')],
        }),
      ],
      cfg,
      'IPv6',
    );
    const p4 = proxier(live, { config: cfg });
    const p6 = proxier(live, { config: cfg, family: 'IPv6' });
    await p4.sync(four, null);
    await p6.sync(six, null);
    const both = [...definition.dryRun.combine!(p4.dryRun(four), p6.dryRun(six))].join('');
    const file = path.join(tmp, 'both.json');
    await writeFile(file, both);
    // Checked without applying first (nft -c), then applied: one command, one transaction.
    await nft(fresh, '-c', '-j', '-f', file);
    expect(await tables(fresh)).toEqual([]);
    await runOk(['ip', 'netns', 'exec', fresh, ...definition.dryRun.loadCommand('IPv4', file)]);
    expect(await tables(fresh)).toEqual(['ip kube-proxy-ts', 'ip6 kube-proxy-ts']);
    expect(await table(fresh, 'ip')).toEqual(await table(live, 'ip'));
    expect(await table(fresh, 'ip6')).toEqual(await table(live, 'ip6'));
    await p4.close();
    await p6.close();
  });
});
