// Routing scenarios: loading, validation, and the objects file a proxy reads.
// Format: test/scenarios/README.md. Pure apart from file reads/writes.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { cidrContains, type IPFamily, inAnyCIDR, parseCIDR, parseHostPort, parseIP } from '../../model/addr.ts';
import { MODES, type ModeName } from '../../modes/types.ts';

/** The repository root (this file lives in src/lab/sandbox/). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export type NodeHost = 'node-a' | 'node-b';
/** Where a probe starts. */
export type ProbeSource = NodeHost | 'client' | `pod:${string}`;
export type L4Protocol = 'tcp' | 'udp';

export interface PodPort {
  port: number;
  protocol: L4Protocol;
}

export interface PodSpec {
  name: string;
  node: NodeHost;
  /** IPv4 address, canonical. */
  ip: string;
  /** IPv6 address (canonical) of a dual-stack pod. */
  ip6?: string;
  /** Ports the pod server listens on; empty for a client-only pod. */
  ports: PodPort[];
}

export interface ProbeTarget {
  /** Canonical address, IPv4 or IPv6. */
  ip: string;
  port: number;
  protocol: L4Protocol;
}

/** Every given key must hold (see the scenarios README). Addresses are canonical. */
export interface Expectation {
  backends?: string[];
  oneOf?: string[];
  sticky?: true;
  sourceIP?: string;
  sourceNot?: string;
  refused?: true;
  dropped?: true;
}

export type ExpectKey = keyof Expectation;
export const EXPECT_KEYS: readonly ExpectKey[] = ['backends', 'oneOf', 'sticky', 'sourceIP', 'sourceNot', 'refused', 'dropped'];

/** What one mode does instead of `expect`, as upstream's modes also differ there, and why. */
export interface ModeExpectation {
  expect: Expectation;
  why: string;
}

export const DEFAULT_PROBE_TIMEOUT_MS = 1500;

export interface ProbeSpec {
  name: string;
  from: ProbeSource;
  to: ProbeTarget;
  tries: number;
  /** Per try. */
  timeoutMs: number;
  /** What every mode does, unless `modes` says otherwise for it. */
  expect: Expectation;
  /** Modes that legitimately answer otherwise. */
  modes?: Partial<Record<ModeName, ModeExpectation>>;
}

export interface Scenario {
  name: string;
  description: string;
  pods: PodSpec[];
  /** Kubernetes objects exactly as written in the file. */
  objects: Record<string, unknown>[];
  probes: ProbeSpec[];
  /** The file it was loaded from, when it was. */
  file?: string;
}

/** The pod subnet on each node's cbr0, and the node's address there (the pods' gateway), per family. */
export const NODE_POD_SUBNETS: Readonly<Record<NodeHost, Readonly<Record<IPFamily, { subnet: string; gateway: string }>>>> = {
  'node-a': { IPv4: { subnet: '198.19.1.0/24', gateway: '198.19.1.1' }, IPv6: { subnet: '2001:2:0:11::/64', gateway: '2001:2:0:11::1' } },
  'node-b': { IPv4: { subnet: '198.19.2.0/24', gateway: '198.19.2.1' }, IPv6: { subnet: '2001:2:0:12::/64', gateway: '2001:2:0:12::1' } },
};

/** Probe targets: the benchmarking ranges every test address comes from, or the prober's own loopback. */
export const PROBE_TARGET_RANGES: readonly string[] = ['198.18.0.0/15', '2001:2::/48', '127.0.0.0/8', '::1/128'];

/** The expectation a probe holds `mode` to: its override for that mode, else the common one. */
export function expectationFor(probe: Pick<ProbeSpec, 'expect' | 'modes'>, mode?: ModeName): Expectation {
  return (mode && probe.modes?.[mode]?.expect) || probe.expect;
}

/** A scenario file that does not follow the format; `problems` lists every problem found. */
export class ScenarioError extends Error {
  readonly source: string;
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super(`invalid scenario ${source}:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ScenarioError';
    this.source = source;
    this.problems = problems;
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses "8080/tcp" into a PodPort, or returns null. */
function parsePortProto(text: string): PodPort | null {
  const m = /^(\d{1,5})\/(tcp|udp)$/i.exec(text);
  if (!m) return null;
  const port = Number(m[1]);
  if (port < 1 || port > 65535) return null;
  return { port, protocol: m[2].toLowerCase() as L4Protocol };
}

/** Parses "ip:port/tcp|udp" or "[ipv6]:port/tcp|udp"; the address comes back canonical. */
export function parseProbeTarget(text: string): ProbeTarget | null {
  const m = /^(.+)\/(tcp|udp)$/i.exec(text);
  const hp = m ? parseHostPort(m[1]) : null;
  return hp ? { ip: hp.ip.ip, port: hp.port, protocol: m![2].toLowerCase() as L4Protocol } : null;
}

/** "198.18.100.10:80/tcp", "[2001:2:0:100::10]:80/tcp" */
export function formatProbeTarget(t: ProbeTarget): string {
  return `${t.ip.includes(':') ? `[${t.ip}]` : t.ip}:${t.port}/${t.protocol}`;
}

/** The family of a probe target's address. */
export function targetFamily(t: ProbeTarget): IPFamily {
  return t.ip.includes(':') ? 'IPv6' : 'IPv4';
}

/** Whether the scenario runs both families: some pod has an IPv6 address. */
export function isDualStack(scenario: Pick<Scenario, 'pods'>): boolean {
  return scenario.pods.some((p) => p.ip6 !== undefined);
}

/** The pod's address in `family`, if it has one. */
export function podAddress(pod: PodSpec, family: IPFamily): string | undefined {
  return family === 'IPv4' ? pod.ip : pod.ip6;
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], where: string, problems: string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) problems.push(`${where}: unknown key "${k}" (allowed: ${allowed.join(', ')})`);
  }
}

/**
 * Checks one pod address in its node's subnet of `family`; returns it canonical, or null with a problem
 * pushed. `taken` holds the addresses of the pods before it.
 */
function validatePodAddress(v: unknown, family: IPFamily, node: unknown, where: string, taken: Set<string>, problems: string[]): string | null {
  const parsed = parseIP(v);
  if (!parsed || parsed.family !== family) {
    problems.push(`${where}: must be an ${family} address, got ${JSON.stringify(v)}`);
    return null;
  }
  if (node !== 'node-a' && node !== 'node-b') return null; // reported with the node
  const { subnet, gateway } = NODE_POD_SUBNETS[node][family];
  const { network } = parseCIDR(subnet)!;
  const ip = parsed.ip;
  // The IPv4 pod subnets are /24s: .255 is their broadcast address.
  const broadcast = family === 'IPv4' && ip.endsWith('.255');
  if (!cidrContains(subnet, ip)) problems.push(`${where}: ${ip} is not in ${node}'s pod subnet ${subnet}`);
  else if (ip === gateway || ip === network || broadcast) problems.push(`${where}: ${ip} is reserved in ${subnet}`);
  else if (taken.has(ip)) problems.push(`${where}: duplicate address ${ip}`);
  else {
    taken.add(ip);
    return ip;
  }
  return null;
}

function validatePods(raw: unknown, problems: string[]): PodSpec[] {
  if (!Array.isArray(raw)) {
    problems.push('pods: must be a list');
    return [];
  }
  const pods: PodSpec[] = [];
  const names = new Set<string>();
  const taken = new Set<string>();
  raw.forEach((p, i) => {
    const where = `pods[${i}]`;
    if (!isRecord(p)) {
      problems.push(`${where}: must be a mapping`);
      return;
    }
    checkKeys(p, ['name', 'node', 'ip', 'ip6', 'ports'], where, problems);
    const before = problems.length;
    const { name, node, ports } = p;
    if (typeof name !== 'string' || !DNS_LABEL.test(name)) {
      problems.push(`${where}.name: must be a DNS label (lowercase letters, digits, '-'), got ${JSON.stringify(name)}`);
    } else if (names.has(name)) {
      problems.push(`${where}.name: duplicate pod name "${name}"`);
    } else {
      names.add(name);
    }
    if (node !== 'node-a' && node !== 'node-b') problems.push(`${where}.node: must be node-a or node-b, got ${JSON.stringify(node)}`);
    const ip = validatePodAddress(p.ip, 'IPv4', node, `${where}.ip`, taken, problems);
    const ip6 = p.ip6 === undefined ? undefined : validatePodAddress(p.ip6, 'IPv6', node, `${where}.ip6`, taken, problems);
    const parsedPorts: PodPort[] = [];
    if (!Array.isArray(ports)) {
      problems.push(`${where}.ports: must be a list like [8080/tcp, 53/udp] (may be empty)`);
    } else {
      const seen = new Set<string>();
      ports.forEach((text, j) => {
        const pp = typeof text === 'string' ? parsePortProto(text) : null;
        if (!pp) {
          problems.push(`${where}.ports[${j}]: must look like 8080/tcp or 53/udp, got ${JSON.stringify(text)}`);
          return;
        }
        const id = `${pp.port}/${pp.protocol}`;
        if (seen.has(id)) problems.push(`${where}.ports[${j}]: duplicate port ${id}`);
        seen.add(id);
        parsedPorts.push(pp);
      });
    }
    if (problems.length === before && ip) {
      pods.push({ name: name as string, node: node as NodeHost, ip, ...(ip6 ? { ip6 } : {}), ports: parsedPorts });
    }
  });
  return pods;
}

/** Pods that answer a probe: listed once, of this scenario, with ports, and with an address of the probe's family. */
function validatePodList(v: unknown, where: string, pods: Map<string, PodSpec>, family: IPFamily | null, problems: string[]): string[] | undefined {
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string')) {
    problems.push(`${where}: must be a non-empty list of pod names`);
    return undefined;
  }
  for (const name of v) {
    const pod = pods.get(name);
    if (!pod) problems.push(`${where}: "${name}" is not a pod of this scenario`);
    else if (pod.ports.length === 0) problems.push(`${where}: pod "${name}" has no ports, so it can never answer`);
    else if (family && !podAddress(pod, family)) problems.push(`${where}: pod "${name}" has no ${family} address, so it can never answer this probe`);
  }
  if (new Set(v).size !== v.length) problems.push(`${where}: lists a pod twice`);
  return [...(v as string[])];
}

/** `family`: the probe target's, when it parsed (source addresses and answering pods must match it). */
function validateExpect(raw: unknown, where: string, pods: Map<string, PodSpec>, family: IPFamily | null, problems: string[]): Expectation {
  const expect: Expectation = {};
  if (!isRecord(raw) || Object.keys(raw).length === 0) {
    problems.push(`${where}: must be a mapping with at least one of ${EXPECT_KEYS.join(', ')}`);
    return expect;
  }
  checkKeys(raw, EXPECT_KEYS, where, problems);
  if (raw.backends !== undefined) expect.backends = validatePodList(raw.backends, `${where}.backends`, pods, family, problems);
  if (raw.oneOf !== undefined) expect.oneOf = validatePodList(raw.oneOf, `${where}.oneOf`, pods, family, problems);
  for (const key of ['sticky', 'refused', 'dropped'] as const) {
    if (raw[key] === undefined) continue;
    if (raw[key] === true) expect[key] = true;
    else problems.push(`${where}.${key}: only \`true\` is meaningful, got ${JSON.stringify(raw[key])}`);
  }
  for (const key of ['sourceIP', 'sourceNot'] as const) {
    const v = raw[key];
    if (v === undefined) continue;
    const parsed = parseIP(v);
    if (!parsed) problems.push(`${where}.${key}: must be an IPv4 or IPv6 address, got ${JSON.stringify(v)}`);
    else if (family && parsed.family !== family) problems.push(`${where}.${key}: ${parsed.ip} is not an ${family} address like the probe's target`);
    else expect[key] = parsed.ip;
  }
  const failing = (['refused', 'dropped'] as const).filter((k) => raw[k] !== undefined);
  const answering = (['backends', 'oneOf', 'sticky', 'sourceIP', 'sourceNot'] as const).filter((k) => raw[k] !== undefined);
  if (failing.length > 1) problems.push(`${where}: refused and dropped contradict each other`);
  if (failing.length > 0 && answering.length > 0) {
    problems.push(`${where}: ${failing.join('/')} contradicts ${answering.join(', ')} (those need answers)`);
  }
  return expect;
}

function validateModes(
  raw: unknown,
  where: string,
  pods: Map<string, PodSpec>,
  family: IPFamily | null,
  problems: string[],
): Partial<Record<ModeName, ModeExpectation>> | undefined {
  if (raw === undefined) return undefined;
  if (!isRecord(raw) || Object.keys(raw).length === 0) {
    problems.push(`${where}: must map a mode (${MODES.join(', ')}) to {expect, why}`);
    return undefined;
  }
  const modes: Partial<Record<ModeName, ModeExpectation>> = {};
  for (const [mode, entry] of Object.entries(raw)) {
    const at = `${where}.${mode}`;
    if (!(MODES as readonly string[]).includes(mode)) {
      problems.push(`${where}: unknown mode "${mode}" (modes: ${MODES.join(', ')})`);
      continue;
    }
    if (!isRecord(entry)) {
      problems.push(`${at}: must be a mapping with expect and why`);
      continue;
    }
    checkKeys(entry, ['expect', 'why'], at, problems);
    if (typeof entry.why !== 'string' || entry.why.trim() === '') problems.push(`${at}.why: must say why this mode answers otherwise`);
    const expect = validateExpect(entry.expect, `${at}.expect`, pods, family, problems);
    modes[mode as ModeName] = { expect, why: typeof entry.why === 'string' ? entry.why.trim() : '' };
  }
  return modes;
}

function validateProbes(raw: unknown, pods: Map<string, PodSpec>, problems: string[]): ProbeSpec[] {
  if (!Array.isArray(raw) || raw.length === 0) {
    problems.push('probes: must be a non-empty list');
    return [];
  }
  const probes: ProbeSpec[] = [];
  const names = new Set<string>();
  raw.forEach((p, i) => {
    const where = `probes[${i}]`;
    if (!isRecord(p)) {
      problems.push(`${where}: must be a mapping`);
      return;
    }
    checkKeys(p, ['name', 'from', 'to', 'tries', 'timeoutMs', 'expect', 'modes'], where, problems);
    const before = problems.length;
    const { name, from, to, tries, timeoutMs } = p;
    if (typeof name !== 'string' || name.trim() === '') problems.push(`${where}.name: must be a non-empty string`);
    else if (names.has(name)) problems.push(`${where}.name: duplicate probe name "${name}"`);
    else names.add(name);
    const target = typeof to === 'string' ? parseProbeTarget(to) : null;
    if (!target) problems.push(`${where}.to: must look like 198.18.100.10:80/tcp or [2001:2:0:100::10]:80/tcp, got ${JSON.stringify(to)}`);
    else if (!inAnyCIDR(PROBE_TARGET_RANGES, target.ip)) problems.push(`${where}.to: ${target.ip} is outside ${PROBE_TARGET_RANGES.join(', ')}`);
    const family = target ? targetFamily(target) : null;
    if (typeof from !== 'string') {
      problems.push(`${where}.from: must be pod:<name>, node-a, node-b or client`);
    } else if (from.startsWith('pod:')) {
      const pod = pods.get(from.slice(4));
      if (!pod) problems.push(`${where}.from: "${from.slice(4)}" is not a pod of this scenario`);
      else if (family && !podAddress(pod, family)) problems.push(`${where}.from: pod "${pod.name}" has no ${family} address to probe ${target!.ip} from`);
    } else if (from !== 'node-a' && from !== 'node-b' && from !== 'client') {
      problems.push(`${where}.from: must be pod:<name>, node-a, node-b or client, got "${from}"`);
    }
    if (typeof tries !== 'number' || !Number.isInteger(tries) || tries < 1 || tries > 1000) {
      problems.push(`${where}.tries: must be an integer from 1 to 1000, got ${JSON.stringify(tries)}`);
    }
    if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 50 || timeoutMs > 60_000)) {
      problems.push(`${where}.timeoutMs: must be an integer from 50 to 60000, got ${JSON.stringify(timeoutMs)}`);
    }
    const expect = validateExpect(p.expect, `${where}.expect`, pods, family, problems);
    const modes = validateModes(p.modes, `${where}.modes`, pods, family, problems);
    if (problems.length === before && target) {
      probes.push({
        name: name as string,
        from: from as ProbeSource,
        to: target,
        tries: tries as number,
        timeoutMs: (timeoutMs as number | undefined) ?? DEFAULT_PROBE_TIMEOUT_MS,
        expect,
        ...(modes ? { modes } : {}),
      });
    }
  });
  return probes;
}

/** Validates a parsed scenario document; throws a ScenarioError listing every problem. */
export function validateScenario(doc: unknown, source = '<inline>'): Scenario {
  const problems: string[] = [];
  if (!isRecord(doc)) throw new ScenarioError(source, ['the document must be a mapping']);
  checkKeys(doc, ['name', 'description', 'pods', 'objects', 'probes'], 'scenario', problems);
  const { name, description } = doc;
  if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    problems.push(`name: must be a non-empty word of letters, digits, '.', '_', '-', got ${JSON.stringify(name)}`);
  }
  if (description !== undefined && typeof description !== 'string') problems.push('description: must be a string');
  const pods = validatePods(doc.pods, problems);
  const podMap = new Map(pods.map((p) => [p.name, p]));
  const objects: Record<string, unknown>[] = [];
  if (!Array.isArray(doc.objects)) {
    problems.push('objects: must be a list of Kubernetes objects');
  } else {
    doc.objects.forEach((o, i) => {
      if (!isRecord(o) || typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') {
        problems.push(`objects[${i}]: must be a Kubernetes object with apiVersion and kind`);
      } else {
        objects.push(o);
      }
    });
  }
  const probes = validateProbes(doc.probes, podMap, problems);
  if (problems.length > 0) throw new ScenarioError(source, problems);
  return { name: name as string, description: ((description as string | undefined) ?? '').trim(), pods, objects, probes };
}

/** Parses and validates scenario YAML text. */
export function parseScenario(text: string, source = '<inline>'): Scenario {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ScenarioError(source, [`not valid YAML: ${e instanceof Error ? e.message : String(e)}`]);
  }
  return validateScenario(doc, source);
}

/** Loads and validates one scenario file. */
export function loadScenario(file: string): Scenario {
  const abs = path.resolve(file);
  return { ...parseScenario(readFileSync(abs, 'utf8'), abs), file: abs };
}

/** The repository's own scenarios. */
export const OWN_SCENARIOS_DIR = path.resolve(REPO_ROOT, 'test', 'scenarios');
/** The shared conformance scenarios, when a checkout of them sits beside the repository. */
export const SHARED_SCENARIOS_DIR = path.resolve(REPO_ROOT, '..', 'shared', 'scenarios');

function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => path.join(dir, f));
}

/**
 * The scenario files every mode must pass: the repository's own (required: a missing or empty directory
 * is an error, so that a broken checkout can never pass by running nothing), then the shared ones when
 * that directory exists.
 */
export function listScenarioFiles(dirs: { own?: string; shared?: string } = {}): string[] {
  const own = dirs.own ?? OWN_SCENARIOS_DIR;
  const shared = dirs.shared ?? SHARED_SCENARIOS_DIR;
  if (!existsSync(own)) throw new Error(`the repository's scenarios are missing: no directory ${own}`);
  const files = yamlFiles(own);
  if (files.length === 0) throw new Error(`no scenario files (*.yaml) in ${own}`);
  return [...files, ...(existsSync(shared) ? yamlFiles(shared) : [])];
}

/** The scenario's objects as a `v1 List` document, the way a proxy reads them with --from. */
export function objectsListYaml(scenario: Pick<Scenario, 'objects'>): string {
  return stringifyYaml({ apiVersion: 'v1', kind: 'List', items: scenario.objects });
}

/** Writes the scenario's objects to `file` as a `v1 List` YAML document. */
export function writeObjectsFile(scenario: Pick<Scenario, 'objects'>, file: string): void {
  writeFileSync(file, objectsListYaml(scenario));
}
