// The scenario network, built from network namespaces (see test/scenarios/README.md), dual-stack:
//
//   client (eth0 198.18.0.100/24, 2001:2::100/64) ──┐
//   node-a (eth0 198.18.0.1/24,   2001:2::1/64)   ──┼── lan: bridge br0
//   node-b (eth0 198.18.0.2/24,   2001:2::2/64)   ──┘
//   node-a: bridge cbr0 198.19.1.1/24, 2001:2:0:11::1/64 ── pods 198.19.1.x (and 2001:2:0:11::x)
//   node-b: bridge cbr0 198.19.2.1/24, 2001:2:0:12::1/64 ── pods 198.19.2.x (and 2001:2:0:12::x)
//
// Every namespace is named `<prefix>-<host>`; the prefix `kpt<pid>x<hex>` carries the pid of the
// creating process, so that sweepStale() can tell leftovers of a dead run from a live run's.
// Veth pairs are created directly inside their namespaces, and every sysctl is set inside a namespace
// made here: nothing ever appears in, or changes, the root namespace.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { run, runOk } from '../../exec.ts';
import type { RunOptions, RunResult } from '../../exec.ts';
import { log } from '../../log.ts';
import { FAMILIES, type IPFamily, parseCIDR } from '../../model/addr.ts';
import { NODE_POD_SUBNETS } from './scenario.ts';
import type { NodeHost, PodSpec } from './scenario.ts';

/** A host of the topology. */
export type Host = 'lan' | NodeHost | 'client' | `pod:${string}`;

/** The fixed addresses of one family. */
export interface FamilyNetwork {
  lanPrefixLen: number;
  'node-a': string;
  'node-b': string;
  client: string;
  /** externalIPs and load-balancer IPs: the client routes this range to node-a. */
  externalRange: string;
  /** The pod CIDR: both nodes' pod subnets (NODE_POD_SUBNETS). */
  clusterCIDR: string;
}

/** Fixed addresses of the topology, per family. */
export const NETWORK: Readonly<Record<IPFamily, FamilyNetwork>> = {
  IPv4: {
    lanPrefixLen: 24,
    'node-a': '198.18.0.1',
    'node-b': '198.18.0.2',
    client: '198.18.0.100',
    externalRange: '198.18.200.0/24',
    clusterCIDR: '198.19.0.0/16',
  },
  IPv6: {
    lanPrefixLen: 64,
    'node-a': '2001:2::1',
    'node-b': '2001:2::2',
    client: '2001:2::100',
    externalRange: '2001:2:0:200::/64',
    clusterCIDR: '2001:2:0:10::/60',
  },
};

/** The IPv4 addresses (most callers need only these). */
export const ADDRESSES = NETWORK.IPv4;

/**
 * The pod CIDRs a proxy on this topology is told about (--cluster-cidr): the IPv6 one too when a pod has
 * an IPv6 address, as the scenarios README says.
 */
export function clusterCIDRs(pods: readonly Pick<PodSpec, 'ip6'>[]): string[] {
  return pods.some((p) => p.ip6) ? FAMILIES.map((f) => NETWORK[f].clusterCIDR) : [NETWORK.IPv4.clusterCIDR];
}

/**
 * Settings of every namespace: addresses usable at once (no duplicate address detection, which would hold
 * an IPv6 address back for a second or more), and no ICMP redirects taken.
 */
const HOST_SYSCTLS: Readonly<Record<string, string>> = {
  'net.ipv6.conf.all.accept_dad': '0',
  'net.ipv6.conf.default.accept_dad': '0',
  'net.ipv4.conf.all.accept_redirects': '0',
  'net.ipv4.conf.default.accept_redirects': '0',
  'net.ipv6.conf.all.accept_redirects': '0',
  'net.ipv6.conf.default.accept_redirects': '0',
};

/**
 * Settings of the nodes: they route both families; bridged pod traffic on cbr0 goes through iptables,
 * ip6tables and nft (hairpin and same-node services need it; br_netfilter makes these 1 in new namespaces
 * already, but the topology must not depend on that); and they send no IPv4 ICMP redirects, which would
 * use up the per-destination ICMP budget a REJECT needs. (IPv6 has no switch for sending redirects: Linux
 * sends at most one a second per destination.)
 */
const NODE_SYSCTLS: Readonly<Record<string, string>> = {
  'net.ipv4.ip_forward': '1',
  'net.ipv6.conf.all.forwarding': '1',
  'net.ipv4.conf.all.send_redirects': '0',
  'net.ipv4.conf.default.send_redirects': '0',
  'net.bridge.bridge-nf-call-iptables': '1',
  'net.bridge.bridge-nf-call-ip6tables': '1',
};

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
      await topo
        .destroy()
        .catch((err) => log.warn({ event: 'sandbox-cleanup-failed', err, prefix: topo.prefix }, 'topology cleanup after a failed build failed'));
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
    child.on('error', (err) => log.warn({ event: 'sandbox-spawn-failed', err, prefix: this.prefix, host, argv }, 'spawned process failed'));
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

  /** Creates a host's namespace with lo up and HOST_SYSCTLS (before any interface, which copies `default`). */
  async #addNamespace(host: Host): Promise<string> {
    const ns = this.ns(host);
    await runOk(['ip', 'netns', 'add', ns]);
    this.#namespaces.push(ns);
    await runOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    await this.#sysctls(host, HOST_SYSCTLS);
    return ns;
  }

  /** `ip -n NS args...` */
  async #ip(host: Host, ...args: string[]): Promise<void> {
    await runOk(['ip', '-n', this.ns(host), ...args]);
  }

  /** Sets sysctls inside a host's namespace, in one `sysctl -w` run. */
  async #sysctls(host: Host, values: Readonly<Record<string, string>>): Promise<void> {
    const r = await run(['ip', 'netns', 'exec', this.ns(host), 'sysctl', '-q', '-w', ...Object.entries(values).map(([k, v]) => `${k}=${v}`)]);
    if (r.code !== 0) {
      const bridge = r.stderr.includes('net.bridge') ? ' (net.bridge.* needs the br_netfilter module loaded)' : '';
      throw new Error(`setting sysctls in ${this.ns(host)} failed${bridge}: ${r.stderr.trim()}`);
    }
  }

  /** Adds an address: `ip addr add`, for IPv6 without duplicate address detection (usable at once). */
  async #addr(host: Host, family: IPFamily, cidr: string, dev: string): Promise<void> {
    await this.#ip(host, ...(family === 'IPv6' ? ['-6', 'addr', 'add', cidr, 'dev', dev, 'nodad'] : ['addr', 'add', cidr, 'dev', dev]));
  }

  /** Adds a route of either family (`ip -6 route add` for IPv6). */
  async #route(host: Host, family: IPFamily, to: string, via: string): Promise<void> {
    await this.#ip(host, ...(family === 'IPv6' ? ['-6'] : []), 'route', 'add', to, 'via', via);
  }

  /** Creates a veth pair: `inner` in host `a`, `outer` in host `b`. */
  async #veth(a: Host, inner: string, b: Host, outer: string): Promise<void> {
    await this.#ip(a, 'link', 'add', inner, 'type', 'veth', 'peer', 'name', outer, 'netns', this.ns(b));
  }

  async #build(): Promise<void> {
    const fixed: Host[] = ['lan', 'node-a', 'node-b', 'client'];
    for (const h of [...fixed, ...this.pods.map((p) => `pod:${p.name}` as const)]) await this.#addNamespace(h);
    // Before the nodes get interfaces, which copy the `default` values (send_redirects counts per interface).
    for (const node of ['node-a', 'node-b'] as const) await this.#sysctls(node, NODE_SYSCTLS);

    // The LAN: br0 with one port per machine, each machine with an address of both families.
    await this.#ip('lan', 'link', 'add', 'br0', 'type', 'bridge');
    await this.#ip('lan', 'link', 'set', 'br0', 'up');
    for (const host of ['node-a', 'node-b', 'client'] as const) {
      await this.#veth(host, 'eth0', 'lan', host);
      await this.#ip('lan', 'link', 'set', host, 'master', 'br0');
      await this.#ip('lan', 'link', 'set', host, 'up');
      for (const f of FAMILIES) await this.#addr(host, f, `${NETWORK[f][host]}/${NETWORK[f].lanPrefixLen}`, 'eth0');
      await this.#ip(host, 'link', 'set', 'eth0', 'up');
    }

    // Nodes: cbr0 for their pods, routing, routes to the other node's pods, default via the client.
    for (const node of ['node-a', 'node-b'] as const) {
      const other = node === 'node-a' ? 'node-b' : 'node-a';
      await this.#ip(node, 'link', 'add', 'cbr0', 'type', 'bridge');
      for (const f of FAMILIES) {
        const { subnet, gateway } = NODE_POD_SUBNETS[node][f];
        await this.#addr(node, f, `${gateway}/${parseCIDR(subnet)!.prefix}`, 'cbr0');
      }
      await this.#ip(node, 'link', 'set', 'cbr0', 'up');
      for (const f of FAMILIES) {
        await this.#route(node, f, NODE_POD_SUBNETS[other][f].subnet, NETWORK[f][other]);
        await this.#route(node, f, 'default', NETWORK[f].client);
      }
    }
    for (const f of FAMILIES) await this.#route('client', f, NETWORK[f].externalRange, NETWORK[f]['node-a']);

    // Pods: eth0 in the pod, its peer a hairpin port of the node's cbr0.
    let index = 0;
    for (const pod of this.pods) {
      const host = `pod:${pod.name}` as const;
      const port = `vp${index++}`;
      await this.#veth(host, 'eth0', pod.node, port);
      await this.#ip(pod.node, 'link', 'set', port, 'master', 'cbr0');
      await this.#ip(pod.node, 'link', 'set', 'dev', port, 'type', 'bridge_slave', 'hairpin', 'on');
      await this.#ip(pod.node, 'link', 'set', port, 'up');
      const addresses: [IPFamily, string | undefined][] = [
        ['IPv4', pod.ip],
        ['IPv6', pod.ip6],
      ];
      for (const [f, ip] of addresses) {
        if (ip) await this.#addr(host, f, `${ip}/${parseCIDR(NODE_POD_SUBNETS[pod.node][f].subnet)!.prefix}`, 'eth0');
      }
      await this.#ip(host, 'link', 'set', 'eth0', 'up');
      for (const [f, ip] of addresses) {
        if (ip) await this.#route(host, f, 'default', NODE_POD_SUBNETS[pod.node][f].gateway);
      }
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
  if (swept.length > 0) log.info({ event: 'sandbox-swept', namespaces: swept }, 'removed network namespaces of a dead earlier run');
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
