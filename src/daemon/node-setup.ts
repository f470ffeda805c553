// What upstream kube-proxy sets on the node before it starts proxying (cmd/kube-proxy/app/server_linux.go
// setupConntrack and realConntracker, and the OOM score in server.go): nf_conntrack_max scaled by the CPUs,
// the conntrack timeouts, liberal TCP tracking, and this process's oom_score_adj. Also all of --init-only.
//
// Each sysctl is written only when it differs, as upstream. Where upstream would stop the proxy, this one logs
// and goes on: nf_conntrack_max is read-only outside the initial network namespace (kind nodes, the test
// sandbox; upstream's kind sets maxPerCore 0 for that reason), and a missing nf_conntrack module leaves no
// sysctl to write. The module's hashsize (global, in /sys) is only raised after nf_conntrack_max was written,
// so a proxy in a network namespace never touches it.
import { cpus } from 'node:os';
import { readFile, writeFile } from 'node:fs/promises';
import { log } from '../log.ts';
import type { RunOptions } from '../config.ts';

/** Reads and writes /proc/sys and /sys files (replaced in tests). */
export interface SettingsIO {
  read(path: string): Promise<string>;
  write(path: string, value: string): Promise<void>;
}

const realIO: SettingsIO = {
  read: (path) => readFile(path, 'utf8'),
  write: (path, value) => writeFile(path, value),
};

const NETFILTER = '/proc/sys/net/netfilter';
export const HASHSIZE = '/sys/module/nf_conntrack/parameters/hashsize';
const OOM_SCORE_ADJ = '/proc/self/oom_score_adj';

/** One setting applied (or left as it was), for logs and tests. */
export interface SettingResult {
  path: string;
  value: number;
  outcome: 'set' | 'unchanged' | 'failed';
  error?: string;
}

/** upstream getConntrackMax: maxPerCore x CPUs, at least min; 0 (leave it) when maxPerCore is 0. */
export function conntrackMax(c: RunOptions['conntrack'], cpuCount: number): number {
  if (c.maxPerCore <= 0) return 0;
  return Math.max(c.maxPerCore * cpuCount, c.min);
}

/** The conntrack sysctls upstream sets, in its order; values in the sysctls' units (entries, seconds). */
export function conntrackSysctls(c: RunOptions['conntrack'], cpuCount: number): { name: string; value: number }[] {
  const out: { name: string; value: number }[] = [];
  const max = conntrackMax(c, cpuCount);
  if (max > 0) out.push({ name: 'nf_conntrack_max', value: max });
  const seconds = (ms: number) => Math.floor(ms / 1000);
  if (c.tcpEstablishedTimeout > 0) out.push({ name: 'nf_conntrack_tcp_timeout_established', value: seconds(c.tcpEstablishedTimeout) });
  if (c.tcpCloseWaitTimeout > 0) out.push({ name: 'nf_conntrack_tcp_timeout_close_wait', value: seconds(c.tcpCloseWaitTimeout) });
  if (c.tcpBeLiberal) out.push({ name: 'nf_conntrack_tcp_be_liberal', value: 1 });
  if (c.udpTimeout > 0) out.push({ name: 'nf_conntrack_udp_timeout', value: seconds(c.udpTimeout) });
  if (c.udpStreamTimeout > 0) out.push({ name: 'nf_conntrack_udp_timeout_stream', value: seconds(c.udpStreamTimeout) });
  return out;
}

/** Writes `value` to `path` unless it holds it already. */
async function setInt(io: SettingsIO, path: string, value: number): Promise<SettingResult> {
  const current = await io.read(path).then(
    (s) => Number(s.trim()),
    () => Number.NaN,
  );
  if (current === value) return { path, value, outcome: 'unchanged' };
  try {
    await io.write(path, `${value}\n`);
    return { path, value, outcome: 'set' };
  } catch (e) {
    return { path, value, outcome: 'failed', error: (e as Error).message };
  }
}

/** The conntrack settings and the OOM score; each result logged (a failure as a warning, once). */
export async function applyNodeSettings(
  o: Pick<RunOptions, 'conntrack' | 'oomScoreAdj'>,
  io: SettingsIO = realIO,
  cpuCount: number = cpus().length,
): Promise<SettingResult[]> {
  const results: SettingResult[] = [];
  for (const { name, value } of conntrackSysctls(o.conntrack, cpuCount)) {
    const r = await setInt(io, `${NETFILTER}/${name}`, value);
    results.push(r);
    // Linux sizes the hash table from nf_conntrack_max only at module load: raise it too, as upstream, when
    // it is below max/4 (and only where nf_conntrack_max itself could be written: the initial namespace).
    if (name === 'nf_conntrack_max' && r.outcome !== 'failed') {
      const hashsize = await io.read(HASHSIZE).then(
        (s) => Number(s.trim()),
        () => Number.NaN,
      );
      if (Number.isFinite(hashsize) && hashsize < Math.floor(value / 4)) results.push(await setInt(io, HASHSIZE, Math.floor(value / 4)));
    }
  }
  results.push(await setInt(io, OOM_SCORE_ADJ, o.oomScoreAdj));
  for (const r of results) {
    if (r.outcome === 'set') log.info({ event: 'node-setting', path: r.path, value: r.value }, `set ${r.path} to ${r.value}`);
    else if (r.outcome === 'failed')
      log.warn({ event: 'node-setting-failed', path: r.path, value: r.value, err: r.error }, `could not set ${r.path} to ${r.value}; left as it is`);
  }
  return results;
}
