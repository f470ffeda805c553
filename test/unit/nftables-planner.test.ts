// Full and incremental batches of the nftables planner: what a change sends, and that it does not
// depend on the size of the cluster.
import { describe, expect, it } from 'vitest';
import { type FullStep, Planner } from '../../src/modes/nftables/planner.ts';
import { SlotAllocator } from '../../src/modes/nftables/slots.ts';
import { MAX_ENDPOINTS, SLOT_BASE } from '../../src/modes/nftables/layout.ts';
import type { ServicePort } from '../../src/model/types.ts';
import { commands, config, desiredState, endpoint, servicePort, withEndpoints } from './nftables-fixtures.ts';

const planner = (now?: () => number) => new Planner({ family: 'IPv4', config: config(), ...(now ? { now } : {}) });

function svc(i: number, eps = 2, extra: Partial<Parameters<typeof servicePort>[0]> = {}): ServicePort {
  return servicePort({
    name: `svc-${i}`,
    clusterIPs: [`198.18.${64 + (i >> 8)}.${i & 255}`],
    endpoints: Array.from({ length: eps }, (_, j) =>
      endpoint(`198.19.${(i >> 4) & 255}.${((i & 15) << 4) + j + 1}`, 8080, { node: j === 0 ? 'node-a' : 'node-b' }),
    ),
    ...extra,
  });
}

/** [verb, kind, name-or-chain, element count] per command, for compact assertions. */
const summary = (json: string | null) =>
  json === null
    ? []
    : commands(json).map(([verb, kind, body]) => [verb, kind, (body.name ?? body.chain) as string, Array.isArray(body.elem) ? body.elem.length : undefined]);

/**
 * The table that applying `batches` in order leaves, as nft builds it: chains with their rules (flush empties one),
 * sets with their elements (each must be added once), whatever the commands' grouping.
 */
function applied(batches: string[]): { chains: Record<string, string[]>; sets: Record<string, string[]> } {
  const chains: Record<string, string[]> = {};
  const sets: Record<string, string[]> = {};
  for (const json of batches) {
    for (const [verb, kind, body] of commands(json)) {
      const name = body.name as string;
      if (kind === 'table') {
        for (const k of Object.keys(chains)) delete chains[k];
        for (const k of Object.keys(sets)) delete sets[k];
      } else if (kind === 'chain' && verb === 'add') chains[name] ??= [];
      else if (kind === 'chain' && verb === 'flush') chains[name] = [];
      else if (kind === 'rule') chains[body.chain as string]!.push(JSON.stringify(body.expr));
      else if (kind === 'set' || kind === 'map') sets[name] ??= [];
      else if (kind === 'element') {
        for (const e of body.elem as unknown[]) {
          const text = JSON.stringify(e);
          if (sets[name]!.includes(text)) throw new Error(`${name}: ${text} added twice`);
          sets[name]!.push(text);
        }
      }
    }
  }
  for (const list of Object.values(sets)) list.sort();
  return { chains, sets };
}

describe('full()', () => {
  it('replaces the table in one batch: add, delete, add, then chains, sets, elements and rules', () => {
    const p = planner();
    const plan = p.full(desiredState([svc(1)]));
    const cmds = commands(plan.json!);
    expect(cmds.slice(0, 3).map(([v, k]) => `${v} ${k}`)).toEqual(['add table', 'delete table', 'add table']);
    expect(cmds.filter(([v, k]) => v === 'add' && k === 'chain').map(([, , b]) => b.name)).toContain('nat-prerouting');
    expect(cmds.filter(([v, k]) => v === 'add' && (k === 'set' || k === 'map'))).toHaveLength(p.schemas.size);
    expect(plan.full).toBe(true);
    expect(plan.written).toBe(1);
    expect(p.elementCount('svc-addr')).toBe(2);
    expect(p.elementCount('cluster-cidrs')).toBe(1);
    expect(() => p.full(desiredState([svc(1)]))).toThrow(/already has a record/);
  });

  it('a large table: its elements in groups of 1,000 (made as the batch is written), each once, the batch the same every time it is written', () => {
    const p = planner();
    const ports = Array.from({ length: 450 }, (_, i) => svc(i));
    const plan = p.full(desiredState(ports));
    const text = plan.json!;
    const adds = summary(text).filter(([v, k]) => v === 'add' && k === 'element');
    // 450 ports of 5 elements each: a group closes at 1,000 elements (200, 200, then 50 ports and 250 elements).
    // The shared elements follow, grouped the same way: 450 hairpin keys fill the last group to 700, 300 of the
    // 450 cluster IPs close it, the other 150 make one more.
    expect(adds.filter(([, , set]) => set === 'service-ips').map(([, , , n]) => n)).toEqual([200, 200, 50]);
    expect(adds.filter(([, , set]) => set === 'cluster-ips').map(([, , , n]) => n)).toEqual([300, 150]);
    expect(adds.reduce((n, [, , , count]) => n + (count as number), 0)).toBe(plan.elementsAdded);
    const elems = (set: string) => commands(text).flatMap(([v, k, b]) => (v === 'add' && k === 'element' && b.name === set ? (b.elem as unknown[]) : []));
    expect(elems('svc-addr')).toHaveLength(p.elementCount('svc-addr'));
    expect(new Set(elems('svc-addr').map((e) => JSON.stringify(e))).size).toBe(900);
    // Later changes replace the record's strings, never the batch's: written after them, it is what it was.
    p.update(desiredState(ports.slice(1)), [ports[0]!.key]);
    expect(plan.batch.text()).toBe(text);
  });

  it('in steps: the same table as the one batch, whatever order the parts commit in; nothing hooked before the last step; each element once', () => {
    // Varied endpoint counts (count rules) and some ports with affinity (their elements jump to timeout chains).
    const servicePorts = Array.from({ length: 450 }, (_, i) => svc(i, 1 + (i % 4), i % 100 === 7 ? { affinityTimeoutSeconds: 300 + (i % 300) } : {}));
    const steps = planner().fullInSteps(desiredState(servicePorts), 250);
    const yielded: Exclude<FullStep, { kind: 'progress' }>[] = [];
    let progress = 0;
    let r = steps.next();
    for (; !r.done; r = steps.next()) {
      if (r.value.kind === 'progress') progress++;
      else yielded.push(r.value);
    }
    // Each service port claimed and rendered in one step.
    expect(progress).toBe(450);
    const plan = r.value;
    const [head, ...parts] = yielded;
    expect(head!.kind).toBe('head');
    expect(parts.every((s) => s.kind === 'elements')).toBe(true);
    expect(parts.length).toBeGreaterThan(3);
    expect(parts.at(-1)!.elements).toBe(plan.elementsAdded);
    // full() gives the same one batch, whatever order the state lists the service ports in (they go in key order).
    expect(planner().full(desiredState(servicePorts)).json).toBe(plan.json);
    expect(planner().full(desiredState(servicePorts.toReversed())).json).toBe(plan.json);

    const oneBatch = applied([plan.json!]);
    const texts = parts.map((s) => s.batch.text());
    expect(applied([head!.batch.text(), ...texts, plan.hooks.text()])).toEqual(oneBatch);
    expect(applied([head!.batch.text(), ...texts.toReversed(), plan.hooks.text()])).toEqual(oneBatch);
    // Only hooks has base chains (what the kernel runs packets through).
    const hooked = (json: string) => commands(json).filter(([v, k, b]) => v === 'add' && k === 'chain' && 'hook' in b).length;
    expect([head!.batch.text(), ...texts].reduce((n, t) => n + hooked(t), 0)).toBe(0);
    expect(hooked(plan.hooks.text())).toBe(hooked(plan.json!));
    // A part alone finds every chain its elements jump to: in the head or in itself.
    const created = (json: string) => new Set(commands(json).flatMap(([v, k, b]) => (v === 'add' && k === 'chain' ? [b.name as string] : [])));
    const headChains = created(head!.batch.text());
    for (const t of texts) {
      const targets = [...t.matchAll(/"(?:goto|jump)":\{"target":"([^"]+)"\}/g)].map((m) => m[1]!);
      const own = created(t);
      expect(targets.filter((c) => !headChains.has(c) && !own.has(c))).toEqual([]);
    }
    expect(texts.some((t) => t.includes('svc-affinity-store-'))).toBe(true);
  });

  it('refuses a state of the other family', () => {
    expect(() => planner().full(desiredState([], {}, 'IPv6'))).toThrow(/IPv4/);
    expect(() => planner().update(desiredState([]), [])).toThrow(/before full/);
  });
});

describe('update()', () => {
  it('sends nothing when nothing changed', () => {
    const p = planner();
    const s = desiredState([svc(1), svc(2)]);
    p.full(s);
    const plan = p.update(s, ['shop/svc-1:http', 'shop/svc-2:http']);
    expect(plan.json).toBeNull();
    expect(plan.written).toBe(0);
  });

  it('one endpoint replaced: one address deleted, one added, nothing else', () => {
    const p = planner();
    p.full(desiredState([svc(1), svc(2)]));
    const one = svc(1);
    const changed = withEndpoints(one, [one.clusterEndpoints[0]!, endpoint('198.19.9.9', 8080, { node: 'node-b' })]);
    const plan = p.update(desiredState([changed, svc(2)]), [changed.key]);
    expect(summary(plan.json)).toEqual([
      ['delete', 'element', 'svc-addr', 1],
      ['add', 'element', 'svc-addr', 1],
    ]);
    const add = commands(plan.json!)[1]![2] as { elem: unknown[] };
    expect(add.elem).toEqual([[{ concat: ['198.18.64.1', 'tcp', 80, SLOT_BASE + 1] }, '198.19.9.9']]);
    expect(plan.written).toBe(1);
  });

  it('sends a batch whose size does not depend on the size of the cluster', () => {
    const sizes = [50, 3000].map((n) => {
      const ports = Array.from({ length: n }, (_, i) => svc(i, 10));
      const p = planner();
      p.full(desiredState(ports));
      const seven = svc(7, 10);
      const changed = withEndpoints(seven, seven.clusterEndpoints.slice(1));
      ports[7] = changed;
      return p.update(desiredState(ports), [changed.key]).json!.length;
    });
    expect(sizes[0]).toBeGreaterThan(0);
    expect(sizes[1]).toBe(sizes[0]);
  });

  it('a new distinct endpoint count refills the choice chain; the last one of a count removes its rule', () => {
    const p = planner();
    p.full(desiredState([svc(1, 2), svc(2, 2)]));
    const plan = p.update(desiredState([svc(1, 2), svc(2, 3)]), ['shop/svc-2:http']);
    const s = summary(plan.json);
    expect(s).toContainEqual(['flush', 'chain', 'svc-select', undefined]);
    expect(s.filter(([v, k]) => v === 'flush' && k === 'chain')).toHaveLength(1);
    expect(commands(plan.json!).filter(([v, k, b]) => v === 'add' && k === 'rule' && JSON.stringify(b).includes('numgen'))).toHaveLength(2);
    const back = p.update(desiredState([svc(1, 2), svc(2, 2)]), ['shop/svc-2:http']);
    expect(commands(back.json!).filter(([v, k, b]) => v === 'add' && k === 'rule' && JSON.stringify(b).includes('numgen'))).toHaveLength(1);
  });

  it('removing a service port deletes its elements; a shared hairpin pair stays while another port uses it', () => {
    const p = planner();
    const a = svc(1);
    const b = servicePort({ name: 'other', clusterIPs: ['198.18.100.99'], endpoints: [endpoint(a.clusterEndpoints[0]!.ip, 9090)] });
    p.full(desiredState([a, b]));
    expect(p.elementCount('hairpin')).toBe(1);
    const plan = p.update(desiredState([b]), [a.key]);
    const s = summary(plan.json);
    expect(s).toContainEqual(['delete', 'element', 'svc-addr', 2]);
    expect(s).toContainEqual(['delete', 'element', 'service-ips', 1]);
    expect(s.some(([, , name]) => name === 'hairpin')).toBe(false);
    const last = p.update(desiredState([]), [b.key]);
    expect(summary(last.json)).toContainEqual(['delete', 'element', 'hairpin', 1]);
    expect(p.elementCount('hairpin')).toBe(0);
  });

  it('two service ports claiming one frontend: the first key owns it, the other takes over when it goes', () => {
    const p = planner();
    const a = servicePort({ name: 'a', clusterIPs: ['198.18.100.1'], externalIPs: ['198.18.200.5'], endpoints: [endpoint('198.19.1.1')] });
    const b = servicePort({ name: 'b', clusterIPs: ['198.18.100.2'], externalIPs: ['198.18.200.5'], endpoints: [endpoint('198.19.1.2')] });
    p.full(desiredState([b, a]));
    const owner = () =>
      p
        .elements('svc-addr')
        .filter(([k]) => k.includes('198.18.200.5'))
        .map(([, v]) => v);
    expect(owner()).toEqual(['"198.19.1.1"']);
    const plan = p.update(desiredState([b]), [a.key]);
    expect(owner()).toEqual(['"198.19.1.2"']);
    // The external frontend's elements move from a to b: deleted and added again in one batch.
    const cmds = summary(plan.json);
    expect(cmds.findIndex(([v]) => v === 'add')).toBeGreaterThan(cmds.findIndex(([v]) => v === 'delete'));
    expect(
      p
        .elements('service-ips')
        .map(([k]) => JSON.parse(k).concat[0])
        .sort(),
    ).toEqual(['198.18.100.2', '198.18.200.5']);
  });

  it('affinity timeout chains come with the first service port of that timeout and go with the last', () => {
    const p = planner();
    p.full(desiredState([svc(1)]));
    const on = p.update(desiredState([svc(1, 2, { affinityTimeoutSeconds: 300 })]), ['shop/svc-1:http']);
    const s = summary(on.json);
    expect(s.slice(0, 2)).toEqual([
      ['add', 'chain', 'svc-affinity-300', undefined],
      ['add', 'chain', 'svc-affinity-store-300', undefined],
    ]);
    expect(s).toContainEqual(['add', 'element', 'svc-affinity', 1]);
    const off = p.update(desiredState([svc(1)]), ['shop/svc-1:http']);
    const o = summary(off.json);
    const delVmap = o.findIndex(([v, , n]) => v === 'delete' && n === 'svc-affinity');
    const delChain = o.findIndex(([v, k, n]) => v === 'delete' && k === 'chain' && n === 'svc-affinity-300');
    expect(delVmap).toBeGreaterThanOrEqual(0);
    expect(delChain).toBeGreaterThan(delVmap);
    expect(o).toContainEqual(['flush', 'chain', 'svc-affinity-store-300', undefined]);
    expect(o).toContainEqual(['delete', 'chain', 'svc-affinity-store-300', undefined]);
  });

  it('affinity: surviving endpoints keep their slots; a freed slot is not reused within the timeout', () => {
    let now = 0;
    const p = planner(() => now);
    const eps = [endpoint('198.19.1.1'), endpoint('198.19.1.2'), endpoint('198.19.1.3')];
    const sp = (list: typeof eps) => servicePort({ name: 'web', clusterIPs: ['198.18.100.10'], affinityTimeoutSeconds: 10, endpoints: list });
    p.full(desiredState([sp(eps)]));
    const slotOf = () => new Map(p.elements('svc-addr').map(([k, v]) => [JSON.parse(v!), JSON.parse(k).concat[3] - SLOT_BASE]));
    expect([...slotOf()]).toEqual([
      ['198.19.1.1', 0],
      ['198.19.1.2', 1],
      ['198.19.1.3', 2],
    ]);
    now = 1000;
    p.update(desiredState([sp([eps[0]!, eps[2]!, endpoint('198.19.1.4')])]), ['shop/web:http']);
    expect(slotOf().get('198.19.1.1')).toBe(0);
    expect(slotOf().get('198.19.1.3')).toBe(2);
    expect(slotOf().get('198.19.1.4')).toBe(3);
    now = 12_000;
    p.update(desiredState([sp([eps[0]!, eps[2]!, endpoint('198.19.1.4'), endpoint('198.19.1.5')])]), ['shop/web:http']);
    expect(slotOf().get('198.19.1.5')).toBe(1);
  });
});

describe('SlotAllocator', () => {
  it('gives dense slots to a new set and keeps them while endpoints stay', () => {
    const s = new SlotAllocator(() => 0);
    expect(s.assign('x', ['a', 'b', 'c'], 1000)).toEqual([0, 1, 2]);
    expect(s.assign('x', ['c', 'a'], 1000)).toEqual([2, 0]);
    expect(s.assign('x', ['a', 'c', 'd'], 1000)).toEqual([0, 2, 3]);
    s.release('x');
    expect(s.assign('x', ['d'], 1000)).toEqual([0]);
    expect(s.size).toBe(1);
  });

  it('reuses the slot held longest when every slot is used or held', () => {
    let now = 0;
    const s = new SlotAllocator(() => now);
    const ids = Array.from({ length: MAX_ENDPOINTS }, (_, i) => `e${i}`);
    s.assign('x', ids, 60_000);
    now = 1;
    s.assign('x', ids.slice(1), 60_000); // frees slot 0
    now = 2;
    s.assign('x', ids.slice(2), 60_000); // frees slot 1
    expect(s.assign('x', [...ids.slice(2), 'new'], 60_000).at(-1)).toBe(0);
  });
});

describe('the node', () => {
  it('a change of its addresses renders every service port again (LB IPs admitted as sources when a range holds the node)', () => {
    const lb = servicePort({
      name: 'lb',
      clusterIPs: ['198.18.100.30'],
      loadBalancerIPs: ['198.18.200.20'],
      loadBalancerSourceRanges: ['198.18.0.0/24'],
      endpoints: [endpoint('198.19.1.11')],
    });
    const at = (addresses: string[]) => ({ ...desiredState([lb]), node: { name: 'node-a', labels: {}, zone: '', addresses, podCIDRs: [], deleting: false } });
    const p = planner();
    p.full(at(['198.18.0.1', '2001:2::1']));
    const sources = () => p.elements('firewall-allow').map(([k]) => JSON.parse(k).concat[3].prefix.addr);
    expect(sources()).toEqual(['198.18.0.0', '198.18.200.20']);
    const moved = p.update(at(['10.0.0.1']), []);
    expect(summary(moved.json)).toEqual([['delete', 'element', 'firewall-allow', 1]]);
    expect(sources()).toEqual(['198.18.0.0']);
    expect(p.update(at(['10.0.0.1', '2001:2::1']), []).json).toBeNull();
  });
});

describe('invalid values and warnings', () => {
  const bad = servicePort({
    name: 'bad',
    clusterIPs: ['198.18.100.1'],
    externalIPs: ['not-an-ip'],
    endpoints: [endpoint('198.19.1.1')],
  });

  it('leaves a service port with a value that fails the one rule out whole, and reports it', () => {
    const p = planner();
    const plan = p.full(desiredState([bad, svc(2)]));
    expect(plan.issues).toEqual([{ key: 'shop/bad:http', message: 'not an IPv4 address: "not-an-ip"', leftOut: true }]);
    expect(p.elements('service-ips').map(([k]) => JSON.parse(k).concat[0])).toEqual(['198.18.64.2']);
    expect(p.elements('cluster-ips').map(([k]) => JSON.parse(k))).toEqual(['198.18.64.2']);
    expect([...p.portKeys()]).toEqual(['shop/svc-2:http']);
  });

  it('an installed service port that turns invalid loses every element; valid again, it gets them back', () => {
    const p = planner();
    const good = servicePort({ name: 'bad', clusterIPs: ['198.18.100.1'], endpoints: [endpoint('198.19.1.1')] });
    p.full(desiredState([good]));
    const gone = p.update(desiredState([bad]), [bad.key]);
    expect(gone.issues.map((i) => i.leftOut)).toEqual([true]);
    expect(summary(gone.json)).toEqual(
      expect.arrayContaining([
        ['delete', 'element', 'service-ips', 1],
        ['delete', 'element', 'cluster-ips', 1],
        ['delete', 'element', 'hairpin', 1],
      ]),
    );
    expect(summary(gone.json).filter(([v, k]) => v === 'add' && k === 'element')).toEqual([]);
    const back = p.update(desiredState([good]), [good.key]);
    expect(back.issues).toEqual([]);
    expect(summary(back.json)).toContainEqual(['add', 'element', 'service-ips', 1]);
  });

  it('refuses endpoints of the other family as invalid values', () => {
    const mixed = servicePort({ name: 'mixed', clusterIPs: ['198.18.100.2'], endpoints: [endpoint('198.19.1.1'), endpoint('2001:2:0:11::1')] });
    expect(planner().full(desiredState([mixed])).issues).toEqual([{ key: 'shop/mixed:http', message: 'not an IPv4 address: "2001:2:0:11::1"', leftOut: true }]);
  });

  it(`routes a service port with more than ${MAX_ENDPOINTS} endpoints to the first ${MAX_ENDPOINTS}, with a warning`, () => {
    const many = Array.from({ length: MAX_ENDPOINTS + 1 }, (_, i) => endpoint(`198.19.${128 + (i >> 8)}.${i & 255}`, 8080, { node: 'node-b' }));
    const p = planner();
    const plan = p.full(desiredState([servicePort({ name: 'huge', clusterIPs: ['198.18.100.3'], endpoints: many })]));
    expect(plan.issues).toEqual([{ key: 'shop/huge:http', message: `more than ${MAX_ENDPOINTS} endpoints: the rest are left out`, leftOut: false }]);
    expect(p.elementCount('svc-addr')).toBe(MAX_ENDPOINTS);
  });
});
