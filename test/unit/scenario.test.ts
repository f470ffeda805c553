// The scenario format (src/lab/sandbox/scenario.ts, test/scenarios/README.md): loading, validation of both
// families, per-mode expectations, and which files every mode must pass.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  expectationFor,
  formatProbeTarget,
  isDualStack,
  listScenarioFiles,
  loadScenario,
  OWN_SCENARIOS_DIR,
  parseProbeTarget,
  parseScenario,
  ScenarioError,
  validateScenario,
  writeObjectsFile,
} from '../../src/lab/sandbox/scenario.ts';
import { clusterCIDRs } from '../../src/lab/sandbox/topology.ts';

const tmp = mkdtempSync(path.join(tmpdir(), 'kpt-scenario-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The problems a scenario text has (none: []). */
function problemsOf(text: string): string[] {
  try {
    parseScenario(text, 'test.yaml');
    return [];
  } catch (e) {
    if (e instanceof ScenarioError) return e.problems;
    throw e;
  }
}

describe('the repository scenarios', () => {
  const files = listScenarioFiles();
  const own = files.filter((f) => f.startsWith(`${OWN_SCENARIOS_DIR}${path.sep}`));

  it('are all valid, named after their file, with unique names (shared ones included when present)', () => {
    expect(own.length).toBeGreaterThanOrEqual(10);
    const names = new Set<string>();
    for (const f of files) {
      const s = loadScenario(f);
      expect(s.probes.length).toBeGreaterThan(0);
      expect(names.has(s.name), `duplicate scenario name ${s.name}`).toBe(false);
      names.add(s.name);
    }
    for (const f of own) expect(loadScenario(f).name).toBe(path.basename(f, '.yaml'));
  });

  it('cover both families: some run dual-stack, and the proxy is then told both cluster CIDRs', () => {
    const dual = own.map(loadScenario).filter(isDualStack);
    expect(dual.map((s) => s.name)).toEqual(expect.arrayContaining(['dual-stack-services', 'node-ports']));
    expect(clusterCIDRs(dual[0]!.pods)).toEqual(['198.19.0.0/16', '2001:2:0:10::/60']);
    expect(clusterCIDRs(loadScenario(path.join(OWN_SCENARIOS_DIR, 'cluster-ip-general.yaml')).pods)).toEqual(['198.19.0.0/16']);
  });

  it('parse pods, probes, defaults and per-mode expectations', () => {
    const s = loadScenario(path.join(OWN_SCENARIOS_DIR, 'node-ports.yaml'));
    expect(s.pods).toContainEqual({
      name: 'np-a',
      node: 'node-a',
      ip: '198.19.1.171',
      ip6: '2001:2:0:11::171',
      ports: [
        { port: 8080, protocol: 'tcp' },
        { port: 5353, protocol: 'udp' },
      ],
    });
    const localhost = s.probes.find((p) => p.to.ip === '127.0.0.1')!;
    expect(localhost).toMatchObject({ from: 'node-a', to: { ip: '127.0.0.1', port: 31201, protocol: 'tcp' }, tries: 20, timeoutMs: 1500 });
    expect(expectationFor(localhost, 'iptables')).toEqual({ backends: ['np-a', 'np-b'], sourceNot: '127.0.0.1' });
    expect(expectationFor(localhost, 'nftables')).toEqual({ refused: true });
    expect(expectationFor(localhost)).toEqual(localhost.expect);
    expect(localhost.modes?.nftables?.why).toMatch(/route_localnet/);
  });

  it('write their objects as a v1 List', () => {
    const s = loadScenario(path.join(OWN_SCENARIOS_DIR, 'session-affinity-client-ip.yaml'));
    const file = path.join(tmp, 'objects.yaml');
    writeObjectsFile(s, file);
    expect(parseYaml(readFileSync(file, 'utf8'))).toEqual({ apiVersion: 'v1', kind: 'List', items: s.objects });
  });
});

describe('listScenarioFiles', () => {
  const own = path.join(tmp, 'own');
  const shared = path.join(tmp, 'shared');
  mkdirSync(own);
  writeFileSync(path.join(own, 'b.yaml'), '');
  writeFileSync(path.join(own, 'a.yaml'), '');
  writeFileSync(path.join(own, 'notes.md'), '');

  it("lists the repository's own, sorted, and works without the shared ones", () => {
    expect(listScenarioFiles({ own, shared: path.join(tmp, 'nowhere') })).toEqual([path.join(own, 'a.yaml'), path.join(own, 'b.yaml')]);
  });

  it('adds the shared ones after them when they exist', () => {
    mkdirSync(shared);
    writeFileSync(path.join(shared, 'c.yaml'), '');
    expect(listScenarioFiles({ own, shared })).toEqual([path.join(own, 'a.yaml'), path.join(own, 'b.yaml'), path.join(shared, 'c.yaml')]);
  });

  it('refuses to run nothing: the own scenarios are required', () => {
    expect(() => listScenarioFiles({ own: path.join(tmp, 'missing'), shared })).toThrow(/scenarios are missing/);
    const empty = path.join(tmp, 'empty');
    mkdirSync(empty);
    expect(() => listScenarioFiles({ own: empty, shared })).toThrow(/no scenario files/);
  });
});

describe('probe targets', () => {
  it('parse IPv4 and bracketed IPv6, canonically', () => {
    expect(parseProbeTarget('198.18.100.10:80/tcp')).toEqual({ ip: '198.18.100.10', port: 80, protocol: 'tcp' });
    expect(parseProbeTarget('[2001:0002:0:0100::000a]:53/UDP')).toEqual({ ip: '2001:2:0:100::a', port: 53, protocol: 'udp' });
    expect(formatProbeTarget(parseProbeTarget('[2001:2:0:100::a]:53/udp')!)).toBe('[2001:2:0:100::a]:53/udp');
    for (const bad of ['2001:2::1:80/tcp', '[198.18.0.1]:80/tcp', '198.18.0.1:0/tcp', '198.18.0.1:80/sctp', '198.18.0.1:80', '[::1]:70000/tcp']) {
      expect(parseProbeTarget(bad), bad).toBeNull();
    }
  });
});

describe('validation', () => {
  it('rejects a broken scenario, listing every problem', () => {
    const text = `
name: broken
pods:
  - {name: a1, node: node-a, ip: 198.19.2.11, ports: [8080/tcp]}
  - {name: a1, node: node-c, ip: 10.0.0.1, ports: [http]}
objects: []
probes:
  - {name: p, from: pod:zz, to: 8.8.8.8:53/udp, tries: 0, expect: {backends: [a9], refused: true}}
  - {name: q, from: client, to: 198.18.100.1:80/sctp, tries: 3, expect: {sticky: false, weird: 1}}
`;
    expect(problemsOf(text)).toEqual([
      "pods[0].ip: 198.19.2.11 is not in node-a's pod subnet 198.19.1.0/24",
      'pods[1].name: duplicate pod name "a1"',
      'pods[1].node: must be node-a or node-b, got "node-c"',
      'pods[1].ports[0]: must look like 8080/tcp or 53/udp, got "http"',
      'probes[0].to: 8.8.8.8 is outside 198.18.0.0/15, 2001:2::/48, 127.0.0.0/8, ::1/128',
      'probes[0].from: "zz" is not a pod of this scenario',
      'probes[0].tries: must be an integer from 1 to 1000, got 0',
      'probes[0].expect.backends: "a9" is not a pod of this scenario',
      'probes[0].expect: refused contradicts backends (those need answers)',
      'probes[1].to: must look like 198.18.100.10:80/tcp or [2001:2:0:100::10]:80/tcp, got "198.18.100.1:80/sctp"',
      'probes[1].expect: unknown key "weird" (allowed: backends, oneOf, sticky, sourceIP, sourceNot, refused, dropped)',
      'probes[1].expect.sticky: only `true` is meaningful, got false',
    ]);
    expect(() => parseScenario(text, 'broken.yaml')).toThrow(/invalid scenario broken.yaml/);
  });

  it('checks IPv6 pod addresses against their node, and that IPv6 probes can be made and answered', () => {
    const text = `
name: v6
pods:
  - {name: a1, node: node-a, ip: 198.19.1.11, ip6: "2001:2:0:12::11", ports: [8080/tcp]}
  - {name: a2, node: node-a, ip: 198.19.1.12, ip6: "2001:2:0:11::1", ports: []}
  - {name: a3, node: node-a, ip: 198.19.1.13, ip6: 198.19.1.14, ports: []}
  - {name: a4, node: node-a, ip: 198.19.1.15, ports: [8080/tcp]}
  - {name: b1, node: node-b, ip: 198.19.2.11, ip6: "2001:2:0:12::0011", ports: [8080/tcp]}
  - {name: b2, node: node-b, ip: 198.19.2.12, ip6: "2001:2:0:12::11", ports: [8080/tcp]}
objects: []
probes:
  - {name: p, from: "pod:a4", to: "[2001:2:0:100::1]:80/tcp", tries: 1, expect: {backends: [a4, b1], sourceIP: 198.19.1.15}}
  - {name: q, from: client, to: "[2001:2::1]:80/tcp", tries: 1, expect: {sourceNot: "2001:2::100"}}
`;
    expect(problemsOf(text)).toEqual([
      "pods[0].ip6: 2001:2:0:12::11 is not in node-a's pod subnet 2001:2:0:11::/64",
      'pods[1].ip6: 2001:2:0:11::1 is reserved in 2001:2:0:11::/64',
      'pods[2].ip6: must be an IPv6 address, got "198.19.1.14"',
      'pods[5].ip6: duplicate address 2001:2:0:12::11',
      'probes[0].from: pod "a4" has no IPv6 address to probe 2001:2:0:100::1 from',
      'probes[0].expect.backends: pod "a4" has no IPv6 address, so it can never answer this probe',
      "probes[0].expect.sourceIP: 198.19.1.15 is not an IPv6 address like the probe's target",
    ]);
  });

  it('reads per-mode expectations, which must name a mode and say why', () => {
    const base = (modes: string) => `
name: m
pods: [{name: a1, node: node-a, ip: 198.19.1.11, ports: [8080/tcp]}]
objects: []
probes:
  - {name: p, from: node-a, to: "127.0.0.1:30001/tcp", tries: 1, expect: {backends: [a1]}, modes: ${modes}}
`;
    const s = parseScenario(base('{nftables: {expect: {refused: true}, why: "no localhost NodePorts"}}'));
    expect(s.probes[0]!.modes).toEqual({ nftables: { expect: { refused: true }, why: 'no localhost NodePorts' } });
    expect(expectationFor(s.probes[0]!, 'nftables')).toEqual({ refused: true });
    expect(expectationFor(s.probes[0]!, 'userspace')).toEqual({ backends: ['a1'] });
    expect(
      problemsOf(base('{ipvs: {expect: {refused: true}, why: x}, iptables: {expect: {dropped: true}}, userspace: {expect: {}, why: y, when: z}}')),
    ).toEqual([
      'probes[0].modes: unknown mode "ipvs" (modes: iptables, nftables, userspace)',
      'probes[0].modes.iptables.why: must say why this mode answers otherwise',
      'probes[0].modes.userspace: unknown key "when" (allowed: expect, why)',
      'probes[0].modes.userspace.expect: must be a mapping with at least one of backends, oneOf, sticky, sourceIP, sourceNot, refused, dropped',
    ]);
  });

  it('rejects a document that is not a mapping, and unknown top-level keys', () => {
    expect(() => validateScenario([1, 2])).toThrow(ScenarioError);
    expect(() => parseScenario('name: x\npods: []\nobjects: []\nprobe: []\n')).toThrow(/unknown key "probe"[\s\S]*probes: must be a non-empty list/);
  });
});
