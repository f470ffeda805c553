// Runs a routing scenario against a proxy under test: builds the topology, starts the proxy in
// node-a, starts the pod servers, runs and judges every probe, and tears everything down.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FAMILIES, type IPFamily } from '../../src/model/addr.ts';
import { MODE_DEFINITIONS } from '../../src/modes/index.ts';
import type { ModeName } from '../../src/modes/types.ts';
import { judge } from '../../src/lab/sandbox/judge.ts';
import type { Verdict } from '../../src/lab/sandbox/judge.ts';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import type { PodServerHandle } from '../../src/lab/sandbox/podserver.ts';
import { runProbe } from '../../src/lab/sandbox/probe.ts';
import type { ProbeResult } from '../../src/lab/sandbox/probe.ts';
import { type ProxyProcess, proxyCommand, startProxy, tail } from '../../src/lab/sandbox/proxy.ts';
import { expectationFor, formatProbeTarget, loadScenario, writeObjectsFile } from '../../src/lab/sandbox/scenario.ts';
import type { ExpectKey, Expectation, ModeExpectation, ProbeSpec, Scenario } from '../../src/lab/sandbox/scenario.ts';
import { Topology } from '../../src/lab/sandbox/topology.ts';

export { BIN, proxyCommand, tail } from '../../src/lab/sandbox/proxy.ts';

/**
 * Expectation keys a mode cannot meet by design: a mode whose backends never see the client's address
 * (it opens its own connection to them) cannot keep or hide that address.
 */
export function keysNotCheckedFor(mode: ModeName): ExpectKey[] {
  return MODE_DEFINITIONS[mode].keepsClientAddress ? [] : ['sourceIP', 'sourceNot'];
}

/**
 * Whether a mode's --dry-run output, loaded into a node, is its whole data path. Not for a mode whose
 * backends never see the client's address: that mode relays every connection through listeners of the
 * running process, and its rules only redirect to them.
 */
export function dryRunIsDataPath(mode: ModeName): boolean {
  return MODE_DEFINITIONS[mode].keepsClientAddress;
}

export type Teardown = () => Promise<void>;

/** A proxy to put under test in node-a. */
export interface ProxyUnderTest {
  /** For reports, e.g. "iptables live". */
  readonly name: string;
  /**
   * Makes node-a route the scenario's objects (read from `objectsFile`, a v1 List). Resolves once
   * the data path is programmed, with the function that stops the proxy. Rejects with a readable
   * error (including the proxy's output) if it cannot.
   */
  setup(topo: Topology, objectsFile: string): Promise<Teardown>;
  /** The proxy's output of the last setup (logs, generated rules), for failure reports. */
  diagnostics?(): string;
  /** The mode it runs: probes hold it to their expectation for that mode (see keysNotCheckedFor too). */
  readonly mode?: ModeName;
}

export interface ProbeOutcome {
  probe: ProbeSpec;
  /** What the probe was held to: its expectation for the proxy's mode. */
  expect: Expectation;
  /** Set when that is the probe's override for the mode, with the reason. */
  override?: ModeExpectation;
  /** Null when the probe client itself failed (see `error`). */
  result: ProbeResult | null;
  error?: string;
  verdict: Verdict;
}

export interface ScenarioRun {
  scenario: Scenario;
  proxy: string;
  probes: ProbeOutcome[];
  /** Every probe passed and nothing else went wrong. */
  ok: boolean;
  /** Problems besides probe verdicts: a pod server or the proxy died, teardown failed. */
  errors: string[];
  /** Proxy output and node-a's rules, collected when something failed. */
  diagnostics: string;
  timings: { topologyMs: number; setupMs: number; podServersMs: number; probesMs: number; teardownMs: number; totalMs: number };
}

export interface RunOptions {
  /** Expectation keys not to check (see JudgeOptions.ignore), besides those the proxy's mode cannot meet. */
  ignore?: readonly ExpectKey[];
}

const MAX_DIAGNOSTICS = 24_000;

/** How long a scenario may take at most (vitest hook timeout): every try timing out, plus setup. */
export function scenarioBudgetMs(scenario: Scenario): number {
  const probes = scenario.probes.reduce((ms, p) => ms + p.tries * (p.timeoutMs + 250) + 2000, 0);
  return probes + 60_000;
}

/** Runs every probe of the scenario against `proxy`; always tears down what it built. */
export async function runScenario(fileOrScenario: string | Scenario, proxy: ProxyUnderTest, opts: RunOptions = {}): Promise<ScenarioRun> {
  const scenario = typeof fileOrScenario === 'string' ? loadScenario(fileOrScenario) : fileOrScenario;
  const started = performance.now();
  const timings: ScenarioRun['timings'] = { topologyMs: 0, setupMs: 0, podServersMs: 0, probesMs: 0, teardownMs: 0, totalMs: 0 };
  const tmp = mkdtempSync(path.join(tmpdir(), `kpt-${scenario.name}-`));
  const errors: string[] = [];
  const probes: ProbeOutcome[] = [];
  let diagnostics = '';
  let topo: Topology | null = null;
  let teardown: Teardown | null = null;
  let phase = performance.now();
  const lap = (): number => {
    const now = performance.now();
    const ms = Math.round(now - phase);
    phase = now;
    return ms;
  };
  let failure: unknown = null;
  try {
    topo = await Topology.create(scenario);
    timings.topologyMs = lap();
    const objectsFile = path.join(tmp, 'objects.yaml');
    writeObjectsFile(scenario, objectsFile);
    teardown = await proxy.setup(topo, objectsFile);
    timings.setupMs = lap();
    const servers = await startPodServers(topo);
    timings.podServersMs = lap();
    const ignore = [...(proxy.mode ? keysNotCheckedFor(proxy.mode) : []), ...(opts.ignore ?? [])];
    for (const probe of scenario.probes) probes.push(await runOne(topo, probe, proxy.mode, ignore));
    timings.probesMs = lap();
    errors.push(...deadServers(servers));
    if (probes.some((p) => !p.verdict.ok) || errors.length > 0) diagnostics = await collectDiagnostics(topo, proxy);
  } catch (e) {
    failure = e;
  }
  if (teardown) await teardown().catch((e: unknown) => errors.push(`stopping the proxy: ${message(e)}`));
  if (topo) await topo.destroy().catch((e: unknown) => errors.push(`destroying the topology: ${message(e)}`));
  rmSync(tmp, { recursive: true, force: true });
  timings.teardownMs = lap();
  timings.totalMs = Math.round(performance.now() - started);
  if (failure) {
    if (errors.length === 0) throw failure;
    throw new Error(`${message(failure)}\nwhile cleaning up:\n${errors.join('\n')}`, { cause: failure });
  }
  if (errors.length > 0 && !diagnostics) diagnostics = tail(proxy.diagnostics?.() ?? '', MAX_DIAGNOSTICS);
  return { scenario, proxy: proxy.name, probes, ok: errors.length === 0 && probes.every((p) => p.verdict.ok), errors, diagnostics, timings };
}

async function runOne(topo: Topology, probe: ProbeSpec, mode: ModeName | undefined, ignore: readonly ExpectKey[]): Promise<ProbeOutcome> {
  const expect = expectationFor(probe, mode);
  const override = mode ? probe.modes?.[mode] : undefined;
  const held = { probe, expect, ...(override ? { override } : {}) };
  try {
    const result = await runProbe(topo, probe);
    return { ...held, result, verdict: judge(result.tries, expect, { ignore }) };
  } catch (e) {
    const error = message(e);
    return { ...held, result: null, error, verdict: { ok: false, reasons: [`the probe client failed: ${error}`], summary: 'no result', skipped: [] } };
  }
}

function deadServers(servers: PodServerHandle[]): string[] {
  return servers
    .filter((s) => !s.running())
    .map((s) => `the pod server of ${s.pod.name} died during the probes: ${s.child.exitCode ?? s.child.signalCode} ${s.stderr().trim()}`);
}

/** The proxy's output and node-a's rules as the kernel has them. */
async function collectDiagnostics(topo: Topology, proxy: ProxyUnderTest): Promise<string> {
  const parts: string[] = [];
  const out = proxy.diagnostics?.();
  if (out) parts.push(`--- ${proxy.name} output ---\n${tail(out, MAX_DIAGNOSTICS / 2)}`);
  for (const argv of [['iptables-save'], ['ip6tables-save'], ['nft', 'list', 'ruleset']]) {
    const r = await topo.exec('node-a', argv, { timeoutMs: 30_000 }).catch((e: unknown) => ({ code: -1, stdout: '', stderr: message(e) }));
    const text = r.code === 0 ? r.stdout : `(exit ${r.code}) ${r.stderr}`;
    parts.push(`--- node-a: ${argv.join(' ')} ---\n${tail(text.trim() || '(empty)', MAX_DIAGNOSTICS / 6)}`);
  }
  return parts.join('\n');
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---- reports -------------------------------------------------------------------------------------

/** One probe's outcome, readable: what was expected, what happened, why it fails. */
export function formatProbeOutcome(o: ProbeOutcome): string {
  const p = o.probe;
  const lines = [
    `${o.verdict.ok ? 'PASS' : 'FAIL'} ${p.name}`,
    `  ${p.from} -> ${formatProbeTarget(p.to)}, ${p.tries} tries, ${p.timeoutMs} ms each; expect ${JSON.stringify(o.expect)}`,
    ...(o.override ? [`  (this mode's own expectation, not ${JSON.stringify(p.expect)}: ${o.override.why})`] : []),
    `  ${o.verdict.summary}${o.result ? ` (${o.result.durationMs} ms)` : ''}`,
    ...o.verdict.reasons.map((r) => `  - ${r}`),
  ];
  if (o.verdict.skipped.length) lines.push(`  (not checked for this proxy: ${o.verdict.skipped.join(', ')})`);
  return lines.join('\n');
}

/** The whole run, readable. */
export function formatRun(run: ScenarioRun, withDiagnostics = true): string {
  const t = run.timings;
  const lines = [
    `scenario ${run.scenario.name} with ${run.proxy}: ${run.ok ? 'ok' : 'FAILED'} in ${t.totalMs} ms ` +
      `(topology ${t.topologyMs}, proxy ${t.setupMs}, pod servers ${t.podServersMs}, probes ${t.probesMs}, teardown ${t.teardownMs})`,
    ...run.probes.map(formatProbeOutcome),
    ...run.errors.map((e) => `ERROR ${e}`),
  ];
  if (withDiagnostics && run.diagnostics) lines.push(run.diagnostics);
  return lines.join('\n');
}

// ---- proxies under test ---------------------------------------------------------------------------

export interface LiveProxyOptions {
  /** How long to wait for the first `"event":"synced"` line (default 20 s). */
  syncTimeoutMs?: number;
  /** How long the proxy may take to exit after SIGTERM before it is killed (default 10 s). */
  stopTimeoutMs?: number;
  /** Appended to the command line. */
  extraArgs?: string[];
}

/**
 * The proxy as a user runs it: `kube-proxy-ts --mode M --from FILE ...` inside node-a, ready when
 * it logs `"event":"synced"`. Teardown sends SIGTERM and fails if the proxy had died during the
 * run, did not exit in time, or exited with an error.
 */
export function liveProxy(mode: ModeName, opts: LiveProxyOptions = {}): ProxyUnderTest {
  const syncTimeoutMs = opts.syncTimeoutMs ?? 20_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  let proc: ProxyProcess | null = null;
  return {
    name: `${mode} live`,
    mode,
    diagnostics: () => proc?.output() ?? '',
    async setup(topo, objectsFile) {
      proc = null;
      const argv = [...proxyCommand(mode, objectsFile, topo.pods), ...(opts.extraArgs ?? [])];
      const p = await startProxy(topo, argv, { syncTimeoutMs }).catch((e: Error) => {
        throw new Error(`${mode} ${e.message}`);
      });
      proc = p;
      return async () => {
        const { child } = p;
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`the proxy exited during the run (${child.signalCode ?? `code ${child.exitCode}`})\n${tail(p.output(), 8000)}`);
        }
        const end = await p.stop(stopTimeoutMs);
        if (end.killed) throw new Error(`the proxy did not exit within ${stopTimeoutMs} ms of SIGTERM`);
        if (end.code !== 0 && end.signal !== 'SIGTERM') {
          throw new Error(`the proxy exited with ${end.signal ?? `code ${end.code}`} after SIGTERM\n${tail(p.output(), 8000)}`);
        }
      };
    },
  };
}

export interface DryRunProxyOptions {
  /**
   * Print both families as one batch with plain `--dry-run` and load that, for a mode whose output can hold
   * both (its definition's dryRun.combine); default: one `--dry-run --ip-family F` output per family.
   */
  oneBatch?: boolean;
}

/** What a node's proxy sets at start (upstream's NewProxier) for 127.0.0.1:<NodePort>, and restore input cannot carry. */
const ROUTE_LOCALNET = 'net.ipv4.conf.all.route_localnet=1';

/**
 * The rules a proxy prints with --dry-run (run inside node-a), loaded into node-a as a user loads them:
 * each family's output with the command the mode's definition names (iptables-restore / ip6tables-restore
 * --noflush, nft -j -f), or both families in one batch (`oneBatch`). For modes whose dry run is their
 * whole data path only (dryRunIsDataPath).
 */
export function dryRunProxy(mode: ModeName, opts: DryRunProxyOptions = {}): ProxyUnderTest {
  const def = MODE_DEFINITIONS[mode];
  if (!dryRunIsDataPath(mode)) throw new Error(`dryRunProxy: the ${mode} mode's rules alone carry no traffic; use liveProxy`);
  if (opts.oneBatch && !def.dryRun.combine) throw new Error(`dryRunProxy: the ${mode} mode prints one family per output; it has no one-batch dry run`);
  /** Each output to print and load: the extra flags, and the family its load command is for (null: both). */
  const outputs: { flags: string[]; family: IPFamily | null }[] = opts.oneBatch
    ? [{ flags: [], family: null }]
    : FAMILIES.map((family) => ({ flags: ['--ip-family', family], family }));
  let output = '';
  return {
    name: `${mode} dry-run${opts.oneBatch ? ', one batch' : ''}`,
    mode,
    diagnostics: () => output,
    async setup(topo, objectsFile) {
      output = '';
      for (const { flags, family } of outputs) {
        const argv = [...proxyCommand(mode, objectsFile, topo.pods), '--dry-run', ...flags];
        const r = await topo.exec('node-a', argv, { timeoutMs: 60_000 });
        const label = family ?? 'both families';
        const printed = `--- dry-run ${label}: stdout ---\n${tail(r.stdout, 12_000)}\n--- dry-run ${label}: stderr ---\n${tail(r.stderr, 4000)}\n`;
        output += printed;
        if (r.code !== 0) throw new Error(`${mode} --dry-run exited with ${r.code}\ncommand: ${argv.join(' ')}\n${printed}`);
        if (r.stdout.trim() === '') throw new Error(`${mode} --dry-run printed nothing\ncommand: ${argv.join(' ')}\n${printed}`);
        const file = path.join(path.dirname(objectsFile), `dry-run-${family ?? 'both'}.${def.dryRun.kind === 'nft-json' ? 'json' : 'rules'}`);
        writeFileSync(file, r.stdout);
        const load = family ? def.dryRun.loadCommand(family, file) : oneLoadCommand(mode, file);
        const l = await topo.exec('node-a', load, { timeoutMs: 60_000 });
        if (l.code !== 0)
          throw new Error(`loading the ${mode} dry-run output with \`${load.join(' ')}\` failed (exit ${l.code}): ${l.stderr.trim()}\n${printed}`);
      }
      // A sysctl, not a rule: the iptables dry run says on stderr that 127.0.0.1:<NodePort> needs it. Modes
      // that do not DNAT loopback traffic are not affected by it.
      await topo.execOk('node-a', ['sysctl', '-q', '-w', ROUTE_LOCALNET]);
      return async () => {};
    },
  };
}

/** The command that loads a one-batch output: the mode loads both families with the same command. */
function oneLoadCommand(mode: ModeName, file: string): string[] {
  const [v4, v6] = FAMILIES.map((f) => MODE_DEFINITIONS[mode].dryRun.loadCommand(f, file));
  if (JSON.stringify(v4) !== JSON.stringify(v6)) {
    throw new Error(`the ${mode} mode combines both families in one output but loads them with different commands: ${v4!.join(' ')} / ${v6!.join(' ')}`);
  }
  return v4!;
}

/** No proxy at all: node-a only routes. Service probes must fail with it (the harness can fail). */
export function noProxy(): ProxyUnderTest {
  return {
    name: 'no proxy',
    async setup() {
      return async () => {};
    },
  };
}
