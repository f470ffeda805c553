// Kernel settings the iptables mode needs, set as upstream's EnsureSysctl does: read first, write only
// when the value differs. Through /proc/sys of the network namespace the proxy runs in (the node image has
// no sysctl binary); tests point it at a namespace of theirs, where `ip netns exec` runs cat and tee.
import { readFile, writeFile } from 'node:fs/promises';
import { run } from '../../exec.ts';
import { log } from '../../log.ts';

/** Upstream's sysctlRouteLocalnet: lets a packet with a loopback source (127.0.0.1:NodePort, DNATed) leave the node. */
export const ROUTE_LOCALNET = 'net.ipv4.conf.all.route_localnet';

const procPath = (key: string) => `/proc/sys/${key.replaceAll('.', '/')}`;

/** Sets `key` to `value` unless it has it already; in `netns` when given, else in this process's namespace. */
export async function ensureSysctl(key: string, value: string, netns?: string): Promise<void> {
  const path = procPath(key);
  const current = netns ? await inNetns(netns, ['cat', path]) : await readFile(path, 'utf8');
  if (current.trim() === value) return;
  if (netns) await inNetns(netns, ['tee', path], value);
  else await writeFile(path, value);
  log.info({ event: 'sysctl', key, value, was: current.trim() }, `set ${key}=${value}`);
}

async function inNetns(netns: string, argv: string[], input?: string): Promise<string> {
  const r = await run(['ip', 'netns', 'exec', netns, ...argv], input !== undefined ? { input } : {});
  if (r.code !== 0) throw new Error(`${argv.join(' ')} in ${netns} exited with ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}
