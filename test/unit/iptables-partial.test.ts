// The nat patch of a partial sync: only the changed service ports' rules and chains.
import { describe, expect, it } from 'vitest';
import type { ServicePort } from '../../src/model/types.ts';
import { createProxier } from '../../src/modes/iptables/index.ts';
import { natPatch, type PortChange, toInstalled } from '../../src/modes/iptables/proxier.ts';
import { renderContext, renderServicePort } from '../../src/modes/iptables/render.ts';
import { config, desiredState, endpoint, servicePort } from './model-fixtures.ts';

const ctx = renderContext(desiredState([]));
const render = (sp: ServicePort) => renderServicePort(sp, ctx);
const lines = (text: string | null) => (text ?? '').split('\n').filter((l) => l && l !== '*nat' && l !== 'COMMIT');
const e = (i: number) => endpoint(`198.19.1.${i}`, 8080);
const web = (eps: number[], more: Partial<ServicePort> = {}) =>
  servicePort({ namespace: 'shop', name: 'web', clusterIPs: ['198.18.100.10'], nodePort: 30080, endpoints: eps.map(e), ...more });
const change = (before: ServicePort | null, after: ServicePort | null): PortChange => ({
  old: before ? toInstalled(render(before)) : undefined,
  next: after ? render(after) : null,
});

describe('natPatch', () => {
  it('writes nothing when nothing renders differently', () => {
    expect(natPatch([])).toBeNull();
    expect(natPatch([{ old: undefined, next: null }])).toBeNull();
  });

  it('adds a service: its chains, then its frontends at the top of KUBE-SERVICES and in KUBE-NODEPORTS', () => {
    const patch = lines(natPatch([change(null, web([11, 12]))]));
    const r = render(web([11, 12]));
    expect(patch.filter((l) => l.startsWith(':')).sort()).toEqual([...r.chains, ...r.endpoints].map((c) => `:${c.name} - [0:0]`).sort());
    expect(patch.filter((l) => l.includes('KUBE-SERVICES'))).toEqual([`-I KUBE-SERVICES 1 ${r.frontends[0]?.spec}`]);
    expect(patch.filter((l) => l.includes('KUBE-NODEPORTS'))).toEqual([`-A KUBE-NODEPORTS ${r.frontends[1]?.spec}`]);
    expect(patch.some((l) => l.startsWith('-D ') || l.startsWith('-X '))).toBe(false);
  });

  it('an endpoint change leaves KUBE-SERVICES and the unchanged endpoint chains alone', () => {
    const before = render(web([11, 12]));
    const after = render(web([11, 13]));
    const patch = lines(natPatch([change(web([11, 12]), web([11, 13]))]));
    const [kept, gone] = before.endpoints.map((c) => c.name);
    const added = after.endpoints.map((c) => c.name).find((n) => n !== kept);
    expect(patch.some((l) => /KUBE-SERVICES|KUBE-NODEPORTS/.test(l))).toBe(false);
    expect(patch.some((l) => l.includes(`${kept} `) && !l.includes('-j'))).toBe(false); // not redeclared
    expect(patch).toContain(`:${added} - [0:0]`);
    expect(patch).toContain(`:${gone} - [0:0]`);
    expect(patch.at(-1)).toBe(`-X ${gone}`);
    // The SVC and EXT chains are flushed and refilled.
    for (const ch of before.chains) expect(patch).toContain(`:${ch.name} - [0:0]`);
  });

  it('removes a service: frontends deleted by exact spec, then every chain flushed and deleted', () => {
    const r = render(web([11, 12]));
    const patch = lines(natPatch([change(web([11, 12]), null)]));
    for (const fe of r.frontends) expect(patch).toContain(`-D ${fe.chain} ${fe.spec}`);
    const all = [...r.chains, ...r.endpoints].map((c) => c.name);
    expect(patch.filter((l) => l.startsWith('-X ')).sort()).toEqual(all.map((n) => `-X ${n}`).sort());
    // Deletions of chains come after the rules that referenced them are gone.
    const firstX = patch.findIndex((l) => l.startsWith('-X '));
    expect(patch.slice(firstX).every((l) => l.startsWith('-X '))).toBe(true);
    expect(patch.findIndex((l) => l.startsWith('-D '))).toBeLessThan(firstX);
  });

  it('a service losing its endpoints loses its frontends and chains (the REJECT is in filter)', () => {
    const patch = lines(natPatch([change(web([11]), web([]))]));
    expect(patch.filter((l) => l.startsWith('-D '))).toHaveLength(2);
    expect(patch.filter((l) => l.startsWith('-A ') || l.startsWith('-I '))).toHaveLength(0);
  });

  it('rewrites the endpoint chains when affinity is switched on', () => {
    const patch = lines(natPatch([change(web([11, 12]), web([11, 12], { affinityTimeoutSeconds: 60 }))]));
    expect(patch.filter((l) => l.includes('--set'))).toHaveLength(2);
    expect(patch.some((l) => l.startsWith('-X '))).toBe(false);
  });

  it('a frontend change deletes the old rule and inserts the new one', () => {
    const patch = lines(natPatch([change(web([11]), web([11], { port: 81 }))]));
    expect(patch.filter((l) => l.startsWith('-D KUBE-SERVICES ') && l.includes('--dport 80 '))).toHaveLength(1);
    expect(patch.filter((l) => l.startsWith('-I KUBE-SERVICES 1 ') && l.includes('--dport 81 '))).toHaveLength(1);
    expect(patch.some((l) => l.includes('KUBE-NODEPORTS'))).toBe(false);
  });

  it('is a small fraction of the whole table for one changed service among many', () => {
    const ports = Array.from({ length: 500 }, (_, i) =>
      servicePort({
        namespace: 'ns',
        name: `s${i}`,
        clusterIPs: [`198.18.${100 + (i >> 8)}.${i & 255}`],
        endpoints: Array.from({ length: 10 }, (_, j) => endpoint(`198.19.${i >> 4}.${((i & 15) << 4) + j}`, 8080)),
      }),
    );
    const full = createProxier({ config: config(), iptablesBackend: 'nft', family: 'IPv4' }).dryRun(desiredState(ports));
    const victim = ports[250] as ServicePort;
    const moved = servicePort({ namespace: 'ns', name: 's250', clusterIPs: victim.clusterIPs, endpoints: victim.allEndpoints.slice(1) });
    const patch = natPatch([{ old: toInstalled(render(victim)), next: render(moved) }]) ?? '';
    const svc = render(victim).chains[0]?.name as string;
    expect(patch.length * 200).toBeLessThan(full.length);
    // Every chain the patch declares belongs to the changed service port.
    const own = new Set([...render(victim).chains, ...render(victim).endpoints].map((c) => c.name));
    for (const l of lines(patch).filter((x) => x.startsWith(':'))) expect(own.has(l.slice(1, l.indexOf(' ')))).toBe(true);
    expect(patch).toContain(`:${svc} - [0:0]`);
  });
});
