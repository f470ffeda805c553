// The userspace mode: the historic kube-proxy mode (removed upstream in 1.26), kept so users can compare
// modes on their own traffic. Every service port gets listeners of ours (listenerClasses), kernel nat
// rules REDIRECT its frontends to them (rules.ts), and the listeners pick an endpoint and copy bytes
// (tcp.ts, udp.ts). The backend sees the proxy's address as the source, never the client's.
import { performance } from 'node:perf_hooks';
import { log } from '../../log.ts';
import { hostPort, InvalidValueError } from '../../model/addr.ts';
import type { ChangeSet, DesiredState, IPFamily, ServicePort } from '../../model/types.ts';
import { describeDetector, localDetector } from '../../model/local-detect.ts';
import { sortedServicePorts } from '../../model/view.ts';
import { Iptables } from '../iptables/index.ts';
import type { ModeDefinition, ModeOptions, Proxier, SyncResult } from '../types.ts';
import { Balancer, type ListenerClass, listenerClasses } from './balancer.ts';
import { deleteUdpFlows, ensureJumps, iptablesFor, removeAll } from './kernel.ts';
import { type Listener, PortAllocator, type PortRange, bindAddresses } from './listener.ts';
import {
  type FamilyConfig,
  type Frontend,
  type ListenerPorts,
  type PortalTarget,
  type PortalRenderContext,
  type RenderedRules,
  type ServicePortRules,
  assembleRules,
  familyConfig,
  frontendsOf,
  jumpLines,
  renderGuard,
  renderServicePort,
  sameRules,
  tableText,
} from './rules.ts';
import { podSourceCIDRs, SourceClassifier } from './sources.ts';
import { TcpListener } from './tcp.ts';
import { UdpListener } from './udp.ts';

export interface UserspaceOptions extends ModeOptions {
  /** Listener ports from this range; default: chosen by the kernel. */
  portRange?: PortRange | null;
  /** Per-attempt connect timeouts to endpoints; the length is the number of attempts. */
  connectTimeoutsMs?: readonly number[];
  udpIdleTimeoutMs?: number;
  udpMaxSessions?: number;
}

interface Entry {
  balancer: Balancer;
  listeners: Map<ListenerClass, Listener>;
}

/** First example port of --dry-run listings when no range is configured (the kernel picks real ones). */
const EXAMPLE_PORT = 32768;

/**
 * One family's userspace proxy. Two run side by side in one process (IPv4 and IPv6) without meeting:
 * their chains live in different tables (iptables, ip6tables), their listeners in different socket
 * families (an IPv6 socket is IPv6-only, so both may hold the same port number), and each deletes only
 * its own family's conntrack entries.
 */
export class UserspaceProxier implements Proxier {
  readonly mode = 'userspace' as const;
  readonly family: IPFamily;
  readonly #opts: UserspaceOptions;
  readonly #ports: PortAllocator;
  #sources: SourceClassifier;
  #sourcesKey: string;
  readonly #entries = new Map<string, Entry>();
  /** Listeners taken out of service whose rules may still be in force until the next successful apply. */
  #retiring: Listener[] = [];
  /** Stopped TCP listeners whose established connections still run. */
  readonly #draining = new Set<Listener>();
  /** What the kernel holds (as of the last successful apply), or null when unknown. */
  #applied: RenderedRules | null = null;
  /** UDP redirect lines of the previous successful sync, to find flows whose listener went away. */
  #previousUdp = new Map<number, string[]>();
  /** Each service port's rules as last rendered (partial syncs re-render only what changed). */
  readonly #rules = new Map<string, ServicePortRules>();
  /** Keys of #rules in order; null when a key came or went. */
  #sortedKeys: string[] | null = null;
  #guard: string[] = [];
  /** A listener opened or closed since the guard chain was rendered. */
  #listenersChanged = true;
  #iptables: Iptables | null = null;
  #needFull = true;
  #closed = false;
  /** Warnings already logged (SCTP ports, values refused), so that resyncs do not repeat them. */
  readonly #warned = new Set<string>();

  constructor(opts: UserspaceOptions) {
    this.#opts = opts;
    this.family = opts.family;
    this.#ports = new PortAllocator(opts.portRange ?? null);
    const pods = podSourceCIDRs(opts.config, this.family);
    this.#sources = new SourceClassifier({ family: this.family, clusterCIDRs: pods });
    this.#sourcesKey = pods.join(',');
    const detect = localDetector(opts.config, this.family);
    if (detect.kind === 'interface' || detect.kind === 'prefix')
      log.warn(
        { event: 'userspace-detect-local', family: this.family, detector: describeDetector(detect) },
        'the userspace mode tells pods by their address only: with an interface detect-local mode it does not short-circuit pods to Local external frontends',
      );
  }

  /** The listeners of a service port (for tests and tools). */
  listeners(key: string): ReadonlyMap<ListenerClass, Listener> {
    return this.#entries.get(key)?.listeners ?? new Map();
  }

  /** The balancer of a service port (for tests and tools). */
  balancer(key: string): Balancer | undefined {
    return this.#entries.get(key)?.balancer;
  }

  async sync(state: DesiredState, changes: ChangeSet | null): Promise<SyncResult> {
    const started = performance.now();
    if (this.#closed) throw new Error('the userspace proxier is closed');
    if (state.family !== this.family) throw new Error(`the ${this.family} userspace proxier was handed an ${state.family} state`);
    const full = changes === null || this.#needFull;
    this.#needFull = true;
    const pods = podSourceCIDRs(state.config, this.family);
    const cidrs = pods.join(',');
    if (cidrs !== this.#sourcesKey) {
      this.#sources = new SourceClassifier({ family: this.family, clusterCIDRs: pods });
      this.#sourcesKey = cidrs;
    }
    this.#sources.refresh();

    const keys = full
      ? new Set([...state.servicePorts.keys(), ...this.#entries.keys(), ...this.#rules.keys()])
      : new Set([...(changes as ChangeSet).added, ...(changes as ChangeSet).updated, ...(changes as ChangeSet).removed]);
    const ctx: PortalRenderContext = {
      config: familyConfig(state.config, this.family),
      target: (sp, cls) => this.#entries.get(sp.key)?.listeners.get(cls) ?? null,
    };
    let written = 0;
    let rulesChanged = full;
    for (const key of keys) {
      let sp = state.servicePorts.get(key);
      const frontends = sp ? this.#checkedFrontends(sp, ctx.config) : null;
      // A service port with a value that must not reach a rule is left out whole: no listener, no rule.
      if (!frontends) sp = undefined;
      if (await this.#reconcile(key, sp)) written++;
      const before = this.#rules.get(key);
      if (!sp || !frontends) {
        if (before) {
          this.#rules.delete(key);
          this.#sortedKeys = null;
          rulesChanged = true;
        }
        continue;
      }
      const after = renderServicePort(sp, ctx, frontends);
      if (!before) this.#sortedKeys = null;
      if (!before || !sameRules(before, after)) rulesChanged = true;
      this.#rules.set(key, after);
    }
    if (this.#listenersChanged || full) {
      const guard = renderGuard(this.#listenerPorts());
      if (guard.join('\n') !== this.#guard.join('\n')) rulesChanged = true;
      this.#guard = guard;
      this.#listenersChanged = false;
    }

    let bytes = 0;
    if (rulesChanged) {
      this.#sortedKeys ??= [...this.#rules.keys()].sort();
      const rendered = assembleRules(
        this.#sortedKeys.map((k) => this.#rules.get(k) as ServicePortRules),
        this.#guard,
      );
      bytes = await this.#apply(rendered, full);
      // UDP flows whose frontend no longer leads to the same listener port.
      const flows: number[] = [];
      for (const [port, lines] of this.#previousUdp) {
        const now = rendered.udpRedirects.get(port);
        if (!now || lines.some((line) => !now.includes(line))) flows.push(port);
      }
      this.#previousUdp = rendered.udpRedirects;
      if (flows.length > 0) await deleteUdpFlows(this.family, flows);
    }

    // The rules no longer send anything to retired listeners.
    for (const l of this.#retiring) {
      l.stop();
      if (l.protocol === 'TCP' && l.active > 0) this.#draining.add(l);
    }
    this.#retiring = [];
    for (const l of this.#draining) if (l.active === 0) this.#draining.delete(l);

    this.#needFull = false;
    const durationMs = performance.now() - started;
    log.debug({ event: 'userspace-synced', family: this.family, full, durationMs, bytes, servicePorts: written }, 'userspace sync done');
    return { full, durationMs, bytes, servicePortsWritten: written };
  }

  /** The frontends of a service port, or null (logged once) when one of its values must not reach a rule. */
  #checkedFrontends(sp: ServicePort, config: FamilyConfig): Frontend[] | null {
    try {
      return frontendsOf(sp, config);
    } catch (err) {
      if (!(err instanceof InvalidValueError)) throw err;
      const warning = `${sp.key}|${err.message}`;
      if (!this.#warned.has(warning)) {
        this.#warned.add(warning);
        log.warn({ event: 'userspace-invalid-service-port', family: this.family, key: sp.key, err: err.message }, 'service port left out');
      }
      return null;
    }
  }

  /** Ports of the wildcard sockets of every listener in service. */
  #listenerPorts(): ListenerPorts {
    const tcp: number[] = [];
    const udp: number[] = [];
    for (const e of this.#entries.values()) for (const l of e.listeners.values()) (l.protocol === 'TCP' ? tcp : udp).push(l.port);
    return { tcp, udp };
  }

  /** Brings one service port's listeners and balancer in line with `sp`; returns whether it had anything to do. */
  async #reconcile(key: string, sp: ServicePort | undefined): Promise<boolean> {
    let entry = this.#entries.get(key);
    if (sp?.protocol === 'SCTP') {
      if (!this.#warned.has(key)) {
        this.#warned.add(key);
        log.warn(
          { event: 'sctp-unsupported', servicePort: key, family: this.family },
          'the userspace mode cannot proxy SCTP (Node has no SCTP sockets); its frontends are rejected',
        );
      }
      sp = undefined;
    }
    if (!sp) {
      if (!entry) return false;
      this.#retiring.push(...entry.listeners.values());
      this.#entries.delete(key);
      this.#listenersChanged = true;
      return true;
    }
    if (!entry) {
      entry = { balancer: new Balancer(sp, this.#clients), listeners: new Map() };
      this.#entries.set(key, entry);
    } else {
      entry.balancer.update(sp);
    }
    const wanted = listenerClasses(sp);
    for (const [cls, l] of entry.listeners) {
      if (!wanted.includes(cls) || l.protocol !== sp.protocol) {
        this.#retiring.push(l);
        entry.listeners.delete(cls);
        this.#listenersChanged = true;
      }
    }
    for (const cls of wanted) {
      if (entry.listeners.has(cls)) continue;
      const ctx = { family: this.family, balancer: entry.balancer, cls, ports: this.#ports };
      const listener =
        sp.protocol === 'TCP'
          ? await TcpListener.open({ ...ctx, connectTimeoutsMs: this.#opts.connectTimeoutsMs })
          : await UdpListener.open({ ...ctx, idleTimeoutMs: this.#opts.udpIdleTimeoutMs, maxSessions: this.#opts.udpMaxSessions });
      entry.listeners.set(cls, listener);
      this.#listenersChanged = true;
    }
    for (const l of entry.listeners.values()) l.prune();
    return true;
  }

  /** Delegates to the current classifier, which is replaced when the cluster CIDRs change. */
  readonly #clients = {
    isPod: (ip: string) => this.#sources.isPod(ip),
    isNodeLocal: (ip: string) => this.#sources.isNodeLocal(ip),
  };

  /**
   * Writes what changed (everything on a full sync). iptables-restore commits each table on its own,
   * so the order keeps every frontend either redirected or denied at every instant: first the filter
   * table with the old and the new deny rules (a deny rule never meets redirected traffic, whose
   * destination REDIRECT has rewritten), then nat, then the new filter table. If nat fails, the
   * union stays: a superset of denials for frontends the old nat rules do not redirect, harmless.
   */
  async #apply(rendered: RenderedRules, full: boolean): Promise<number> {
    const prev = this.#applied;
    const natChanged = full || !prev || prev.nat.join('\n') !== rendered.nat.join('\n');
    const filterChanged = full || !prev || prev.filter.join('\n') !== rendered.filter.join('\n');
    if (!natChanged && !filterChanged) return 0;
    this.#iptables ??= await iptablesFor(this.#opts.iptablesBackend, this.family);
    const ipt = this.#iptables;
    this.#applied = null;
    let bytes = 0;
    const write = async (text: string): Promise<void> => {
      bytes += Buffer.byteLength(text);
      await ipt.restore(text);
    };
    if (prev && natChanged && filterChanged) {
      const next = new Set(rendered.filter);
      const union = [...rendered.filter, ...prev.filter.filter((l) => !next.has(l))];
      if (union.length > rendered.filter.length) await write(tableText('filter', union));
    }
    if (natChanged) await write(tableText('nat', rendered.nat));
    if (filterChanged) await write(tableText('filter', rendered.filter));
    if (full || !prev) await ensureJumps(ipt);
    this.#applied = rendered;
    return bytes;
  }

  dryRun(state: DesiredState): string {
    return [...this.dryRunChunks(state)].join('');
  }

  /** One piece: this mode is not built for large clusters (a listener per service port), and its text is small. */
  *dryRunChunks(state: DesiredState): Generator<string> {
    if (state.family !== this.family) throw new Error(`the ${this.family} userspace proxier was handed an ${state.family} state`);
    const config = familyConfig(state.config, this.family);
    let next = this.#opts.portRange?.min ?? EXAMPLE_PORT;
    const targets = new Map<string, PortalTarget>();
    const tcp: number[] = [];
    const udp: number[] = [];
    const { any, loopback } = bindAddresses(this.family);
    const listing: string[] = [];
    const perServicePort: ServicePortRules[] = [];
    const ctx: PortalRenderContext = { config, target: (sp, cls) => targets.get(`${sp.key}|${cls}`) ?? null };
    const sps = sortedServicePorts(state);
    for (const sp of sps) {
      const frontends = this.#checkedFrontends(sp, config);
      if (!frontends) {
        listing.push(`#   ${sp.key}: left out (a value that cannot be written into a rule; see the log)`);
        continue;
      }
      if (sp.protocol === 'SCTP') {
        listing.push(`#   ${sp.key} SCTP: not proxied (no SCTP sockets in Node); its frontends are rejected`);
      } else {
        for (const cls of listenerClasses(sp)) {
          const port = next++;
          const hostPortNumber = sp.protocol === 'UDP' ? next++ : port;
          targets.set(`${sp.key}|${cls}`, { port, hostPort: hostPortNumber });
          (sp.protocol === 'TCP' ? tcp : udp).push(port);
          const sockets = sp.protocol === 'UDP' ? `${hostPort(any, port)} + ${hostPort(loopback, hostPortNumber)}` : hostPort(any, port);
          const endpoints = (cls === 'external' ? sp.externalEndpoints : sp.internalEndpoints).map((e) => e.id);
          listing.push(
            `#   ${sp.protocol.toLowerCase()} ${sockets} ${sp.key} (${cls === 'all' ? 'all frontends' : `${cls} frontends`}) -> ${endpoints.length > 0 ? endpoints.join(' ') : '<no endpoints>'}`,
          );
        }
      }
      perServicePort.push(renderServicePort(sp, ctx, frontends));
    }
    const rendered = assembleRules(perServicePort, renderGuard({ tcp, udp }));
    const portsNote = this.#opts.portRange
      ? `from the configured range ${this.#opts.portRange.min}-${this.#opts.portRange.max}, in order`
      : `examples: the kernel picks the real ports when the proxy starts`;
    yield [
      `# kube-proxy-ts userspace mode, node ${state.config.hostname}, ${this.family}: ${sps.length} service ports`,
      `# listeners (${portsNote}; external frontends under a Local policy serve pod and node clients from the cluster endpoints):`,
      ...(listing.length > 0 ? listing : ['#   none']),
      tableText('filter', rendered.filter, jumpLines('filter')),
      tableText('nat', rendered.nat, jumpLines('nat')),
    ].join('\n');
  }

  /** Removes this family's rules of ours (and the historic userspace mode's leftovers) from both backends. */
  async cleanup(): Promise<void> {
    for (const backend of ['nft', 'legacy'] as const) {
      const ipt = new Iptables({ backend, family: this.family });
      if (await removeAll(ipt)) log.info({ event: 'cleanup', mode: 'userspace', backend, family: this.family }, 'removed the userspace mode rules');
    }
    this.#applied = null;
    this.#needFull = true;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const e of this.#entries.values()) for (const l of e.listeners.values()) l.destroy();
    for (const l of [...this.#retiring, ...this.#draining]) l.destroy();
    this.#entries.clear();
    this.#retiring = [];
    this.#draining.clear();
  }
}

/** A proxier with this mode's options beyond ModeOptions (listener port range, timeouts: tests, compare). */
export function createProxier(opts: UserspaceOptions): Proxier {
  return new UserspaceProxier(opts);
}

export const definition: ModeDefinition = {
  name: 'userspace',
  summary: 'a Node.js TCP/UDP proxy per service port behind iptables REDIRECT rules (the historic mode, to compare); backends see the node as the source',
  create: createProxier,
  // The proxy opens its own connection to the endpoint.
  keepsClientAddress: false,
  dryRun: {
    kind: 'restore',
    // One family per output: iptables-restore and ip6tables-restore each load their own.
    combine: null,
    loadCommand: (family: IPFamily, file: string) => [family === 'IPv6' ? 'ip6tables-restore' : 'iptables-restore', '--noflush', file],
  },
  // Its applies are iptables-restore runs: upstream's counter of those.
  failureMetric: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
};
