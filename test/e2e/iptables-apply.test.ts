// The iptables proxier against the real kernel, inside network namespaces, on both backends: full
// and partial syncs, failures, stale chains, cleanup, backend detection.
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../src/exec.ts';
import type { ChangeSet, DesiredState, ServicePort } from '../../src/model/types.ts';
import { createProxier, detectBackend, RestoreError } from '../../src/modes/iptables/index.ts';
import type { Backend } from '../../src/modes/iptables/restore.ts';
import { desiredState, endpoint, type PortSpec, servicePort } from '../unit/model-fixtures.ts';
import { createNetns, deleteAllNetns, iptablesOptions, recorder, referenceSnapshot, restore, save, snapshot, sysctl, tablesOf } from './iptables-helpers.ts';

afterEach(deleteAllNetns);

/** Service i: ClusterIP 198.18.100.i, NodePort 30000+i, `eps` endpoints 198.19.i.1.. (half on node-b). */
function svc(i: number, eps = 3, more: Partial<PortSpec> = {}): ServicePort {
  return servicePort({
    namespace: 'bench',
    name: `svc${i}`,
    clusterIPs: [`198.18.100.${i}`],
    nodePort: 30000 + i,
    endpoints: Array.from({ length: eps }, (_, j) => endpoint(`198.19.${i}.${j + 1}`, 8080, { node: j % 2 ? 'node-b' : 'node-a' })),
    ...more,
  });
}

function cluster(n: number): ServicePort[] {
  return Array.from({ length: n }, (_, i) => svc(i + 1));
}

function replace(ports: ServicePort[], ...changed: ServicePort[]): ServicePort[] {
  const byKey = new Map(ports.map((p) => [p.key, p]));
  for (const p of changed) byKey.set(p.key, p);
  return [...byKey.values()];
}

const changes = (c: Partial<ChangeSet>): ChangeSet => ({ added: [], updated: [], removed: [], previous: new Map(), ...c });

/** Deletes, behind the proxier's back, the one rule of `table` that iptables-save prints as `which` selects. */
async function deleteSavedRule(ns: string, backend: Backend, table: string, which: (line: string) => boolean): Promise<void> {
  const rules = (await save(ns, backend, table)).split('\n').filter(which);
  expect(rules).toHaveLength(1);
  await restore(ns, backend, `*${table}\n${(rules[0] as string).replace(/^-A /, '-D ')}\nCOMMIT\n`);
}

/** Chain names a restore input declares or names as a target. */
function chainsIn(input: string): Set<string> {
  return new Set(input.match(/KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}/g) ?? []);
}

function ownChains(state: DesiredState, key: string): Set<string> {
  const text = createProxier({ config: state.config, iptablesBackend: 'nft', family: state.family }).dryRun({
    ...state,
    servicePorts: new Map([[key, state.servicePorts.get(key) as ServicePort]]),
  });
  return chainsIn(text);
}

async function jumpCounts(ns: string, backend: Backend): Promise<number[]> {
  const text = (await save(ns, backend, 'nat')) + (await save(ns, backend, 'filter'));
  const jumps = text.split('\n').filter((l) => /^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) .*-j KUBE-/.test(l) && !l.endsWith('-j KUBE-FIREWALL'));
  const counts = new Map<string, number>();
  for (const j of jumps) counts.set(j, (counts.get(j) ?? 0) + 1);
  return [...counts.values()];
}

describe.each(['nft', 'legacy'] as const)('iptables mode on the %s backend', (backend) => {
  it('a full sync installs exactly what the dry run describes; restarts and resyncs never duplicate jumps', async () => {
    const ns = await createNetns();
    const state = desiredState([
      ...cluster(5),
      svc(6, 0),
      svc(7, 2, { externalTrafficPolicy: 'Local', loadBalancerIPs: ['198.18.200.7'], loadBalancerSourceRanges: ['198.18.0.0/24'] }),
    ]);
    const first = createProxier(iptablesOptions(ns, backend));
    const r = await first.sync(state, null);
    expect(r.full).toBe(true);
    expect(r.servicePortsWritten).toBe(7);
    expect(r.bytes).toBeGreaterThan(5000);
    const installed = await snapshot(ns, backend);
    expect(installed).toBe(await referenceSnapshot(state, backend));
    expect(await jumpCounts(ns, backend)).toEqual(Array(12).fill(1));

    await first.sync(state, null); // periodic resync
    const restarted = createProxier(iptablesOptions(ns, backend)); // a new process
    await restarted.sync(state, null);
    expect(await snapshot(ns, backend)).toBe(installed);
    expect(await jumpCounts(ns, backend)).toEqual(Array(12).fill(1));
  });

  it('a periodic sync of an untouched table only checks it; one that lost a rule is rewritten', async () => {
    const ns = await createNetns();
    const rec = recorder();
    const proxier = createProxier(iptablesOptions(ns, backend, { onRestore: rec.onRestore }));
    const state = desiredState([...cluster(5), svc(6, 0)]);
    await proxier.sync(state, null);
    const installed = await snapshot(ns, backend);
    rec.inputs.length = 0;
    const r = await proxier.sync(state, null);
    expect(r).toMatchObject({ full: true, bytes: 0 });
    expect(rec.inputs).toEqual([]);
    expect(proxier.drift?.()).toEqual([]);
    // A rule of one service's chain disappears behind the proxier's back: the next periodic sync repairs it,
    // and says what it found (what /debug/drift shows).
    await deleteSavedRule(ns, backend, 'nat', (l) => /^-A KUBE-SVC-\S+ .*--probability 0.333/.test(l) && l.includes('bench/svc3:http'));
    expect(await snapshot(ns, backend)).not.toBe(installed);
    const repaired = await proxier.sync(state, null);
    expect(proxier.drift?.()).toEqual([expect.stringMatching(/^nat: chain KUBE-SVC-\S+ has (\d+) rules, \d+ written$/)]);
    expect(repaired.full).toBe(true);
    expect(repaired.bytes).toBeGreaterThan(0);
    expect(await snapshot(ns, backend)).toBe(installed);
    // So does a REJECT rule of the filter table.
    await deleteSavedRule(ns, backend, 'filter', (l) => l.includes('-j REJECT') && l.includes('bench/svc6:http') && l.includes('KUBE-SERVICES'));
    expect((await proxier.sync(state, null)).bytes).toBeGreaterThan(0);
    expect(await snapshot(ns, backend)).toBe(installed);
  });

  it('a partial sync rewrites only the changed service ports and ends where a full sync would', async () => {
    const ns = await createNetns();
    const rec = recorder();
    const proxier = createProxier(iptablesOptions(ns, backend, { onRestore: rec.onRestore }));
    let ports = cluster(30);
    await proxier.sync(desiredState(ports), null);

    // One endpoint of one service replaced.
    const s7 = svc(7);
    const moved = svc(7, 0, { endpoints: [...s7.allEndpoints.slice(1), endpoint('198.19.7.99', 8080)] });
    ports = replace(ports, moved);
    rec.inputs.length = 0;
    let state = desiredState(ports);
    let r = await proxier.sync(state, changes({ updated: [moved.key] }));
    expect(r).toMatchObject({ full: false, servicePortsWritten: 1 });
    expect(rec.inputs.map(tablesOf)).toEqual([['nat']]); // filter did not change: not written
    expect(r.bytes).toBe(rec.inputs[0]?.length);
    const mine = new Set([...ownChains(state, moved.key), ...ownChains(desiredState([s7]), s7.key)]);
    for (const ch of chainsIn(rec.inputs[0] as string)) expect(mine.has(ch)).toBe(true);
    expect(rec.inputs[0]).not.toMatch(/KUBE-SERVICES|KUBE-NODEPORTS/);
    expect(await snapshot(ns, backend)).toBe(await referenceSnapshot(state, backend));

    // A service removed, one added, one losing all its endpoints.
    const gone = svc(3);
    const added = svc(31);
    const emptied = svc(8, 0);
    ports = replace(
      ports.filter((p) => p.key !== gone.key),
      added,
      emptied,
    );
    rec.inputs.length = 0;
    state = desiredState(ports);
    r = await proxier.sync(state, changes({ added: [added.key], removed: [gone.key], updated: [emptied.key] }));
    expect(r).toMatchObject({ full: false, servicePortsWritten: 3 });
    // The REJECT of the emptied service is in place before nat stops DNATing it.
    expect(rec.inputs.map(tablesOf)).toEqual([['filter', 'nat']]);
    expect(rec.inputs[0]).toContain('svc8:http has no endpoints');
    expect(await snapshot(ns, backend)).toBe(await referenceSnapshot(state, backend));
    const natRules = (await save(ns, backend, 'nat')).split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES '));
    expect(natRules.at(-1)).toContain('-j KUBE-NODEPORTS');

    // It gets endpoints back: nat DNATs before the REJECT goes.
    const back = svc(8);
    ports = replace(ports, back);
    rec.inputs.length = 0;
    state = desiredState(ports);
    await proxier.sync(state, changes({ updated: [back.key] }));
    expect(rec.inputs.map(tablesOf)).toEqual([['nat', 'filter']]);
    expect(rec.inputs[0]?.slice(rec.inputs[0].indexOf('*filter'))).not.toContain('has no endpoints');
    expect(await snapshot(ns, backend)).toBe(await referenceSnapshot(state, backend));

    // Nothing changed: nothing written.
    rec.inputs.length = 0;
    r = await proxier.sync(state, changes({}));
    expect(r).toMatchObject({ full: false, bytes: 0, servicePortsWritten: 0 });
    expect(rec.inputs).toEqual([]);
  });

  it('a failing restore names the line, leaves the previous rules in force, and the next sync is full', async () => {
    const ns = await createNetns();
    const rec = recorder();
    const proxier = createProxier(iptablesOptions(ns, backend, { onRestore: rec.onRestore }));
    const ports = cluster(10);
    await proxier.sync(desiredState(ports), null);

    // Someone deletes a rule behind the proxier's back; the partial sync that deletes it too fails.
    const victim = svc(5);
    await deleteSavedRule(ns, backend, 'nat', (l) => l.startsWith('-A KUBE-SERVICES') && l.includes('-d 198.18.100.5/32'));
    const before = await snapshot(ns, backend);
    const s6 = svc(6, 1);
    const next = desiredState(
      replace(
        ports.filter((p) => p.key !== victim.key),
        s6,
      ),
    );
    const err = await proxier.sync(next, changes({ removed: [victim.key], updated: [s6.key] })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RestoreError);
    const re = err as RestoreError;
    expect(re.table).toBe('nat');
    expect(re.lineText).toMatch(/^-D KUBE-SERVICES .*bench\/svc5:http cluster IP/);
    expect(re.message).toContain(`at line ${re.line}`);
    // Nothing of the failed transaction was applied (svc6 still has its 3 endpoints).
    expect(await snapshot(ns, backend)).toBe(before);

    // The next sync is full whatever it is told, and repairs everything.
    rec.inputs.length = 0;
    const r = await proxier.sync(next, changes({ updated: [s6.key] }));
    expect(r.full).toBe(true);
    expect(await snapshot(ns, backend)).toBe(await referenceSnapshot(next, backend));
  });

  it('when nat fails after filter was widened, filter goes back as it was', async () => {
    const ns = await createNetns();
    const rec = recorder();
    const proxier = createProxier(iptablesOptions(ns, backend, { onRestore: rec.onRestore }));
    const ports = cluster(5);
    await proxier.sync(desiredState(ports), null);
    // svc2's NodePort rule disappears behind the proxier's back: emptying svc2 then fails in nat
    // (at its -D), after filter was given svc2's REJECT rules in the same restore.
    await deleteSavedRule(ns, backend, 'nat', (l) => l.startsWith('-A KUBE-NODEPORTS') && l.includes('--dport 30002 '));
    const before = await snapshot(ns, backend);
    const emptied = svc(2, 0);
    const next = desiredState(replace(ports, emptied));
    rec.inputs.length = 0;
    const err = await proxier.sync(next, changes({ updated: [emptied.key] })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RestoreError);
    expect((err as RestoreError).table).toBe('nat');
    expect(rec.inputs.map(tablesOf)).toEqual([['filter', 'nat'], ['filter']]); // the write, then the filter rollback
    expect(rec.inputs[0]).toContain('svc2:http has no endpoints');
    expect(rec.inputs[1]).not.toContain('has no endpoints');
    expect(await snapshot(ns, backend)).toBe(before); // no REJECT left behind for a service nat still serves
    const r = await proxier.sync(next, changes({ updated: [emptied.key] }));
    expect(r.full).toBe(true);
    expect(await snapshot(ns, backend)).toBe(await referenceSnapshot(next, backend));
  });

  it('a failing iptables-restore binary is reported with its exit status and stderr', async () => {
    const ns = await createNetns();
    const proxier = createProxier(iptablesOptions(ns, backend, { binaries: { restore: 'false' } }));
    const err = await proxier.sync(desiredState(cluster(2)), null).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RestoreError);
    expect((err as RestoreError).code).toBe(1);
    expect((err as RestoreError).binary).toBe('false');
    expect(await save(ns, backend, 'nat')).not.toContain('KUBE-');
  });

  it('a full sync removes stale chains of ours and kube-proxy’s, and leaves everything else alone', async () => {
    const ns = await createNetns();
    // A previous run with other services, a duplicated jump, kubelet's chains, a user rule, and
    // another program's chain that still jumps into one of the stale chains.
    const old = desiredState([svc(40), svc(41)]);
    await restore(ns, backend, createProxier(iptablesOptions(ns, backend)).dryRun(old));
    await restore(
      ns,
      backend,
      [
        '*nat',
        ':KUBE-MARK-DROP - [0:0]',
        ':KUBE-XLB-OLDKUBEPROXYCHAIN - [0:0]',
        ':OTHER - [0:0]',
        '-A KUBE-MARK-DROP -j MARK --or-mark 0x8000',
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -j KUBE-XLB-OLDKUBEPROXYCHAIN',
        `-A OTHER -j ${[...ownChains(old, svc(41).key)].find((c) => c.startsWith('KUBE-SVC-'))}`,
        'COMMIT',
        '*filter',
        ':KUBE-FIREWALL - [0:0]',
        '-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP',
        '-A INPUT -j KUBE-FIREWALL',
        '-A FORWARD -s 198.18.9.9/32 -j DROP',
        'COMMIT',
        '',
      ].join('\n'),
    );
    const state = desiredState(cluster(3));
    const proxier = createProxier(iptablesOptions(ns, backend));
    await proxier.sync(state, null);
    const nat = await save(ns, backend, 'nat');
    const filter = await save(ns, backend, 'filter');
    for (const ch of ownChains(state, svc(1).key)) expect(nat).toContain(`:${ch} `);
    // svc40 is gone; svc41's SVC chain and its endpoint chains stay, since OTHER still uses them.
    for (const ch of ownChains(old, svc(40).key)) expect(nat).not.toContain(ch);
    for (const ch of [...ownChains(old, svc(41).key)].filter((c) => /KUBE-(SVC|SEP)-/.test(c))) expect(nat).toContain(`:${ch} `);
    expect(nat).not.toContain('KUBE-XLB-OLDKUBEPROXYCHAIN');
    expect(nat).toContain('-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000');
    expect(filter).toContain('-A INPUT -j KUBE-FIREWALL');
    expect(filter).toContain('-A FORWARD -s 198.18.9.9/32 -j DROP');
    expect(await jumpCounts(ns, backend)).toEqual(Array(12).fill(1));
  });

  it('cleanup removes our chains and jumps on both backends and nothing else', async () => {
    const ns = await createNetns();
    const other: Backend = backend === 'nft' ? 'legacy' : 'nft';
    const proxier = createProxier(iptablesOptions(ns, backend));
    await proxier.sync(desiredState(cluster(4)), null);
    // kube-proxy leftovers in the other backend, and rules that are not ours in both.
    await restore(ns, other, createProxier(iptablesOptions(ns, other)).dryRun(desiredState(cluster(2))));
    for (const b of [backend, other]) {
      await restore(
        ns,
        b,
        '*filter\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A FORWARD -s 198.18.9.9/32 -j DROP\nCOMMIT\n*nat\n-A POSTROUTING -s 198.18.9.0/24 -j MASQUERADE\nCOMMIT\n',
      );
      await restore(ns, b, '*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n');
    }
    // Kubelet's KUBE-FIREWALL stays as it is, and with it the localnet guard the proxier wrote there (route_localnet stays 1).
    const kubeletLines = async (b: Backend) => (await save(ns, b, 'filter')).split('\n').filter((l) => l.includes('KUBE-FIREWALL'));
    const kubelet = { [backend]: await kubeletLines(backend), [other]: await kubeletLines(other) };
    await proxier.cleanup();
    for (const b of [backend, other]) {
      const all = ['nat', 'filter', 'mangle'].map((t) => save(ns, b, t));
      const text = (await Promise.all(all)).join('\n');
      expect(text.split('\n').filter((l) => /KUBE-/.test(l))).toEqual(kubelet[b]);
      expect(text).toContain('-A FORWARD -s 198.18.9.9/32 -j DROP');
      expect(text).toContain('-A POSTROUTING -s 198.18.9.0/24 -j MASQUERADE');
    }
    await proxier.cleanup(); // nothing left to do
    // And a sync after cleanup installs everything again.
    const r = await proxier.sync(desiredState(cluster(4)), changes({}));
    expect(r.full).toBe(true);
    expect(await jumpCounts(ns, backend)).toEqual(Array(12).fill(1));
  });

  it('programs IPv6 with the ip6tables binaries, and each family cleans up only its own rules', async () => {
    const ns = await createNetns();
    const a6 = endpoint('2001:2:0:11::11', 8080);
    const ports = [
      servicePort({
        namespace: 'shop',
        name: 'web6',
        family: 'IPv6',
        clusterIPs: ['2001:2:0:100::10'],
        nodePort: 30081,
        affinityTimeoutSeconds: 300,
        endpoints: [a6, endpoint('2001:2:0:12::11', 8080, { node: 'node-b' })],
      }),
      servicePort({ namespace: 'shop', name: 'empty6', family: 'IPv6', clusterIPs: ['2001:2:0:100::30'] }),
    ];
    const state6 = desiredState(ports, { clusterCIDRs: ['198.19.0.0/16', '2001:2:0:10::/60'] }, 'IPv6');
    const v6 = createProxier(iptablesOptions(ns, backend, { family: 'IPv6' }));
    const v4 = createProxier(iptablesOptions(ns, backend));
    await v4.sync(desiredState(cluster(2)), null);
    const ipv4Rules = await snapshot(ns, backend);
    expect((await v6.sync(state6, null)).full).toBe(true);

    const nat6 = await save(ns, backend, 'nat', true);
    expect(nat6).toContain('--to-destination [2001:2:0:11::11]:8080');
    expect(nat6).toMatch(/-m recent --rcheck --seconds 300 --reap --name KUBE-SEP-\S+ --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -j KUBE-SEP-/);
    expect(nat6).toMatch(/! -d ::1\/128 .*-j KUBE-NODEPORTS/);
    expect(await save(ns, backend, 'filter', true)).toMatch(/-d 2001:2:0:100::30\/128 .*has no endpoints.* -j REJECT --reject-with icmp6-port-unreachable/);
    expect(await snapshot(ns, backend, true)).toBe(await referenceSnapshot(state6, backend));
    expect(await snapshot(ns, backend)).toBe(ipv4Rules); // the IPv4 tables are the IPv4 proxier's

    await v6.cleanup();
    for (const table of ['nat', 'filter']) expect(await save(ns, backend, table, true)).not.toContain('KUBE-');
    expect(await snapshot(ns, backend)).toBe(ipv4Rules);
    await v6.sync(state6, null);
    await v4.cleanup();
    expect(await save(ns, backend, 'nat')).not.toContain('KUBE-SERVICES');
    expect(await snapshot(ns, backend, true)).toBe(await referenceSnapshot(state6, backend));
  });

  it('localhost NodePorts: route_localnet and the localnet guard with them, ! -d 127.0.0.0/8 without', async () => {
    const on = await createNetns();
    expect(await sysctl(on, 'net.ipv4.conf.all.route_localnet')).toBe('0');
    await createProxier(iptablesOptions(on, backend)).sync(desiredState(cluster(1)), null);
    expect(await sysctl(on, 'net.ipv4.conf.all.route_localnet')).toBe('1');
    const filter = (await save(on, backend, 'filter')).split('\n');
    for (const chain of ['INPUT', 'OUTPUT']) expect(filter.find((l) => l.startsWith(`-A ${chain} `))).toBe(`-A ${chain} -j KUBE-FIREWALL`);
    expect(filter.filter((l) => l.startsWith('-A KUBE-FIREWALL '))).toEqual([expect.stringContaining('-j DROP')]);
    expect((await save(on, backend, 'nat')).split('\n').find((l) => l.includes('-j KUBE-NODEPORTS') && l.startsWith('-A KUBE-SERVICES'))).not.toContain(
      '127.0.0.0/8',
    );

    const off = await createNetns();
    await createProxier(iptablesOptions(off, backend)).sync(desiredState(cluster(1), { localhostNodePorts: false }), null);
    expect(await sysctl(off, 'net.ipv4.conf.all.route_localnet')).toBe('0');
    expect(await save(off, backend, 'filter')).not.toContain('KUBE-FIREWALL');
    expect(await save(off, backend, 'nat')).toMatch(/! -d 127\.0\.0\.0\/8 .*-j KUBE-NODEPORTS/);
    // IPv6 never: the IPv6 proxier leaves route_localnet alone.
    const v6 = await createNetns();
    await createProxier(iptablesOptions(v6, backend, { family: 'IPv6' })).sync(desiredState([], {}, 'IPv6'), null);
    expect(await sysctl(v6, 'net.ipv4.conf.all.route_localnet')).toBe('0');
    expect(await save(v6, backend, 'filter', true)).not.toContain('KUBE-FIREWALL');
  });
});

describe('backend detection', () => {
  it('picks nft on an empty host, the backend holding KUBE-* rules otherwise; a forced backend wins', async () => {
    const ns = await createNetns();
    expect(await detectBackend({ netns: ns })).toBe('nft');
    await restore(ns, 'legacy', '*filter\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n');
    expect(await detectBackend({ netns: ns })).toBe('legacy');
    // Non-KUBE rules elsewhere weigh less than KUBE-* ones.
    await restore(ns, 'nft', `*filter\n${Array.from({ length: 20 }, (_, i) => `-A INPUT -s 198.18.9.${i}/32 -j DROP`).join('\n')}\nCOMMIT\n`);
    expect(await detectBackend({ netns: ns })).toBe('legacy');

    const auto = createProxier(iptablesOptions(ns, 'auto'));
    await auto.sync(desiredState(cluster(1)), null);
    expect(await save(ns, 'legacy', 'nat')).toContain('KUBE-SERVICES');
    expect(await save(ns, 'nft', 'nat')).not.toContain('KUBE-SERVICES');
    await auto.cleanup();

    const forced = createProxier(iptablesOptions(ns, 'nft'));
    await forced.sync(desiredState(cluster(1)), null);
    expect(await save(ns, 'nft', 'nat')).toContain('KUBE-SERVICES');
    expect(await save(ns, 'legacy', 'nat')).not.toContain('KUBE-SERVICES');
  });
});

describe('namespaces', () => {
  it('are all removed', async () => {
    const ns = await createNetns();
    await deleteAllNetns();
    const list = await run(['ip', 'netns', 'list']);
    expect(list.stdout).not.toContain(ns);
  });
});
