// The incremental desired-state builder: holds the parsed objects, recomputes only the service ports of
// services touched since the last commit, and reports what changed. Pure: no I/O, no clock.
import { categorizeEndpoints, NO_ENDPOINTS, type NodeTopology } from './endpoints.ts';
import { type Claim, FrontendClaims, type FrontendRole, frontendKey } from './frontends.ts';
import { mergeById, type ParsedService, type ParsedSlice, type ParseResult, parseEndpointSlice, parseNode, parseService } from './parse.ts';
import type { EndpointSlice, KubeObject, Node, Service, WatchedKind } from './k8s.ts';
import {
  type ChangeSet,
  DEFAULT_NODEPORT_RANGE,
  type DesiredState,
  type Endpoint,
  type IPFamily,
  type NodeInfo,
  type ProxyConfig,
  type ServicePort,
  type ValidationIssue,
} from './types.ts';

export interface Commit {
  state: DesiredState;
  changes: ChangeSet;
  /** Distinct services and EndpointSlices applied since the previous commit (for metrics). */
  serviceChanges: number;
  endpointChanges: number;
  /** last-change-trigger-time (ms) of every slice applied since the previous commit, for network programming latency. */
  triggerTimes: number[];
  /** Frontends left out or questionable in this commit (another service owns them, a node port out of range): reported like invalid fields. */
  notices: ValidationIssue[];
}

/** The outcome of applying one object: applied, skipped (not for this proxy), or rejected with issues. */
export type ApplyOutcome = { kind: 'applied' } | { kind: 'skipped'; reason: string } | { kind: 'invalid'; issues: ValidationIssue[] };

/** What happened to each listed object that was not applied. */
export type ListProblems = { object: string; outcome: ApplyOutcome }[];

export class ClusterState {
  readonly config: ProxyConfig;
  readonly family: IPFamily;
  private readonly services = new Map<string, ParsedService>();
  private readonly slices = new Map<string, ParsedSlice>();
  private readonly slicesByService = new Map<string, Set<string>>();
  private readonly ports = new Map<string, ServicePort>();
  private readonly portKeysByService = new Map<string, string[]>();
  private readonly dirty = new Set<string>();
  private readonly dirtySlices = new Set<string>();
  private readonly dirtyServices = new Set<string>();
  private triggerTimes: number[] = [];
  /**
   * When this state began tracking changes: a last-change-trigger-time before it is a change made before
   * this proxy was watching (a restart, a relist of old objects), not latency of ours (upstream's
   * EndpointsChangeTracker ignores it the same way, against its trackerStartTime).
   */
  private readonly trackingSince = Date.now();
  private readonly claims = new FrontendClaims();
  /** Frontends left out or questionable since the last commit (another service owns them; a node port out of range). */
  private notices: ValidationIssue[] = [];
  private node: NodeInfo | null = null;
  private nodeChanged = false;
  /** Changes applied to this family's model so far (see revision). */
  private changeCount = 0;
  /** The snapshot of the last commit: replaced by the next commit that changes anything, never mutated. */
  private state: DesiredState;

  constructor(config: ProxyConfig, family: IPFamily = 'IPv4') {
    this.config = config;
    this.family = family;
    this.state = { family, config, node: null, servicePorts: new Map() };
  }

  /** The desired state as of the last commit (a snapshot). */
  get current(): DesiredState {
    return this.state;
  }

  /**
   * Grows with every object that changes this family's model (not with one that is only the other family's):
   * two readings tell whether anything applied in between concerns this family (the daemon syncs only those).
   */
  get revision(): number {
    return this.changeCount;
  }

  /** This node as the last applied Node object describes it (before the next commit). */
  get currentNode(): NodeInfo | null {
    return this.node;
  }

  upsertService(svc: Service): ApplyOutcome {
    const r = parseService(svc);
    const key = objectKey(svc);
    if (r.ok === true) {
      // A service without a ClusterIP of this family has nothing here (upstream's per-family change tracker
      // skips it too): it is not held, and a version of it that had one is dropped.
      if (r.value.clusterIPs[this.family].length === 0) {
        if (this.services.delete(r.value.key)) this.markService(r.value.key);
        return { kind: 'applied' };
      }
      this.services.set(r.value.key, r.value);
      this.markService(r.value.key);
      return { kind: 'applied' };
    }
    // A service that became invalid or out of scope stops being routed: its previous form is dropped.
    if (key && this.services.delete(key)) this.markService(key);
    return outcome(r);
  }

  deleteService(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    if (this.services.delete(key)) this.markService(key);
  }

  upsertEndpointSlice(slice: EndpointSlice): ApplyOutcome {
    const r = parseEndpointSlice(slice, this.config.hostname);
    const key = objectKey(slice);
    if (key) this.removeSlice(key);
    if (r.ok !== true) return outcome(r);
    const s = r.value;
    // A slice of the other family's addresses is that family's (its addressType never changes): not held here.
    if (s.family !== this.family) return { kind: 'applied' };
    this.slices.set(s.key, s);
    let set = this.slicesByService.get(s.serviceKey);
    if (!set) this.slicesByService.set(s.serviceKey, (set = new Set()));
    set.add(s.key);
    this.dirtySlices.add(s.key);
    this.dirty.add(s.serviceKey);
    this.changeCount++;
    if (s.triggerTime !== null && s.triggerTime > this.trackingSince) this.triggerTimes.push(s.triggerTime);
    return { kind: 'applied' };
  }

  deleteEndpointSlice(namespace: string, name: string): void {
    this.removeSlice(`${namespace}/${name}`);
  }

  setNode(node: Node | null): ApplyOutcome {
    if (node === null) {
      this.applyNode(null);
      return { kind: 'applied' };
    }
    const r = parseNode(node);
    if (r.ok !== true) return outcome(r);
    this.applyNode(r.value);
    return { kind: 'applied' };
  }

  private applyNode(next: NodeInfo | null): void {
    // The zone decides topology: when it changes, every service port's endpoints are decided anew.
    if ((next?.zone ?? '') !== (this.node?.zone ?? '')) for (const k of this.services.keys()) this.dirty.add(k);
    this.node = next;
    this.nodeChanged = true;
    this.changeCount++;
  }

  /** Applies any kind of object (from a file or a list); returns what happened to it. */
  upsert(obj: KubeObject): ApplyOutcome {
    switch (obj.kind) {
      case 'Service':
        return this.upsertService(obj as Service);
      case 'EndpointSlice':
        return this.upsertEndpointSlice(obj as EndpointSlice);
      case 'Node': {
        const name = (obj as Node).metadata?.name;
        if (name !== this.config.hostname) return { kind: 'skipped', reason: `Node ${name ?? '<no name>'} is not this node` };
        return this.setNode(obj as Node);
      }
      default:
        return { kind: 'skipped', reason: `kind ${String((obj as { kind?: unknown }).kind)} is not watched` };
    }
  }

  /**
   * Makes the held objects of `kinds` (every kind when absent) exactly those of `objects` (an initial list or a
   * relist): objects of those kinds not listed are deleted, listed ones applied. Returns what happened to each
   * listed object that was not applied. (This node's Node is kept when not listed, as before a relist.)
   */
  replaceAll(objects: readonly KubeObject[], kinds?: readonly WatchedKind[]): ListProblems {
    const list = this.listing(kinds);
    const problems = list.add(objects);
    list.end();
    return problems;
  }

  /**
   * replaceAll in parts, for a list read as it arrives: each part is applied at once (add returns what happened to
   * the objects not applied), and end() deletes what of `kinds` was not listed. A list that is never ended
   * deletes nothing; what it applied stays.
   */
  listing(kinds?: readonly WatchedKind[]): { add(objects: readonly KubeObject[]): ListProblems; end(): void } {
    const listedServices = new Set<string>();
    const listedSlices = new Set<string>();
    return {
      add: (objects) => {
        const problems: ListProblems = [];
        for (const o of objects) {
          const k = objectKey(o);
          if (k && o.kind === 'Service') listedServices.add(k);
          else if (k && o.kind === 'EndpointSlice') listedSlices.add(k);
          const r = this.upsert(o);
          if (r.kind !== 'applied') problems.push({ object: `${String(o.kind)} ${k ?? '<no name>'}`, outcome: r });
        }
        return problems;
      },
      end: () => {
        if (!kinds || kinds.includes('Service')) {
          for (const k of [...this.services.keys()]) {
            if (!listedServices.has(k)) {
              this.services.delete(k);
              this.markService(k);
            }
          }
        }
        if (!kinds || kinds.includes('EndpointSlice')) for (const k of [...this.slices.keys()]) if (!listedSlices.has(k)) this.removeSlice(k);
      },
    };
  }

  /** Whether anything changed since the last commit. */
  get pending(): boolean {
    return this.dirty.size > 0 || this.nodeChanged;
  }

  /** Recomputes the service ports of every service touched since the last commit; a new snapshot when anything changed. */
  commit(): Commit {
    const previous = new Map<string, ServicePort>();
    const changes: ChangeSet = { added: [], updated: [], removed: [], previous };
    for (const svcKey of this.dirty) this.recompute(svcKey, changes, previous);
    if (changes.added.length + changes.updated.length + changes.removed.length > 0 || this.nodeChanged) {
      this.state = { family: this.family, config: this.config, node: this.node, servicePorts: new Map(this.ports) };
    }
    this.nodeChanged = false;
    const result: Commit = {
      state: this.state,
      changes,
      serviceChanges: this.dirtyServices.size,
      endpointChanges: this.dirtySlices.size,
      triggerTimes: this.triggerTimes,
      notices: this.notices,
    };
    this.notices = [];
    this.dirty.clear();
    this.dirtyServices.clear();
    this.dirtySlices.clear();
    this.triggerTimes = [];
    return result;
  }

  private markService(key: string): void {
    this.changeCount++;
    this.dirty.add(key);
    this.dirtyServices.add(key);
    // Frontend ownership (model/frontends.ts): whoever shares a frontend with this service is decided anew.
    for (const other of this.claims.set(key, claimsOf(this.services.get(key), this.family))) this.dirty.add(other);
  }

  private removeSlice(key: string): void {
    const old = this.slices.get(key);
    if (!old) return;
    this.slices.delete(key);
    this.slicesByService.get(old.serviceKey)?.delete(key);
    if (this.slicesByService.get(old.serviceKey)?.size === 0) this.slicesByService.delete(old.serviceKey);
    this.dirtySlices.add(key);
    this.dirty.add(old.serviceKey);
    this.changeCount++;
  }

  private recompute(svcKey: string, changes: ChangeSet, previous: Map<string, ServicePort>): void {
    const oldKeys = this.portKeysByService.get(svcKey) ?? [];
    const svc = this.services.get(svcKey);
    const owns: Owns = (key, role) => {
      if (this.claims.owns(svcKey, key, role)) return true;
      const o = this.claims.owner(key);
      this.notices.push({
        object: `Service ${svcKey}`,
        field: ROLE_FIELD[role],
        message: `${key} is left out: it is the ${o?.role ?? 'frontend'} of Service ${o?.service ?? '?'}`,
      });
      return false;
    };
    const range = this.config.nodePortRange ?? DEFAULT_NODEPORT_RANGE;
    const nodePortAllowed: NodePortCheck = (port, field) => {
      if (port >= range.min && port <= range.max) return true;
      this.notices.push({
        object: `Service ${svcKey}`,
        field,
        message: `${port} is outside the NodePort range ${range.min}-${range.max}${range.refuse ? '' : ' (still opened; --refuse-out-of-range-nodeports leaves such ports out)'}`,
        ...(range.refuse ? {} : { severity: 'warning' as const }),
      });
      return !range.refuse;
    };
    const next = svc
      ? buildServicePorts(svc, this.slicesOf(svcKey), this.family, { name: this.config.hostname, zone: this.node?.zone ?? '' }, owns, nodePortAllowed)
      : [];
    const nextKeys = new Set(next.map((p) => p.key));
    for (const k of oldKeys) {
      if (!nextKeys.has(k)) {
        previous.set(k, this.ports.get(k)!);
        this.ports.delete(k);
        changes.removed.push(k);
      }
    }
    for (const p of next) {
      const prev = this.ports.get(p.key);
      if (!prev) changes.added.push(p.key);
      else if (!sameServicePort(prev, p)) {
        changes.updated.push(p.key);
        previous.set(p.key, prev);
      } else continue;
      this.ports.set(p.key, p);
    }
    if (next.length > 0)
      this.portKeysByService.set(
        svcKey,
        next.map((p) => p.key),
      );
    else this.portKeysByService.delete(svcKey);
  }

  private slicesOf(svcKey: string): ParsedSlice[] {
    const keys = this.slicesByService.get(svcKey);
    if (!keys) return [];
    const out: ParsedSlice[] = [];
    for (const k of keys) {
      const s = this.slices.get(k);
      if (s) out.push(s);
    }
    // Deterministic merge order, as kube-proxy's endpoint slice cache.
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}

function objectKey(o: { metadata?: { name?: unknown; namespace?: unknown } }): string | null {
  const name = o.metadata?.name;
  if (typeof name !== 'string' || name === '') return null;
  const ns = typeof o.metadata?.namespace === 'string' && o.metadata.namespace ? o.metadata.namespace : 'default';
  return `${ns}/${name}`;
}

function outcome<T>(r: ParseResult<T>): ApplyOutcome {
  if (r.ok === 'skip') return { kind: 'skipped', reason: r.reason };
  if (r.ok === false) return { kind: 'invalid', issues: r.issues };
  return { kind: 'applied' };
}

/** Builds the service ports of one service for one family from its slices (already in merge order). */
/** Whether the service being built owns a frontend (model/frontends.ts); a service alone owns all of its own. */
export type Owns = (frontendKey: string, role: FrontendRole) => boolean;

const ROLE_FIELD: Record<FrontendRole, string> = {
  clusterIP: 'spec.clusterIPs',
  loadBalancerIP: 'status.loadBalancer.ingress',
  externalIP: 'spec.externalIPs',
  nodePort: 'spec.ports[].nodePort',
};

/** The frontends a service claims in one family (each family's model decides its own). */
function claimsOf(svc: ParsedService | undefined, family: IPFamily): Claim[] {
  if (!svc) return [];
  const out: Claim[] = [];
  for (const p of svc.ports) {
    for (const ip of svc.clusterIPs[family]) out.push({ key: frontendKey(ip, p.port, p.protocol), role: 'clusterIP' });
    for (const ip of svc.loadBalancerIPs[family]) out.push({ key: frontendKey(ip, p.port, p.protocol), role: 'loadBalancerIP' });
    for (const ip of svc.externalIPs[family]) out.push({ key: frontendKey(ip, p.port, p.protocol), role: 'externalIP' });
    if (p.nodePort !== null) out.push({ key: frontendKey(null, p.nodePort, p.protocol), role: 'nodePort' });
  }
  return out;
}

/** Whether a node port (a NodePort or health-check node port) may be opened; reports it when questionable. */
export type NodePortCheck = (port: number, field: string) => boolean;

export function buildServicePorts(
  svc: ParsedService,
  slices: readonly ParsedSlice[],
  family: IPFamily,
  node: NodeTopology,
  owns: Owns = () => true,
  nodePortAllowed: NodePortCheck = () => true,
): ServicePort[] {
  if (svc.clusterIPs[family].length === 0) return [];
  const out: ServicePort[] = [];
  const healthCheckNodePort =
    svc.healthCheckNodePort !== null && nodePortAllowed(svc.healthCheckNodePort, 'spec.healthCheckNodePort') ? svc.healthCheckNodePort : null;
  for (const p of svc.ports) {
    // The parsed list itself when the service owns every address in it (always, but for hand-made conflicts).
    const mine = (ips: readonly string[], role: FrontendRole) => {
      const owned = (ip: string) => owns(frontendKey(ip, p.port, p.protocol), role);
      return ips.every(owned) ? ips : ips.filter(owned);
    };
    const clusterIPs = mine(svc.clusterIPs[family], 'clusterIP');
    if (clusterIPs.length === 0) continue; // another service's ClusterIP (only a hand-made file can do that)
    const externalIPs = mine(svc.externalIPs[family], 'externalIP');
    const loadBalancerIPs = mine(svc.loadBalancerIPs[family], 'loadBalancerIP');
    const nodePort =
      p.nodePort !== null &&
      nodePortAllowed(p.nodePort, `spec.ports[${svc.ports.indexOf(p)}].nodePort`) &&
      owns(frontendKey(null, p.nodePort, p.protocol), 'nodePort')
        ? p.nodePort
        : null;
    const all = mergeEndpoints(p.name, p.protocol, slices);
    const externallyAccessible = nodePort !== null || externalIPs.length > 0 || loadBalancerIPs.length > 0;
    const categories = categorizeEndpoints(all, { ...svc, externallyAccessible }, node);
    out.push({
      key: `${svc.key}:${p.name}`,
      service: svc.key,
      namespace: svc.namespace,
      name: svc.name,
      portName: p.name,
      protocol: p.protocol,
      family,
      port: p.port,
      clusterIPs,
      nodePort,
      externalIPs,
      loadBalancerIPs,
      loadBalancerSourceRanges: svc.loadBalancerSourceRanges[family],
      affinityTimeoutSeconds: svc.affinityTimeoutSeconds,
      // The external policy applies only where there is external traffic (upstream: ExternallyAccessible).
      externalTrafficPolicy: externallyAccessible ? svc.externalTrafficPolicy : 'Cluster',
      internalTrafficPolicy: svc.internalTrafficPolicy,
      healthCheckNodePort: healthCheckNodePort,
      allEndpoints: all,
      externallyAccessible,
      ...categories,
    });
  }
  return out;
}

/**
 * Every endpoint of a service port across slices: the slice port with the service port's name and protocol
 * gives the endpoint port (how named targetPorts resolve), and the parsed slice has its endpoints at that port
 * already (parse.ts). With one slice (nearly always) that is the list itself; across slices, duplicates (same
 * ip:port in several slices) are merged, a ready copy winning over a not-ready one. Sorted by id.
 */
function mergeEndpoints(portName: string, protocol: string, slices: readonly ParsedSlice[]): readonly Endpoint[] {
  const lists: (readonly Endpoint[])[] = [];
  for (const s of slices) {
    const sp = s.ports.find((x) => x.name === portName && x.protocol === protocol);
    if (sp && sp.endpoints.length > 0) lists.push(sp.endpoints);
  }
  if (lists.length === 0) return NO_ENDPOINTS;
  if (lists.length === 1) return lists[0]!;
  return mergeById(lists.flat());
}

function sameEndpoints(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (
      x.id !== y.id ||
      x.nodeName !== y.nodeName ||
      x.zone !== y.zone ||
      x.ready !== y.ready ||
      x.serving !== y.serving ||
      x.terminating !== y.terminating ||
      !sameList(x.zoneHints, y.zoneHints) ||
      !sameList(x.nodeHints, y.nodeHints)
    )
      return false;
  }
  return true;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Whether two versions of a service port render identically in every mode. */
export function sameServicePort(a: ServicePort, b: ServicePort): boolean {
  return (
    a.protocol === b.protocol &&
    a.port === b.port &&
    a.nodePort === b.nodePort &&
    a.affinityTimeoutSeconds === b.affinityTimeoutSeconds &&
    a.externalTrafficPolicy === b.externalTrafficPolicy &&
    a.internalTrafficPolicy === b.internalTrafficPolicy &&
    a.healthCheckNodePort === b.healthCheckNodePort &&
    a.externallyAccessible === b.externallyAccessible &&
    a.internalPolicyLocal === b.internalPolicyLocal &&
    a.externalPolicyLocal === b.externalPolicyLocal &&
    a.topologyMode === b.topologyMode &&
    a.hasAnyEndpoints === b.hasAnyEndpoints &&
    sameList(a.clusterIPs, b.clusterIPs) &&
    sameList(a.externalIPs, b.externalIPs) &&
    sameList(a.loadBalancerIPs, b.loadBalancerIPs) &&
    sameList(a.loadBalancerSourceRanges, b.loadBalancerSourceRanges) &&
    sameEndpoints(a.allEndpoints, b.allEndpoints) &&
    sameEndpoints(a.clusterEndpoints, b.clusterEndpoints) &&
    sameEndpoints(a.localEndpoints, b.localEndpoints)
  );
}

/** Builds a whole state at once (for `state`, dry runs and tests): every object applied, then one commit. */
export function buildState(
  objects: readonly KubeObject[],
  config: ProxyConfig,
  family: IPFamily = 'IPv4',
): { state: DesiredState; issues: ValidationIssue[]; skipped: { object: string; reason: string }[] } {
  const cs = new ClusterState(config, family);
  const issues: ValidationIssue[] = [];
  const skipped: { object: string; reason: string }[] = [];
  for (const o of objects) {
    const r = cs.upsert(o);
    if (r.kind === 'invalid') issues.push(...r.issues);
    else if (r.kind === 'skipped') skipped.push({ object: `${String(o.kind)} ${objectKey(o) ?? '<no name>'}`, reason: r.reason });
  }
  const commit = cs.commit();
  return { state: commit.state, issues: [...issues, ...commit.notices], skipped };
}

/** buildState for each family: what `state` and `explain` show (IPv4 first). */
export function buildStates(
  objects: readonly KubeObject[],
  config: ProxyConfig,
): { states: DesiredState[]; issues: ValidationIssue[]; skipped: { object: string; reason: string }[] } {
  const v4 = buildState(objects, config, 'IPv4');
  const v6 = buildState(objects, config, 'IPv6');
  // Object problems are the same in both builds; frontend conflicts are per family: report each once.
  const seen = new Set(v4.issues.map((i) => JSON.stringify(i)));
  const issues = [...v4.issues, ...v6.issues.filter((i) => !seen.has(JSON.stringify(i)))];
  return { states: [v4.state, v6.state], issues, skipped: v4.skipped };
}
