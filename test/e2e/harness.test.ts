// Proves the scenario harness itself: the scenario loader, the topology (real traffic between real
// namespaces), the probe classification, that a missing proxy FAILS a scenario, and cleanup.
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { run } from '../../src/exec.ts';
import {
  listScenarioFiles,
  loadScenario,
  parseScenario,
  ScenarioError,
  SHARED_SCENARIOS_DIR,
  validateScenario,
  writeObjectsFile,
} from '../../src/lab/sandbox/scenario.ts';
import type { Scenario } from '../../src/lab/sandbox/scenario.ts';
import { listNamespaces, sweepStale, Topology } from '../../src/lab/sandbox/topology.ts';
import { formatRun, noProxy, runScenario } from '../harness/run.ts';
import type { ScenarioRun } from '../harness/run.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const here = path.dirname(fileURLToPath(import.meta.url));

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  await sweepStale();
});

describe('scenario loader', () => {
  it('loads every shared scenario file', () => {
    const files = listScenarioFiles();
    expect(files.length).toBeGreaterThanOrEqual(10);
    expect(files.filter((f) => f.startsWith(SHARED_SCENARIOS_DIR)).map((f) => path.basename(f))).toContain('clusterip-basic.yaml');
    const names = new Set<string>();
    for (const f of files) {
      const s = loadScenario(f);
      expect(s.probes.length).toBeGreaterThan(0);
      expect(names.has(s.name), `duplicate scenario name ${s.name}`).toBe(false);
      names.add(s.name);
    }
  });

  it('parses pods, probes and defaults', () => {
    const s = loadScenario(path.join(SHARED_SCENARIOS_DIR, 'clusterip-basic.yaml'));
    expect(s.name).toBe('clusterip-basic');
    expect(s.pods).toContainEqual({ name: 'a1', node: 'node-a', ip: '198.19.1.11', ports: [{ port: 8080, protocol: 'tcp' }] });
    expect(s.pods).toContainEqual({ name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] });
    expect(s.probes[0]).toEqual({
      name: 'pod to ClusterIP reaches both endpoints',
      from: 'pod:a2',
      to: { ip: '198.18.100.10', port: 80, protocol: 'tcp' },
      tries: 30,
      timeoutMs: 1500,
      expect: { backends: ['a1', 'b1'], sourceIP: '198.19.1.12' },
    });
    expect(s.objects.map((o) => o.kind)).toEqual(['Service', 'EndpointSlice']);
  });

  it('writes the objects as a v1 List', () => {
    const s = loadScenario(path.join(SHARED_SCENARIOS_DIR, 'session-affinity.yaml'));
    const dir = mkdtempSync(path.join(tmpdir(), 'kpt-objects-'));
    try {
      const file = path.join(dir, 'objects.yaml');
      writeObjectsFile(s, file);
      expect(parseYaml(readFileSync(file, 'utf8'))).toEqual({ apiVersion: 'v1', kind: 'List', items: s.objects });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

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
    let err: unknown;
    try {
      parseScenario(text, 'broken.yaml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ScenarioError);
    const problems = (err as ScenarioError).problems;
    expect(problems).toEqual([
      "pods[0].ip: 198.19.2.11 is not in node-a's pod subnet 198.19.1.0/24",
      'pods[1].name: duplicate pod name "a1"',
      'pods[1].node: must be node-a or node-b, got "node-c"',
      'pods[1].ports[0]: must look like 8080/tcp or 53/udp, got "http"',
      'probes[0].from: "zz" is not a pod of this scenario',
      'probes[0].to: 8.8.8.8 is outside 198.18.0.0/15 and 127.0.0.0/8',
      'probes[0].tries: must be an integer from 1 to 1000, got 0',
      'probes[0].expect.backends: "a9" is not a pod of this scenario',
      'probes[0].expect: refused contradicts backends (those need answers)',
      'probes[1].to: must look like 198.18.100.10:80/tcp, got "198.18.100.1:80/sctp"',
      'probes[1].expect: unknown key "weird" (allowed: backends, oneOf, sticky, sourceIP, sourceNot, refused, dropped)',
      'probes[1].expect.sticky: only `true` is meaningful, got false',
    ]);
    expect((err as Error).message).toContain('invalid scenario broken.yaml');
  });

  it('rejects a document that is not a mapping, and unknown top-level keys', () => {
    expect(() => validateScenario([1, 2])).toThrow(ScenarioError);
    expect(() => parseScenario('name: x\npods: []\nobjects: []\nprobe: []\n')).toThrow(/unknown key "probe"[\s\S]*probes: must be a non-empty list/);
  });
});

/** Direct pod-to-pod and node-to-pod traffic: no proxy involved. */
const direct: Scenario = validateScenario({
  name: 'harness-direct',
  description: 'the topology routes without any proxy',
  pods: [
    { name: 'a1', node: 'node-a', ip: '198.19.1.11', ports: ['8080/tcp', '5353/udp'] },
    { name: 'a2', node: 'node-a', ip: '198.19.1.12', ports: [] },
    { name: 'b1', node: 'node-b', ip: '198.19.2.11', ports: ['8080/tcp', '5353/udp'] },
  ],
  objects: [],
  probes: [
    {
      name: 'pod to a pod on the other node, tcp',
      from: 'pod:a2',
      to: '198.19.2.11:8080/tcp',
      tries: 5,
      expect: { backends: ['b1'], sourceIP: '198.19.1.12' },
    },
    {
      name: 'pod to a pod on the other node, udp',
      from: 'pod:a2',
      to: '198.19.2.11:5353/udp',
      tries: 5,
      expect: { backends: ['b1'], sourceIP: '198.19.1.12' },
    },
    { name: 'pod to a pod on the same node', from: 'pod:a2', to: '198.19.1.11:8080/tcp', tries: 3, expect: { backends: ['a1'], sourceIP: '198.19.1.12' } },
    { name: 'back from node-b to node-a', from: 'pod:b1', to: '198.19.1.11:5353/udp', tries: 3, expect: { backends: ['a1'], sourceIP: '198.19.2.11' } },
    {
      name: 'node-a to a remote pod uses its eth0 address',
      from: 'node-a',
      to: '198.19.2.11:8080/tcp',
      tries: 3,
      expect: { backends: ['b1'], sourceIP: '198.18.0.1' },
    },
    { name: 'node-b to a pod of node-a', from: 'node-b', to: '198.19.1.11:8080/tcp', tries: 3, expect: { oneOf: ['a1'], sourceIP: '198.18.0.2' } },
    { name: 'a closed tcp port is refused', from: 'pod:a2', to: '198.19.2.11:9/tcp', tries: 2, expect: { refused: true } },
    { name: 'a closed udp port is refused (ICMP port unreachable)', from: 'pod:a2', to: '198.19.2.11:9/udp', tries: 2, expect: { refused: true } },
    { name: 'the client reaches node-a over the LAN', from: 'client', to: '198.18.0.1:30080/tcp', tries: 2, expect: { refused: true } },
    { name: 'an unrouted ClusterIP is dropped at the client', from: 'node-a', to: '198.18.100.99:80/tcp', tries: 2, timeoutMs: 300, expect: { dropped: true } },
  ],
});

describe('topology', () => {
  let result: ScenarioRun;
  beforeAll(async () => {
    result = await runScenario(direct, noProxy());
    console.log(formatRun(result));
  });

  for (const probe of direct.probes) {
    it(probe.name, () => {
      const outcome = result.probes.find((o) => o.probe.name === probe.name);
      expect(outcome?.verdict.ok, outcome && formatRun({ ...result, probes: [outcome] }, false)).toBe(true);
    });
  }

  it('ran without errors and left no namespace behind', async () => {
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
    const prefix = `kpt${process.pid}x`;
    expect((await listNamespaces()).filter((n) => n.startsWith(prefix))).toEqual([]);
  });
});

describe('the harness can fail', () => {
  it('without a proxy, the ClusterIP probe of clusterip-basic fails: its tries time out', async () => {
    const s = loadScenario(path.join(SHARED_SCENARIOS_DIR, 'clusterip-basic.yaml'));
    // Same probe, fewer and shorter tries: every one of them is going to time out.
    const quick = { ...s, probes: s.probes.slice(0, 1).map((p) => ({ ...p, tries: 3, timeoutMs: 400 })) };
    const result = await runScenario(quick, noProxy());
    expect(result.ok).toBe(false);
    expect(result.errors).toEqual([]);
    const [outcome] = result.probes;
    expect(outcome?.result?.tries).toEqual(['timeout', 'timeout', 'timeout']);
    expect(outcome?.verdict.ok).toBe(false);
    expect(outcome?.verdict.reasons).toEqual([
      'backends: expected answers from exactly {a1, b1}, got {}: 3 of 3 tries got no answer (3 timed out); never answered: a1, b1',
      'sourceIP: no try was answered, so no source address to check (3 timed out)',
    ]);
    // The failure report names the rules of node-a (none here) for whoever debugs it.
    expect(result.diagnostics).toContain('--- node-a: nft list ruleset ---');
  });
});

describe('cleanup', () => {
  it('destroy stops spawned processes and deletes every namespace it created; it is idempotent', async () => {
    const topo = await Topology.create(direct);
    const ours = (await listNamespaces()).filter((n) => n.startsWith(`${topo.prefix}-`));
    expect(ours.sort()).toEqual(topo.hosts.map((h) => topo.ns(h)).sort());
    expect(ours).toHaveLength(7);
    const sleeper = topo.spawn('node-b', ['sleep', '300']);
    const exited = new Promise((resolve) => sleeper.once('exit', resolve));
    const settings = await topo.execOk('node-a', ['sysctl', '-n', 'net.ipv4.ip_forward', 'net.bridge.bridge-nf-call-iptables']);
    expect(settings.stdout.split('\n').filter(Boolean)).toEqual(['1', '1']);
    await Promise.all([topo.destroy(), topo.destroy()]);
    await topo.destroy();
    await exited;
    expect(sleeper.pid !== undefined && pidAlive(sleeper.pid)).toBe(false);
    expect((await listNamespaces()).filter((n) => n.startsWith(`${topo.prefix}-`))).toEqual([]);
    expect(() => topo.exec('node-a', ['true'])).toThrow(/destroyed/);
  });

  it('on SIGTERM the process-level handler removes the namespaces and processes, then the signal ends the process', async () => {
    const r = await run([process.execPath, '--disable-warning=ExperimentalWarning', path.join(here, '..', 'harness', 'fixtures', 'signal-cleanup.ts')], {
      timeoutMs: 60_000,
    });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{"prefix"'));
    expect(line, `fixture output: ${r.stdout}\n${r.stderr}`).toBeDefined();
    const { prefix, pid } = JSON.parse(line as string) as { prefix: string; pid: number };
    expect(r.stderr).toContain('killed by SIGTERM');
    expect((await listNamespaces()).filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
    expect(pidAlive(pid)).toBe(false);
  });

  it('sweepStale removes our namespaces of a dead pid only', async () => {
    const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    const dead = `kpt${pidMax + 1}x0bad-node-a`;
    const alive = `kpt${process.pid}x0bad-node-a`;
    const foreign = `kpx${pidMax + 1}x0bad-node-a`;
    for (const ns of [dead, alive, foreign]) expect((await run(['ip', 'netns', 'add', ns])).code).toBe(0);
    try {
      expect(await sweepStale()).toEqual([dead]);
      const left = await listNamespaces();
      expect(left).not.toContain(dead);
      expect(left).toContain(alive);
      expect(left).toContain(foreign);
    } finally {
      for (const ns of [dead, alive, foreign]) await run(['ip', 'netns', 'del', ns]);
    }
  });
});

afterAll(async () => {
  const prefix = `kpt${process.pid}x`;
  expect((await listNamespaces()).filter((n) => n.startsWith(prefix))).toEqual([]);
});
