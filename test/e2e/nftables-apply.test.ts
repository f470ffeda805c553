// The nftables proxier against the real nft and kernel, in network namespaces of its own: full and
// incremental batches, failures, periodic resyncs, --dry-run and --cleanup.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, runOk } from '../../src/exec.ts';
import { NftError, NftablesProxier } from '../../src/modes/nftables/index.ts';
import type { NftablesModeOptions } from '../../src/modes/nftables/index.ts';
import type { ChangeSet, DesiredState, ServicePort } from '../../src/model/types.ts';
import { newPrefix } from '../../src/lab/sandbox/topology.ts';
import { config, desiredState, endpoint, servicePort } from '../unit/nftables-fixtures.ts';

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

/** The table as nft prints it, lines sorted (element order within a set is the kernel's). */
async function table(ns: string): Promise<string[]> {
  const r = await nft(ns, 'list', 'table', 'ip', 'kube-proxy-ts');
  return r.stdout
    .split('\n')
    .map((l) => l.trim().replace(/,$/, ''))
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

const updated = (key: string): ChangeSet => ({ added: [], updated: [key], removed: [] });

function proxier(ns: string, extra: Partial<NftablesModeOptions> = {}): NftablesProxier {
  return new NftablesProxier({ config: config(), iptablesBackend: 'auto', netns: ns, ...extra });
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
      const changed = svc(7);
      const gone = changed.clusterEndpoints[3]!;
      changed.clusterEndpoints = changed.clusterEndpoints.map((e, j) => (j === 3 ? endpoint('198.19.250.250', 8080, { node: 'node-b' }) : e));
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
    expect(sizes[0]).toBeLessThan(1000);
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
    expect(repaired.bytes).toBeGreaterThan(0);
    expect((await nft(ns, 'list', 'chain', 'ip', 'kube-proxy-ts', 'services')).stdout).toContain('vmap @service-ips');
    // A deleted table is seen by every periodic sync (3: chains only).
    await nft(ns, 'delete', 'table', 'ip', 'kube-proxy-ts');
    const restored = await p.sync(state, null);
    expect(restored.bytes).toBeGreaterThan(0);
    expect((await nft(ns, 'list', 'chain', 'ip', 'kube-proxy-ts', 'services')).stdout).toContain('vmap @service-ips');
    expect(p.stats.fullSyncs).toBe(3);
    await p.close();
  });

  it('cleanup deletes the table, and does not fail when there is none', async () => {
    const ns = await netns('clean');
    const p = proxier(ns);
    await p.sync(desiredState([svc(1)]), null);
    await p.cleanup();
    expect((await run(['ip', 'netns', 'exec', ns, 'nft', 'list', 'tables'])).stdout).not.toContain('kube-proxy-ts');
    await p.cleanup();
    // After cleanup the next sync installs the table again.
    expect((await p.sync(desiredState([svc(1)]), updated('shop/svc-1:http'))).full).toBe(true);
    await p.close();
  });

  it('an IPv6 state gets an ip6 table that nft accepts', async () => {
    const ns = await netns('v6');
    const v6: DesiredState = desiredState(
      [
        servicePort({
          name: 'v6',
          family: 'IPv6',
          clusterIPs: ['fd00:10::a'],
          nodePort: 30080,
          loadBalancerIPs: ['fd00:200::1'],
          loadBalancerSourceRanges: ['fd00::/8'],
          affinityTimeoutSeconds: 30,
          endpoints: [endpoint('fd00:1::b'), endpoint('fd00:2::c', 8080, { node: 'node-b' })],
        }),
      ],
      { clusterCIDRs: ['198.19.0.0/16', 'fd00:1::/48'] },
      'IPv6',
    );
    const p = proxier(ns, { config: config({ clusterCIDRs: ['198.19.0.0/16', 'fd00:1::/48'] }) });
    const r = await p.sync(v6, null);
    expect(r.full).toBe(true);
    const listing = (await nft(ns, 'list', 'table', 'ip6', 'kube-proxy-ts')).stdout;
    expect(listing).toContain('fd00:10::a . tcp . 80');
    expect(listing).toContain('fd00:1::/48');
    await p.cleanup();
    await p.close();
  });
});
