// Network namespaces for the iptables mode's e2e tests: every rule these tests write goes into a
// namespace made here (never the root namespace), and every namespace is removed again.
import { run, runOk } from '../../src/exec.ts';
import type { DesiredState } from '../../src/model/types.ts';
import { createProxier } from '../../src/modes/iptables/index.ts';
import type { IptablesModeOptions } from '../../src/modes/iptables/proxier.ts';
import type { Backend } from '../../src/modes/iptables/restore.ts';
import type { IptablesBackend } from '../../src/modes/types.ts';
import { newPrefix } from '../../src/lab/sandbox/topology.ts';
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
    await restore(ns, backend, createProxier({ config: config(), iptablesBackend: backend }).dryRun(state), v6);
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
  return { config: config(), iptablesBackend: backend, netns: ns, ...more };
}

/** The tables a restore input writes, in order ("nat", "filter"). */
export function tablesOf(input: string): string[] {
  return input
    .split('\n')
    .filter((l) => l.startsWith('*'))
    .map((l) => l.slice(1));
}
