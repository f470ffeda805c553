// Routing scenarios: loading, validation, and the objects file a proxy reads.
// Format: ../shared/scenarios/README.md. Pure apart from file reads/writes.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';

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
  ip: string;
  /** Ports the pod server listens on; empty for a client-only pod. */
  ports: PodPort[];
}

export interface ProbeTarget {
  ip: string;
  port: number;
  protocol: L4Protocol;
}

/** Every given key must hold (see the scenarios README). */
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

export const DEFAULT_PROBE_TIMEOUT_MS = 1500;

export interface ProbeSpec {
  name: string;
  from: ProbeSource;
  to: ProbeTarget;
  tries: number;
  /** Per try. */
  timeoutMs: number;
  expect: Expectation;
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

/** The pod subnet (a /24 on the node's cbr0) and gateway of each node. */
export const NODE_POD_SUBNETS: Readonly<Record<NodeHost, { subnet: string; gateway: string }>> = {
  'node-a': { subnet: '198.19.1.0/24', gateway: '198.19.1.1' },
  'node-b': { subnet: '198.19.2.0/24', gateway: '198.19.2.1' },
};

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
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** The IPv4 address as an unsigned 32-bit number, or null when it is not a dotted quad. */
export function ipv4ToInt(ip: string): number | null {
  const m = IPV4.exec(ip);
  if (!m) return null;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i]);
    if (octet > 255 || (m[i].length > 1 && m[i].startsWith('0'))) return null;
    n = n * 256 + octet;
  }
  return n;
}

/** Whether `ip` lies in `cidr` ("a.b.c.d/n"). */
export function ipv4InCidr(ip: string, cidr: string): boolean {
  const [base, bitsText] = cidr.split('/');
  const n = ipv4ToInt(ip);
  const b = ipv4ToInt(base ?? '');
  const bits = Number(bitsText);
  if (n === null || b === null || !Number.isInteger(bits) || bits < 0 || bits > 32) return false;
  const size = 2 ** (32 - bits);
  return Math.floor(n / size) === Math.floor(b / size);
}

/** Probe targets: the benchmarking range every test address comes from, or the prober's own loopback. */
const PROBE_TARGET_RANGES = ['198.18.0.0/15', '127.0.0.0/8'];

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

/** Parses "ip:port/tcp|udp". */
export function parseProbeTarget(text: string): ProbeTarget | null {
  const m = /^([0-9.]+):(\d{1,5}\/(?:tcp|udp))$/i.exec(text);
  if (!m || ipv4ToInt(m[1]) === null) return null;
  const pp = parsePortProto(m[2]);
  return pp ? { ip: m[1], ...pp } : null;
}

export function formatProbeTarget(t: ProbeTarget): string {
  return `${t.ip}:${t.port}/${t.protocol}`;
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], where: string, problems: string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) problems.push(`${where}: unknown key "${k}" (allowed: ${allowed.join(', ')})`);
  }
}

function validatePods(raw: unknown, problems: string[]): PodSpec[] {
  if (!Array.isArray(raw)) {
    problems.push('pods: must be a list');
    return [];
  }
  const pods: PodSpec[] = [];
  const names = new Set<string>();
  const ips = new Set<string>();
  raw.forEach((p, i) => {
    const where = `pods[${i}]`;
    if (!isRecord(p)) {
      problems.push(`${where}: must be a mapping`);
      return;
    }
    checkKeys(p, ['name', 'node', 'ip', 'ports'], where, problems);
    const before = problems.length;
    const { name, node, ip, ports } = p;
    if (typeof name !== 'string' || !DNS_LABEL.test(name)) {
      problems.push(`${where}.name: must be a DNS label (lowercase letters, digits, '-'), got ${JSON.stringify(name)}`);
    } else if (names.has(name)) {
      problems.push(`${where}.name: duplicate pod name "${name}"`);
    } else {
      names.add(name);
    }
    if (node !== 'node-a' && node !== 'node-b') problems.push(`${where}.node: must be node-a or node-b, got ${JSON.stringify(node)}`);
    if (typeof ip !== 'string' || ipv4ToInt(ip) === null) {
      problems.push(`${where}.ip: must be an IPv4 address, got ${JSON.stringify(ip)}`);
    } else if (node === 'node-a' || node === 'node-b') {
      const { subnet, gateway } = NODE_POD_SUBNETS[node];
      const last = ip.split('.')[3];
      if (!ipv4InCidr(ip, subnet)) problems.push(`${where}.ip: ${ip} is not in ${node}'s pod subnet ${subnet}`);
      else if (ip === gateway || last === '0' || last === '255') problems.push(`${where}.ip: ${ip} is reserved in ${subnet}`);
      else if (ips.has(ip)) problems.push(`${where}.ip: duplicate address ${ip}`);
      ips.add(ip);
    }
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
    if (problems.length === before) {
      pods.push({ name: name as string, node: node as NodeHost, ip: ip as string, ports: parsedPorts });
    }
  });
  return pods;
}

function validatePodList(v: unknown, where: string, pods: Map<string, PodSpec>, problems: string[]): string[] | undefined {
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string')) {
    problems.push(`${where}: must be a non-empty list of pod names`);
    return undefined;
  }
  for (const name of v) {
    const pod = pods.get(name);
    if (!pod) problems.push(`${where}: "${name}" is not a pod of this scenario`);
    else if (pod.ports.length === 0) problems.push(`${where}: pod "${name}" has no ports, so it can never answer`);
  }
  if (new Set(v).size !== v.length) problems.push(`${where}: lists a pod twice`);
  return [...(v as string[])];
}

function validateExpect(raw: unknown, where: string, pods: Map<string, PodSpec>, problems: string[]): Expectation {
  const expect: Expectation = {};
  if (!isRecord(raw) || Object.keys(raw).length === 0) {
    problems.push(`${where}: must be a mapping with at least one of ${EXPECT_KEYS.join(', ')}`);
    return expect;
  }
  checkKeys(raw, EXPECT_KEYS, where, problems);
  if (raw.backends !== undefined) expect.backends = validatePodList(raw.backends, `${where}.backends`, pods, problems);
  if (raw.oneOf !== undefined) expect.oneOf = validatePodList(raw.oneOf, `${where}.oneOf`, pods, problems);
  for (const key of ['sticky', 'refused', 'dropped'] as const) {
    if (raw[key] === undefined) continue;
    if (raw[key] === true) expect[key] = true;
    else problems.push(`${where}.${key}: only \`true\` is meaningful, got ${JSON.stringify(raw[key])}`);
  }
  for (const key of ['sourceIP', 'sourceNot'] as const) {
    const v = raw[key];
    if (v === undefined) continue;
    if (typeof v === 'string' && ipv4ToInt(v) !== null) expect[key] = v;
    else problems.push(`${where}.${key}: must be an IPv4 address, got ${JSON.stringify(v)}`);
  }
  const failing = (['refused', 'dropped'] as const).filter((k) => raw[k] !== undefined);
  const answering = (['backends', 'oneOf', 'sticky', 'sourceIP', 'sourceNot'] as const).filter((k) => raw[k] !== undefined);
  if (failing.length > 1) problems.push(`${where}: refused and dropped contradict each other`);
  if (failing.length > 0 && answering.length > 0) {
    problems.push(`${where}: ${failing.join('/')} contradicts ${answering.join(', ')} (those need answers)`);
  }
  return expect;
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
    checkKeys(p, ['name', 'from', 'to', 'tries', 'timeoutMs', 'expect'], where, problems);
    const before = problems.length;
    const { name, from, to, tries, timeoutMs } = p;
    if (typeof name !== 'string' || name.trim() === '') problems.push(`${where}.name: must be a non-empty string`);
    else if (names.has(name)) problems.push(`${where}.name: duplicate probe name "${name}"`);
    else names.add(name);
    if (typeof from !== 'string') {
      problems.push(`${where}.from: must be pod:<name>, node-a, node-b or client`);
    } else if (from.startsWith('pod:')) {
      if (!pods.has(from.slice(4))) problems.push(`${where}.from: "${from.slice(4)}" is not a pod of this scenario`);
    } else if (from !== 'node-a' && from !== 'node-b' && from !== 'client') {
      problems.push(`${where}.from: must be pod:<name>, node-a, node-b or client, got "${from}"`);
    }
    const target = typeof to === 'string' ? parseProbeTarget(to) : null;
    if (!target) problems.push(`${where}.to: must look like 198.18.100.10:80/tcp, got ${JSON.stringify(to)}`);
    else if (!PROBE_TARGET_RANGES.some((r) => ipv4InCidr(target.ip, r))) {
      problems.push(`${where}.to: ${target.ip} is outside ${PROBE_TARGET_RANGES.join(' and ')}`);
    }
    if (typeof tries !== 'number' || !Number.isInteger(tries) || tries < 1 || tries > 1000) {
      problems.push(`${where}.tries: must be an integer from 1 to 1000, got ${JSON.stringify(tries)}`);
    }
    if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 50 || timeoutMs > 60_000)) {
      problems.push(`${where}.timeoutMs: must be an integer from 50 to 60000, got ${JSON.stringify(timeoutMs)}`);
    }
    const expect = validateExpect(p.expect, `${where}.expect`, pods, problems);
    if (problems.length === before && target) {
      probes.push({
        name: name as string,
        from: from as ProbeSource,
        to: target,
        tries: tries as number,
        timeoutMs: (timeoutMs as number | undefined) ?? DEFAULT_PROBE_TIMEOUT_MS,
        expect,
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

/** The shared conformance scenarios: `shared/scenarios` beside the repository. */
export const SHARED_SCENARIOS_DIR = path.resolve(REPO_ROOT, '..', 'shared', 'scenarios');
/** The repository's own extra scenarios. */
export const OWN_SCENARIOS_DIR = path.resolve(REPO_ROOT, 'test', 'scenarios');

function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => path.join(dir, f));
}

/**
 * The scenario files every mode must pass: the shared ones (required: a missing directory is an
 * error, so that a broken checkout can never pass by running nothing) followed by ours, if any.
 */
export function listScenarioFiles(sharedDir = SHARED_SCENARIOS_DIR, ownDir = OWN_SCENARIOS_DIR): string[] {
  if (!existsSync(sharedDir)) {
    throw new Error(`shared scenarios not found at ${sharedDir}: clone the shared repository beside this one`);
  }
  const shared = yamlFiles(sharedDir);
  if (shared.length === 0) throw new Error(`no scenario files (*.yaml) in ${sharedDir}`);
  return [...shared, ...(existsSync(ownDir) ? yamlFiles(ownDir) : [])];
}

/** The scenario's objects as a `v1 List` document, the way a proxy reads them with --from. */
export function objectsListYaml(scenario: Pick<Scenario, 'objects'>): string {
  return stringifyYaml({ apiVersion: 'v1', kind: 'List', items: scenario.objects });
}

/** Writes the scenario's objects to `file` as a `v1 List` YAML document. */
export function writeObjectsFile(scenario: Pick<Scenario, 'objects'>, file: string): void {
  writeFileSync(file, objectsListYaml(scenario));
}
