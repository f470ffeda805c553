// Everything the userspace mode asks of the kernel's tools, for one family: iptables-restore (ip6tables-restore)
// of our chains, the jumps from the built-in chains, their removal, and UDP conntrack entries of listeners
// that went away. The binaries come from the iptables mode's exported wrapper.
import { run } from '../../exec.ts';
import { log } from '../../log.ts';
import { rulePort } from '../../model/addr.ts';
import type { IPFamily } from '../../model/types.ts';
import { Iptables, resolveBackend } from '../iptables/index.ts';
import type { IptablesBackend } from '../types.ts';
import type { HookJump, Table } from './rules.ts';
import { JUMPS, TABLE_CHAINS } from './rules.ts';

/** The iptables binaries of the backend the host uses (or the one forced by --iptables-backend). */
export async function iptablesFor(choice: IptablesBackend, family: IPFamily): Promise<Iptables> {
  return new Iptables({ backend: await resolveBackend(choice), family });
}

/** Inserts each jump at the head of its built-in chain unless it is there already (-C, then -I). */
export async function ensureJumps(ipt: Iptables, jumps: readonly HookJump[] = JUMPS): Promise<void> {
  for (const j of jumps) {
    if ((await ipt.exec(['-t', j.table, '-C', j.chain, ...j.rule])).code === 0) continue;
    const r = await ipt.exec(['-t', j.table, '-I', j.chain, '1', ...j.rule]);
    if (r.code !== 0) throw new Error(`${ipt.binaries.iptables} -t ${j.table} -I ${j.chain}: ${r.stderr.trim()}`);
  }
}

/** Chains of the historic kube-proxy userspace mode (removed in 1.26) that we clean up as leftovers. */
const HISTORIC_CHAINS: Readonly<Record<Table, readonly string[]>> = {
  nat: ['KUBE-NODEPORT-CONTAINER', 'KUBE-NODEPORT-HOST'],
  filter: ['KUBE-NODEPORT-NON-LOCAL'],
};

/**
 * Removes our chains and every rule that jumps to them (ours, and the historic userspace mode's
 * leftovers) from one backend. Returns whether there was anything to remove.
 */
export async function removeAll(ipt: Iptables): Promise<boolean> {
  let removed = false;
  for (const table of ['nat', 'filter'] as const) {
    // A backend whose tools are missing or cannot list the table holds nothing of ours.
    const saved = await ipt.save(table).catch(() => '');
    const chains = [...TABLE_CHAINS[table], ...HISTORIC_CHAINS[table]].filter((c) => saved.includes(`:${c} `));
    if (chains.length === 0) continue;
    removed = true;
    // Jumps from any chain to ours, exactly as iptables-save prints them: delete each by its spec.
    for (const line of saved.split('\n')) {
      const m = /^-A (\S+) (.*)$/.exec(line);
      if (!m || chains.includes(m[1]) || !chains.some((c) => line.endsWith(` -j ${c}`))) continue;
      const r = await ipt.exec(['-t', table, '-D', m[1], ...splitSaved(m[2])]);
      if (r.code !== 0) log.warn({ event: 'cleanup-failed', table, rule: line, err: r.stderr.trim() }, 'userspace cleanup: could not delete a jump');
    }
    for (const c of chains) await ipt.exec(['-t', table, '-F', c]);
    for (const c of chains) {
      const r = await ipt.exec(['-t', table, '-X', c]);
      if (r.code !== 0) throw new Error(`${ipt.binaries.iptables} -t ${table} -X ${c}: ${r.stderr.trim()}`);
    }
  }
  return removed;
}

/** Splits an iptables-save rule into argv, honouring double quotes (comments). */
export function splitSaved(text: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] as string));
  return out;
}

let conntrackMissing = false;

/**
 * The conntrack command that deletes one family's UDP entries answered from a listener port. The family
 * filter keeps the IPv4 and the IPv6 proxier apart: their listeners may hold the same port numbers.
 */
export function udpFlowDeletion(family: IPFamily, port: number): string[] {
  return ['conntrack', '-D', '-f', family === 'IPv6' ? 'ipv6' : 'ipv4', '-p', 'udp', '--reply-port-src', rulePort(port)];
}

/**
 * Deletes the UDP conntrack entries whose replies come from one of our listener ports (the flows
 * REDIRECTed to it), so that clients which keep their source port are not stuck on a closed socket
 * or a frontend that is no longer redirected. Returns the number of entries deleted.
 */
export async function deleteUdpFlows(family: IPFamily, ports: Iterable<number>): Promise<number> {
  let deleted = 0;
  for (const port of ports) {
    if (conntrackMissing) return deleted;
    const argv = udpFlowDeletion(family, port);
    try {
      const r = await run(argv, { timeoutMs: 10_000 });
      // Exit 1 with "0 flow entries have been deleted" when nothing matched.
      const m = /(\d+) flow entries have been deleted/.exec(r.stderr + r.stdout);
      if (m) deleted += Number(m[1]);
      else if (r.code !== 0) log.warn({ event: 'conntrack-failed', port, err: r.stderr.trim() }, 'userspace: could not delete UDP conntrack entries');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      conntrackMissing = true;
      log.warn({ event: 'conntrack-missing' }, 'userspace: the conntrack tool is missing; UDP flows to replaced listeners last until conntrack forgets them');
    }
  }
  return deleted;
}
