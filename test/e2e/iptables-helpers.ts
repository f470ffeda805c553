// Network namespaces for the iptables mode's e2e tests: every rule these tests write goes into a
// namespace made here (never the root namespace), and every namespace is removed again.
import { expect } from 'vitest';
import { run, runOk } from '../../src/exec.ts';
import { FAMILIES } from '../../src/model/addr.ts';
import type { KubeObject } from '../../src/model/k8s.ts';
import { buildState } from '../../src/model/store.ts';
import type { DesiredState, IPFamily, ProxyConfig } from '../../src/model/types.ts';
import { createProxier } from '../../src/modes/iptables/index.ts';
import type { IptablesModeOptions } from '../../src/modes/iptables/proxier.ts';
import { renderContext } from '../../src/modes/iptables/render.ts';
import type { Backend } from '../../src/modes/iptables/restore.ts';
import { ensureSysctl, ROUTE_LOCALNET } from '../../src/modes/iptables/sysctl.ts';
import type { IptablesBackend } from '../../src/modes/types.ts';
import type { Scenario } from '../../src/lab/sandbox/scenario.ts';
import { clusterCIDRs, newPrefix, type Topology } from '../../src/lab/sandbox/topology.ts';
import type { ProxyUnderTest } from '../harness/run.ts';
import { config } from '../unit/model-fixtures.ts';

const live = new Set<string>();

/** A fresh, empty network namespace (named like the harness's, so its stale-namespace sweep knows them). */
export async function createNetns(): Promise<string> {
  const name = `${newPrefix()}-ipt`;
  await runOk(['ip', 'netns', 'add', name]);
  live.add(name);
  await runOk(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

export async function deleteNetns(name: string): Promise<void> {
  if (!live.delete(name)) return;
  await run(['ip', 'netns', 'del', name]);
}

/** Removes every namespace still alive (afterAll / afterEach). */
export async function deleteAllNetns(): Promise<void> {
  await Promise.all([...live].map(deleteNetns));
}

export function inNetns(ns: string, argv: readonly string[], input?: string | Buffer) {
  return runOk(['ip', 'netns', 'exec', ns, ...argv], input !== undefined ? { input, timeoutMs: 300_000 } : { timeoutMs: 300_000 });
}

/** iptables-save of one table and backend, in a namespace. */
export async function save(ns: string, backend: Backend, table: string, v6 = false): Promise<string> {
  return (await inNetns(ns, [`${v6 ? 'ip6tables' : 'iptables'}-${backend}-save`, '-t', table])).stdout;
}

/** Loads restore text with --noflush. */
export async function restore(ns: string, backend: Backend, text: string | Buffer, v6 = false): Promise<void> {
  await inNetns(ns, [`${v6 ? 'ip6tables' : 'iptables'}-${backend}-restore`, '--noflush'], text);
}

/**
 * A table's rules, comparable across runs: comments and counters dropped, chains sorted, and the
 * rules of the chains in `unordered` sorted (a partial sync inserts frontends at the top).
 */
export function normalize(text: string, unordered: readonly string[] = ['KUBE-SERVICES', 'KUBE-NODEPORTS']): string {
  const chains = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    if (line.startsWith(':')) chains.set(line.slice(1).split(' ')[0] as string, chains.get(line.slice(1).split(' ')[0] as string) ?? []);
    else if (line.startsWith('-A ')) {
      const chain = line.split(' ')[1] as string;
      const rules = chains.get(chain) ?? [];
      rules.push(line);
      chains.set(chain, rules);
    }
  }
  return [...chains.keys()]
    .sort()
    .map((ch) => {
      const rules = chains.get(ch) ?? [];
      return [`:${ch}`, ...(unordered.includes(ch) ? [...rules].sort() : rules)].join('\n');
    })
    .join('\n');
}

/** nat and filter of a namespace, normalised. */
export async function snapshot(ns: string, backend: Backend, v6 = false): Promise<string> {
  return `${normalize(await save(ns, backend, 'nat', v6))}\n---\n${normalize(await save(ns, backend, 'filter', v6))}`;
}

/** What loading the dry run of `state` into an empty namespace gives: the reference for a sync. */
export async function referenceSnapshot(state: DesiredState, backend: Backend): Promise<string> {
  const ns = await createNetns();
  try {
    const v6 = state.family === 'IPv6';
    await restore(ns, backend, createProxier({ config: state.config, iptablesBackend: backend, family: state.family }).dryRun(state), v6);
    return await snapshot(ns, backend, v6);
  } finally {
    await deleteNetns(ns);
  }
}

/** Every restore input a proxier hands to iptables-restore, in order. */
export function recorder(): { inputs: string[]; onRestore: (input: string | Buffer) => void } {
  const inputs: string[] = [];
  return { inputs, onRestore: (input) => inputs.push(typeof input === 'string' ? input : input.toString('latin1')) };
}

export function iptablesOptions(ns: string, backend: IptablesBackend, more: Partial<IptablesModeOptions> = {}): IptablesModeOptions {
  return { config: config(), iptablesBackend: backend, family: 'IPv4', netns: ns, ...more };
}

/** A sysctl's value inside a namespace. */
export async function sysctl(ns: string, key: string): Promise<string> {
  return (await inNetns(ns, ['cat', `/proc/sys/${key.replaceAll('.', '/')}`])).stdout.trim();
}

/** The tables a restore input writes, in order ("nat", "filter"). */
export function tablesOf(input: string): string[] {
  return input
    .split('\n')
    .filter((l) => l.startsWith('*'))
    .map((l) => l.slice(1));
}

// ---- the proxiers of both families in node-a of a scenario topology -------------------------------

export type How = 'full sync' | 'partial sync' | 'dry run';

function stateOf(scenario: Scenario, family: IPFamily, configured: Partial<ProxyConfig>): DesiredState {
  const { state, issues } = buildState(
    scenario.objects as unknown as KubeObject[],
    config({ clusterCIDRs: clusterCIDRs(scenario.pods), ...configured }),
    family,
  );
  if (issues.length > 0) throw new Error(`scenario ${scenario.name}: ${JSON.stringify(issues)}`);
  return state;
}

/** The localnet guard in kubelet's KUBE-FIREWALL: left in place by cleanup on purpose (route_localnet stays set). */
const LOCALNET_GUARD = /^(:KUBE-FIREWALL |-A (INPUT|OUTPUT) -j KUBE-FIREWALL$|-A KUBE-FIREWALL .*block incoming localnet connections)/;

/** KUBE-* lines left in node-a, in both families, besides the localnet guard. */
async function ruleLines(topo: Topology, backend: Backend): Promise<string[]> {
  const out: string[] = [];
  for (const base of ['iptables', 'ip6tables']) {
    for (const table of ['nat', 'filter', 'mangle']) {
      const r = await topo.execOk('node-a', [`${base}-${backend}-save`, '-t', table]);
      out.push(...r.stdout.split('\n').filter((l) => l.includes('KUBE-') && !LOCALNET_GUARD.test(l)));
    }
  }
  return out;
}

/**
 * The proxiers in this process, one per family, programming node-a as the daemon does: a full sync of the
 * scenario; or a full sync of nothing, then the scenario as one partial sync; or their dry runs loaded with
 * iptables-restore and ip6tables-restore. Teardown runs cleanup() and checks that node-a has no KUBE-* rule
 * left but the localnet guard.
 */
export function inProcessProxy(scenario: Scenario, backend: Backend, how: How, configured: Partial<ProxyConfig> = {}): ProxyUnderTest {
  return {
    name: `iptables ${backend} ${how}`,
    mode: 'iptables',
    async setup(topo) {
      const proxiers = FAMILIES.map((family) => {
        const state = stateOf(scenario, family, configured);
        return { state, proxier: createProxier({ config: state.config, iptablesBackend: backend, family, netns: topo.ns('node-a') }) };
      });
      for (const { state, proxier } of proxiers) {
        if (how === 'dry run') {
          const restore = `${state.family === 'IPv6' ? 'ip6tables' : 'iptables'}-${backend}-restore`;
          await topo.execOk('node-a', [restore, '--noflush'], { input: proxier.dryRun(state) });
          // What the dry run cannot carry, and says so.
          if (renderContext(state).localhostNodePorts) await ensureSysctl(ROUTE_LOCALNET, '1', topo.ns('node-a'));
        } else if (how === 'full sync') {
          expect((await proxier.sync(state, null)).full).toBe(true);
        } else {
          await proxier.sync({ ...state, servicePorts: new Map() }, null);
          const r = await proxier.sync(state, { added: [...state.servicePorts.keys()], updated: [], removed: [], previous: new Map() });
          expect(r.full).toBe(false);
        }
      }
      return async () => {
        for (const { proxier } of proxiers) await proxier.cleanup();
        const left = await ruleLines(topo, backend);
        if (left.length > 0) throw new Error(`cleanup left rules in node-a:\n${left.join('\n')}`);
      };
    },
  };
}
