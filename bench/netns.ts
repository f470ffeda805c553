// Network namespaces for benchmarks: named kptbench<pid>-<tag>, removed at exit, on a signal or an error.
import { execFileSync } from 'node:child_process';
import { run, runOk } from '../src/exec.ts';

const namespaces = new Set<string>();
let hooked = false;

function deleteAllSync(): void {
  for (const name of namespaces) {
    try {
      execFileSync('ip', ['netns', 'del', name]);
    } catch {
      /* already gone */
    }
  }
  namespaces.clear();
}

function hook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', deleteAllSync);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      deleteAllSync();
      process.exit(130);
    });
  }
}

/** A fresh namespace with lo up. */
export async function newNetns(tag: string): Promise<string> {
  hook();
  const name = `kptbench${process.pid}-${tag}`;
  await runOk(['ip', 'netns', 'add', name]);
  namespaces.add(name);
  await runOk(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

export async function deleteNetns(name: string): Promise<void> {
  if (namespaces.delete(name)) await run(['ip', 'netns', 'del', name]);
}
