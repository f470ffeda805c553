// The scenario network, built from network namespaces (see ../shared/scenarios/README.md):
//
//   client (eth0 198.18.0.100/24) ──┐
//   node-a (eth0 198.18.0.1/24) ────┼── lan: bridge br0
//   node-b (eth0 198.18.0.2/24) ────┘
//   node-a: bridge cbr0 198.19.1.1/24 ── pods 198.19.1.x (default via 198.19.1.1)
//   node-b: bridge cbr0 198.19.2.1/24 ── pods 198.19.2.x (default via 198.19.2.1)
//
// Every namespace is named `<prefix>-<host>`; the prefix `kpt<pid>x<hex>` carries the pid of the
// creating process, so that sweepStale() can tell leftovers of a dead run from a live run's.
// Veth pairs are created directly inside their namespaces: nothing ever appears in the root namespace.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { run, runOk } from '../../exec.ts';
import type { RunOptions, RunResult } from '../../exec.ts';
import { log } from '../../log.ts';
import { NODE_POD_SUBNETS } from './scenario.ts';
import type { NodeHost, PodSpec } from './scenario.ts';

/** A host of the topology. */
export type Host = 'lan' | NodeHost | 'client' | `pod:${string}`;

/** Fixed addresses of the topology. */
export const ADDRESSES = {
  lanPrefixLen: 24,
  podPrefixLen: 24,
  'node-a': '198.18.0.1',
  'node-b': '198.18.0.2',
  client: '198.18.0.100',
  /** Routed by the client to node-a. */
  externalRange: '198.18.200.0/24',
  clusterCIDR: '198.19.0.0/16',
} as const;

/** Matches our namespace names; group 1 is the pid of the process that created them. */
export const PREFIX_PATTERN = /^kpt(\d+)x[0-9a-f]+-/;

let prefixCount = 0;

/** A fresh namespace prefix: `kpt<pid>x<hex>`, a per-process counter and random digits, unique on this host. */
export function newPrefix(): string {
  return `kpt${process.pid}x${(prefixCount++).toString(16)}${randomBytes(2).toString('hex')}`;
}

export interface TopologyOptions {
  /** Namespace prefix; default newPrefix(). Must match PREFIX_PATTERN for sweepStale to recognise it. */
  prefix?: string;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
}

const GRACE_MS = 3000;

/** Topologies not yet destroyed, cleaned up on SIGINT/SIGTERM. */
const live = new Set<Topology>();
let handlersInstalled = false;

export class Topology {
  readonly prefix: string;
  readonly pods: readonly PodSpec[];
  /** Namespaces this topology made, in creation order. */
  readonly #namespaces: string[] = [];
  readonly #children = new Set<ChildProcess>();
  #destroyed: Promise<void> | null = null;

  private constructor(pods: readonly PodSpec[], prefix: string) {
    this.prefix = prefix;
    this.pods = pods;
  }

  /**
   * Builds the topology with the scenario's pods. On failure, removes whatever it made and rethrows.
   * Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
   */
  static async create(scenario: { pods: readonly PodSpec[] }, opts: TopologyOptions = {}): Promise<Topology> {
    installProcessHandlers();
    const topo = new Topology(scenario.pods, opts.prefix ?? newPrefix());
    live.add(topo);
    try {
      await topo.#build();
    } catch (e) {
      await topo.destroy().catch((err) => log.warn({ err, prefix: topo.prefix }, 'topology cleanup after a failed build failed'));
      throw e;
    }
    return topo;
  }

  /** Every host of this topology. */
  get hosts(): Host[] {
    return ['lan', 'node-a', 'node-b', 'client', ...this.pods.map((p) => `pod:${p.name}` as const)];
  }

  /** The namespace name of a host. */
  ns(host: Host): string {
    if (host.startsWith('pod:')) {
      const name = host.slice(4);
      if (!this.pods.some((p) => p.name === name)) throw new Error(`topology ${this.prefix} has no pod "${name}"`);
      return `${this.prefix}-pod-${name}`;
    }
    if (host !== 'lan' && host !== 'node-a' && host !== 'node-b' && host !== 'client') throw new Error(`unknown host "${host}"`);
    return `${this.prefix}-${host}`;
  }

  /** The pod of this name. */
  pod(name: string): PodSpec {
    const pod = this.pods.find((p) => p.name === name);
    if (!pod) throw new Error(`topology ${this.prefix} has no pod "${name}"`);
    return pod;
  }

  /** Runs argv inside a host's namespace (`ip netns exec NS ...`); never rejects on a non-zero exit. */
  exec(host: Host, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    this.#checkAlive();
    return run(['ip', 'netns', 'exec', this.ns(host), ...argv], opts);
  }

  /** Like exec, but rejects with an ExecError on a non-zero exit. */
  execOk(host: Host, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    this.#checkAlive();
    return runOk(['ip', 'netns', 'exec', this.ns(host), ...argv], opts);
  }

  /**
   * Starts a long-running program inside a host's namespace, stdio piped (the caller must consume
   * stdout/stderr). `ip netns exec` execs the program, so the child's pid is the program's own.
   * destroy() stops it (SIGTERM, then SIGKILL) if it is still running.
   */
  spawn(host: Host, argv: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    this.#checkAlive();
    const child = spawn('ip', ['netns', 'exec', this.ns(host), ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      shell: false,
    });
    this.#children.add(child);
    child.on('exit', () => this.#children.delete(child));
    // An 'error' event (spawn failure) without a listener would crash the process.
    child.on('error', (err) => log.warn({ err, prefix: this.prefix, host, argv }, 'spawned process failed'));
    child.stdin?.on('error', () => {});
    return child;
  }

  /**
   * Stops every process started through spawn() and deletes every namespace this topology made.
   * Idempotent: later calls return the first call's promise. Rejects (after trying everything)
   * if a namespace could not be deleted.
   */
  destroy(): Promise<void> {
    this.#destroyed ??= this.#teardown();
    return this.#destroyed;
  }

  get destroyed(): boolean {
    return this.#destroyed !== null;
  }

  /** Processes started through spawn() that are still running. */
  get processes(): ChildProcess[] {
    return [...this.#children];
  }

  #checkAlive(): void {
    if (this.#destroyed) throw new Error(`topology ${this.prefix} is destroyed`);
  }

  async #teardown(): Promise<void> {
    await Promise.all([...this.#children].map((c) => stopChild(c, GRACE_MS)));
    const failures: string[] = [];
    await Promise.all(
      this.#namespaces.map(async (ns) => {
        try {
          await removeNamespace(ns);
        } catch (e) {
          failures.push(`${ns}: ${e instanceof Error ? e.message : String(e)}`);
        }
      }),
    );
    live.delete(this);
    if (failures.length > 0) throw new Error(`could not delete namespaces of topology ${this.prefix}:\n${failures.join('\n')}`);
  }

  async #addNamespace(host: Host): Promise<string> {
    const ns = this.ns(host);
    await runOk(['ip', 'netns', 'add', ns]);
    this.#namespaces.push(ns);
    await runOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** `ip -n NS args...` */
  async #ip(host: Host, ...args: string[]): Promise<void> {
    await runOk(['ip', '-n', this.ns(host), ...args]);
  }

  async #sysctl(host: Host, key: string, value: string): Promise<void> {
    await runOk(['ip', 'netns', 'exec', this.ns(host), 'sysctl', '-q', '-w', `${key}=${value}`]);
  }

  /** Creates a veth pair: `inner` in host `a`, `outer` in host `b`. */
  async #veth(a: Host, inner: string, b: Host, outer: string): Promise<void> {
    await this.#ip(a, 'link', 'add', inner, 'type', 'veth', 'peer', 'name', outer, 'netns', this.ns(b));
  }

  async #build(): Promise<void> {
    const fixed: Host[] = ['lan', 'node-a', 'node-b', 'client'];
    for (const h of [...fixed, ...this.pods.map((p) => `pod:${p.name}` as const)]) await this.#addNamespace(h);

    // The LAN: br0 with one port per machine.
    await this.#ip('lan', 'link', 'add', 'br0', 'type', 'bridge');
    await this.#ip('lan', 'link', 'set', 'br0', 'up');
    for (const host of ['node-a', 'node-b', 'client'] as const) {
      await this.#veth(host, 'eth0', 'lan', host);
      await this.#ip('lan', 'link', 'set', host, 'master', 'br0');
      await this.#ip('lan', 'link', 'set', host, 'up');
      await this.#ip(host, 'addr', 'add', `${ADDRESSES[host]}/${ADDRESSES.lanPrefixLen}`, 'dev', 'eth0');
      await this.#ip(host, 'link', 'set', 'eth0', 'up');
    }

    // Nodes: cbr0 for their pods, forwarding, routes to the other node's pods, default via the client.
    for (const node of ['node-a', 'node-b'] as const) {
      const other = node === 'node-a' ? 'node-b' : 'node-a';
      const { gateway } = NODE_POD_SUBNETS[node];
      await this.#ip(node, 'link', 'add', 'cbr0', 'type', 'bridge');
      await this.#ip(node, 'addr', 'add', `${gateway}/${ADDRESSES.podPrefixLen}`, 'dev', 'cbr0');
      await this.#ip(node, 'link', 'set', 'cbr0', 'up');
      await this.#sysctl(node, 'net.ipv4.ip_forward', '1');
      // Bridged pod-to-pod traffic must traverse iptables/nftables (hairpin, same-node services).
      // br_netfilter makes this 1 in new namespaces already; set it so the topology does not depend on that.
      await this.#sysctl(node, 'net.bridge.bridge-nf-call-iptables', '1').catch((e) => {
        throw new Error(`net.bridge.bridge-nf-call-iptables is not available in ${this.ns(node)} (is br_netfilter loaded?): ${e.message}`);
      });
      await this.#ip(node, 'route', 'add', NODE_POD_SUBNETS[other].subnet, 'via', ADDRESSES[other]);
      await this.#ip(node, 'route', 'add', 'default', 'via', ADDRESSES.client);
    }
    await this.#ip('client', 'route', 'add', ADDRESSES.externalRange, 'via', ADDRESSES['node-a']);

    // Pods: eth0 in the pod, its peer a hairpin port of the node's cbr0.
    let index = 0;
    for (const pod of this.pods) {
      const host = `pod:${pod.name}` as const;
      const port = `vp${index++}`;
      await this.#veth(host, 'eth0', pod.node, port);
      await this.#ip(pod.node, 'link', 'set', port, 'master', 'cbr0');
      await this.#ip(pod.node, 'link', 'set', 'dev', port, 'type', 'bridge_slave', 'hairpin', 'on');
      await this.#ip(pod.node, 'link', 'set', port, 'up');
      await this.#ip(host, 'addr', 'add', `${pod.ip}/${ADDRESSES.podPrefixLen}`, 'dev', 'eth0');
      await this.#ip(host, 'link', 'set', 'eth0', 'up');
      await this.#ip(host, 'route', 'add', 'default', 'via', NODE_POD_SUBNETS[pod.node].gateway);
    }
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
export function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Kills whatever still runs in the namespace, then deletes it. */
async function removeNamespace(ns: string): Promise<void> {
  const pids = await run(['ip', 'netns', 'pids', ns]);
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  const r = await run(['ip', 'netns', 'del', ns]);
  if (r.code !== 0 && (await namespaceExists(ns))) throw new Error(r.stderr.trim() || `ip netns del exited with ${r.code}`);
}

/** Names of every named network namespace. */
export async function listNamespaces(): Promise<string[]> {
  const r = await runOk(['ip', 'netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

async function namespaceExists(ns: string): Promise<boolean> {
  return (await listNamespaces()).includes(ns);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes namespaces left by an earlier run that died: only names matching `pattern` (whose first
 * capture group is the creating pid) whose pid is not alive. Returns the names it deleted.
 */
export async function sweepStale(pattern: RegExp = PREFIX_PATTERN): Promise<string[]> {
  const swept: string[] = [];
  for (const ns of await listNamespaces()) {
    const m = pattern.exec(ns);
    const pid = m ? Number(m[1]) : Number.NaN;
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || pidAlive(pid)) continue;
    await removeNamespace(ns);
    swept.push(ns);
  }
  if (swept.length > 0) log.info({ namespaces: swept }, 'removed network namespaces of a dead earlier run');
  return swept;
}

/** Destroys every live topology. */
export async function destroyAll(): Promise<void> {
  await Promise.allSettled([...live].map((t) => t.destroy()));
}

/**
 * Once per process: on SIGINT/SIGTERM destroy every live topology, then let the signal take its
 * default course (unless someone else handles it); a second signal skips the cleanup. On exit,
 * kill what is left synchronously (namespaces need `ip`, which cannot run then: sweepStale gets them).
 */
function installProcessHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  let cleaning = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (cleaning) {
      killChildrenSync();
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    }
    cleaning = true;
    void destroyAll().finally(() => {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => {
    killChildrenSync();
    const left = [...live].map((t) => t.prefix);
    if (left.length > 0) process.stderr.write(`kube-proxy-ts sandbox: namespaces of ${left.join(', ')} left behind; sweepStale() removes them\n`);
  });
}

function killChildrenSync(): void {
  for (const topo of live) {
    for (const child of topo.processes) child.kill('SIGKILL');
  }
}
