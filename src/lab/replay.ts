// `kube-proxy-ts replay --from DUMP`: a rehearsal of a real cluster before the proxy is trusted with it.
// Takes `kubectl get services,endpointslices,nodes -A -o json`, builds the sandbox network in network
// namespaces (this node, a remote node, an outside client, one pod per endpoint address at the dump's own
// address), runs the proxy on this node, probes every service port from a pod, from the node and from
// outside, and checks each answer against what the model says must happen (model/explain.ts on the same
// objects). Everything it builds lives in namespaces it made and removes, also on failure or interrupt.
//
// Addresses: sandbox pods get an address of the node's pod subnet (NODE_POD_SUBNETS) for their own traffic,
// and the dump's endpoint address as a /32 (/128) on top, routed to them by both nodes; the Node's own
// addresses go on node-a's eth0 (NodePorts are accepted there), and the client routes every externalIP,
// load-balancer IP and node address to node-a.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FAMILIES, type IPFamily, familyOf, parseIP, plainAddress } from '../model/addr.ts';
import { type Explanation, explain } from '../model/explain.ts';
import { buildStates } from '../model/store.ts';
import type { KubeObject } from '../model/k8s.ts';
import type { DesiredState, Endpoint, ProxyConfig, ServicePort } from '../model/types.ts';
import { modeDefinition } from '../modes/index.ts';
import type { ModeName } from '../modes/types.ts';
import { readObjectsFile } from '../watch/file.ts';
import { judge } from './sandbox/judge.ts';
import { startPodServers } from './sandbox/podserver.ts';
import { runProbe } from './sandbox/probe.ts';
import { BIN, startProxy } from './sandbox/proxy.ts';
import {
  type Expectation,
  formatProbeTarget,
  NODE_POD_SUBNETS,
  type NodeHost,
  type PodSpec,
  type ProbeSource,
  type ProbeTarget,
  writeObjectsFile,
} from './sandbox/scenario.ts';
import { clusterCIDRs, NETWORK, Topology } from './sandbox/topology.ts';

/** Pods the sandbox builds at most: a larger dump is sampled by whole service ports, and the report says so. */
export const MAX_ENDPOINT_PODS = 64;

const PROBE_POD = 'prober';
const TRIES = 6;
const TIMEOUT_MS = 1000;

export interface ReplayOptions {
  dump: string;
  mode: ModeName;
  /** Only this family's service ports are probed (the proxy still programs both, as on a node). */
  family?: IPFamily;
  /** This node; default: the node holding the most endpoints. */
  hostname?: string;
  out?: NodeJS.WritableStream;
}

/** One sandbox pod for one endpoint address of the dump. */
interface EndpointPod {
  pod: PodSpec;
  /** The dump's address, of `family`. */
  address: string;
  family: IPFamily;
}

export interface ReplayProbe {
  servicePort: string;
  from: ProbeSource;
  to: ProbeTarget;
  expect: Expectation;
  /** The model's verdict in words: "DNAT, source kept", "REJECT", ... */
  verdict: string;
}

export interface ReplayPlan {
  hostname: string;
  pods: PodSpec[];
  endpointPods: EndpointPod[];
  probes: ReplayProbe[];
  /** Addresses node-a holds besides its sandbox ones: this Node's status.addresses. */
  nodeAddresses: string[];
  /** Frontends the client routes to node-a: externalIPs, LB IPs, node addresses. */
  clientRoutes: string[];
  /** Service ports left out, and why (sampling, SCTP). */
  leftOut: string[];
  config: ProxyConfig;
}

/** The node holding the most endpoint addresses (ties: the first name in order); '' when no endpoint names one. */
export function busiestNode(states: readonly DesiredState[]): string {
  const perNode = new Map<string, Set<string>>();
  for (const s of states) {
    for (const sp of s.servicePorts.values()) {
      for (const e of sp.clusterEndpoints) if (e.nodeName) perNode.set(e.nodeName, (perNode.get(e.nodeName) ?? new Set()).add(e.ip));
    }
  }
  return [...perNode].sort(([a, x], [b, y]) => y.size - x.size || a.localeCompare(b))[0]?.[0] ?? '';
}

/** Every endpoint the model may send this service port's traffic to, each once. */
function reachableEndpoints(sp: ServicePort): Endpoint[] {
  const byId = new Map<string, Endpoint>();
  for (const list of [sp.clusterEndpoints, sp.localEndpoints, sp.internalEndpoints, sp.externalEndpoints]) for (const e of list) byId.set(e.id, e);
  return [...byId.values()];
}

/**
 * The expectation a probe is held to, from the model's explanation; null when the proxy does not touch it.
 * `podOf`: the sandbox pod of an endpoint id of the service port (every endpoint explain may name has one).
 */
function expectationOf(e: Explanation, src: string | 'node', podOf: (endpointId: string) => string): { expect: Expectation; verdict: string } | null {
  if (e.verdict === 'no-match') return null;
  if (e.verdict === 'reject') return { expect: { refused: true }, verdict: 'REJECT' };
  if (e.verdict === 'drop') return { expect: { dropped: true }, verdict: 'DROP' };
  const pods = e.endpoints.map((x) => podOf(x.id));
  const expect: Expectation = { oneOf: pods };
  if (e.affinitySeconds !== null) expect.sticky = true;
  // A process on the node leaves from whichever node address routing picks: its source is not checked.
  if (src !== 'node') {
    if (e.masquerade === true) expect.sourceNot = src;
    else expect.sourceIP = src;
  }
  return { expect, verdict: `DNAT, ${e.masquerade === true ? 'masqueraded' : 'source kept'}` };
}

/** Pod addresses of the sandbox's own: in the node's pod subnet, from .10 up, never one the dump uses. */
function placeholderAllocator(taken: ReadonlySet<string>): (node: NodeHost, family: IPFamily) => string {
  const next: Record<string, number> = {};
  return (node, family) => {
    const key = `${node}/${family}`;
    const base = NODE_POD_SUBNETS[node][family].gateway.replace(/[.:]1$/, family === 'IPv4' ? '.' : ':');
    for (;;) {
      const n = (next[key] = (next[key] ?? 9) + 1);
      const ip = family === 'IPv4' ? `${base}${n}` : `${base}${n.toString(16)}`;
      if (!taken.has(ip)) return ip;
    }
  };
}

/** Addresses the sandbox itself holds (nodes, client, pod gateways): a dump that uses one cannot be rehearsed there. */
const SANDBOX_ADDRESSES: ReadonlySet<string> = new Set(
  FAMILIES.flatMap((f) => [
    NETWORK[f]['node-a'],
    NETWORK[f]['node-b'],
    NETWORK[f].client,
    NODE_POD_SUBNETS['node-a'][f].gateway,
    NODE_POD_SUBNETS['node-b'][f].gateway,
  ]),
);

/** Every address of every Node in the dump: an endpoint there is a hostNetwork pod, which has no pod of its own. */
function allNodeAddresses(objects: readonly KubeObject[]): Set<string> {
  const out = new Set<string>();
  for (const o of objects) {
    if (o.kind !== 'Node') continue;
    const addresses = (o as { status?: { addresses?: { address?: unknown }[] } }).status?.addresses ?? [];
    for (const a of addresses) {
      const ip = typeof a?.address === 'string' ? parseIP(a.address) : null;
      if (ip) out.add(ip.ip);
    }
  }
  return out;
}

/** Why this service port cannot be rehearsed in the sandbox, or null. */
function unrehearsable(sp: ServicePort, eps: readonly Endpoint[], hostNetwork: ReadonlySet<string>): string | null {
  if (sp.protocol === 'SCTP') return 'SCTP is not probed';
  const frontend = [...sp.clusterIPs, ...sp.externalIPs, ...sp.loadBalancerIPs].find((ip) => SANDBOX_ADDRESSES.has(ip));
  if (frontend) return `its frontend ${frontend} is an address of the sandbox itself`;
  const own = eps.find((e) => SANDBOX_ADDRESSES.has(e.ip));
  if (own) return `its endpoint ${own.ip} is an address of the sandbox itself`;
  const host = eps.find((e) => hostNetwork.has(e.ip));
  if (host) return `its endpoint ${host.ip} is a node's address (hostNetwork), which the sandbox does not rehearse`;
  return null;
}

/** Plans the rehearsal from the dump's objects: pods, probes and their expectations. Pure. */
export function planReplay(objects: readonly KubeObject[], opts: { hostname?: string; family?: IPFamily }): ReplayPlan {
  const base: ProxyConfig = { hostname: '', clusterCIDRs: [], masqueradeAll: false, nodePortAddresses: [] };
  const hostname = opts.hostname ?? busiestNode(buildStates(objects, base).states);
  // The probing pod's addresses are the sandbox's, so the cluster CIDRs are the sandbox's: every pod address
  // a probe starts from is a pod address to the proxy too.
  const config: ProxyConfig = { ...base, hostname, clusterCIDRs: clusterCIDRs([{ ip6: 'dual-stack' }]) };
  const { states } = buildStates(objects, config);
  const hostNetwork = allNodeAddresses(objects);
  const taken = new Set<string>();
  for (const s of states) {
    for (const sp of s.servicePorts.values()) for (const ip of [...sp.clusterIPs, ...sp.externalIPs, ...sp.loadBalancerIPs]) taken.add(ip);
    for (const ip of s.node?.addresses ?? []) taken.add(ip);
  }
  const leftOut: string[] = [];
  const endpointPods = new Map<string, EndpointPod>();
  const chosen: { state: DesiredState; sp: ServicePort }[] = [];
  const place = placeholderAllocator(taken);
  for (const state of states) {
    if (opts.family && state.family !== opts.family) continue;
    for (const sp of [...state.servicePorts.values()].sort((a, b) => a.key.localeCompare(b.key))) {
      const eps = reachableEndpoints(sp);
      const why = unrehearsable(sp, eps, hostNetwork);
      if (why) {
        leftOut.push(`${sp.key} (${state.family}): ${why}`);
        continue;
      }
      const fresh = new Set(eps.map((e) => e.ip).filter((ip) => !endpointPods.has(ip)));
      if (endpointPods.size + fresh.size > MAX_ENDPOINT_PODS) {
        leftOut.push(`${sp.key} (${state.family}): sampled out, the sandbox holds at most ${MAX_ENDPOINT_PODS} endpoint addresses`);
        continue;
      }
      for (const e of eps) {
        taken.add(e.ip);
        let ep = endpointPods.get(e.ip);
        if (!ep) {
          const node: NodeHost = e.nodeName === hostname ? 'node-a' : 'node-b';
          ep = { address: e.ip, family: state.family, pod: { name: `ep${endpointPods.size}`, node, ip: '', ip6: '', ports: [] } };
          endpointPods.set(e.ip, ep);
        }
        const protocol = sp.protocol === 'UDP' ? 'udp' : 'tcp';
        if (!ep.pod.ports.some((p) => p.port === e.port && p.protocol === protocol)) ep.pod.ports.push({ port: e.port, protocol });
      }
      chosen.push({ state, sp });
    }
  }
  for (const ep of endpointPods.values()) {
    ep.pod.ip = place(ep.pod.node, 'IPv4');
    ep.pod.ip6 = place(ep.pod.node, 'IPv6');
  }
  const prober: PodSpec = { name: PROBE_POD, node: 'node-a', ip: place('node-a', 'IPv4'), ip6: place('node-a', 'IPv6'), ports: [] };

  const probes: ReplayProbe[] = [];
  const clientRoutes = new Set<string>();
  const nodeAddresses = new Set<string>();
  for (const { state, sp } of chosen) {
    const f = state.family;
    const sources: [ProbeSource, string | 'node'][] = [
      [`pod:${PROBE_POD}`, f === 'IPv4' ? prober.ip : prober.ip6!],
      ['node-a', 'node'],
      ['client', NETWORK[f].client],
    ];
    // NodePorts are probed at this Node's own address (the one nftables' `primary` default accepts), which
    // node-a takes on, unless that address is another host's of the sandbox: then at node-a's own.
    const listed = (state.node?.addresses ?? []).find((a) => familyOf(a) === f);
    const nodeIP = listed && (!SANDBOX_ADDRESSES.has(listed) || listed === NETWORK[f]['node-a']) ? listed : NETWORK[f]['node-a'];
    if (nodeIP !== NETWORK[f]['node-a']) nodeAddresses.add(nodeIP);
    const frontends: { ip: string; port: number; local: boolean }[] = [
      ...sp.clusterIPs.map((ip) => ({ ip, port: sp.port, local: false })),
      ...[...sp.externalIPs, ...sp.loadBalancerIPs].map((ip) => ({ ip, port: sp.port, local: false })),
      ...(sp.nodePort ? [{ ip: nodeIP, port: sp.nodePort, local: true }] : []),
    ];
    const ipOfId = new Map(reachableEndpoints(sp).map((ep) => [ep.id, ep.ip]));
    const podOf = (endpointId: string) => endpointPods.get(ipOfId.get(endpointId)!)!.pod.name;
    for (const fe of frontends) {
      const outsideReaches = !sp.clusterIPs.includes(fe.ip);
      if (outsideReaches && fe.ip !== NETWORK[f]['node-a']) clientRoutes.add(fe.ip);
      for (const [from, src] of sources) {
        if (from === 'client' && !outsideReaches) continue; // a ClusterIP is not reachable from outside the cluster
        const e = explain({ dst: fe.ip, port: fe.port, protocol: sp.protocol, src, ...(fe.local ? { dstIsLocal: true } : {}) }, state);
        const x = expectationOf(e, src, podOf);
        if (!x) continue;
        probes.push({ servicePort: sp.key, from, to: { ip: fe.ip, port: fe.port, protocol: sp.protocol === 'UDP' ? 'udp' : 'tcp' }, ...x });
      }
    }
  }
  return {
    hostname,
    pods: [...[...endpointPods.values()].map((e) => e.pod), prober],
    endpointPods: [...endpointPods.values()],
    probes,
    nodeAddresses: [...nodeAddresses],
    clientRoutes: [...clientRoutes],
    leftOut,
    config,
  };
}

/** `ip` arguments for a host route of either family. */
function hostRoute(ip: string, ...rest: string[]): string[] {
  const family = familyOf(ip);
  return ['ip', ...(family === 'IPv6' ? ['-6'] : []), 'route', 'replace', `${ip}/${family === 'IPv6' ? 128 : 32}`, ...rest];
}

/** Puts the dump's addresses into the sandbox: on the pods, on node-a, and the routes to them. */
async function addDumpAddresses(topo: Topology, plan: ReplayPlan): Promise<void> {
  const addAddress = (host: Parameters<Topology['execOk']>[0], ip: string) =>
    topo.execOk(host, ['ip', 'addr', 'add', `${ip}/${familyOf(ip) === 'IPv6' ? 128 : 32}`, 'dev', 'eth0', ...(familyOf(ip) === 'IPv6' ? ['nodad'] : [])]);
  for (const ep of plan.endpointPods) {
    const other: NodeHost = ep.pod.node === 'node-a' ? 'node-b' : 'node-a';
    await addAddress(`pod:${ep.pod.name}`, ep.address);
    // The pod answers from the dump's address, as the real pod does: a UDP reply leaves from the source
    // routing picks, and one from the sandbox address would never match the connection the proxy NATed.
    const { subnet, gateway } = NODE_POD_SUBNETS[ep.pod.node][ep.family];
    const ip = ep.family === 'IPv6' ? ['ip', '-6'] : ['ip'];
    const kernelMetric = ep.family === 'IPv6' ? ['metric', '256'] : [];
    await topo.execOk(`pod:${ep.pod.name}`, [
      ...ip,
      'route',
      'replace',
      subnet,
      'dev',
      'eth0',
      ...kernelMetric,
      'proto',
      'kernel',
      'scope',
      'link',
      'src',
      ep.address,
    ]);
    await topo.execOk(`pod:${ep.pod.name}`, [...ip, 'route', 'replace', 'default', 'via', gateway, 'dev', 'eth0', 'src', ep.address]);
    await topo.execOk(ep.pod.node, hostRoute(ep.address, 'dev', 'cbr0'));
    await topo.execOk(other, hostRoute(ep.address, 'via', NETWORK[ep.family][ep.pod.node]));
  }
  for (const ip of plan.nodeAddresses) await addAddress('node-a', ip);
  for (const ip of plan.clientRoutes) await topo.execOk('client', hostRoute(ip, 'via', NETWORK[familyOf(ip)!]['node-a']));
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return `${rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

/** Runs the rehearsal; returns the exit code (0: every probe answered as the model says, 1: some did not). */
export async function runReplay(opts: ReplayOptions): Promise<number> {
  const out = opts.out ?? process.stdout;
  if (process.getuid?.() !== 0) throw new Error('replay builds network namespaces and needs root');
  const objects = await readObjectsFile(opts.dump);
  const plan = planReplay(objects, { ...(opts.hostname !== undefined ? { hostname: opts.hostname } : {}), ...(opts.family ? { family: opts.family } : {}) });
  if (plan.hostname === '') throw new Error(`${opts.dump}: no endpoint names a node; say which node this is with --hostname-override`);
  const podAddress = new Map(plan.endpointPods.map((e) => [e.pod.name, e.address]));
  out.write(
    `kube-proxy-ts replay: ${opts.dump}, mode ${opts.mode}, this node ${plan.hostname}: ${plan.endpointPods.length} endpoint pod(s), ${plan.probes.length} probe(s)\n`,
  );
  for (const l of plan.leftOut) out.write(`  left out: ${l}\n`);
  const tmp = mkdtempSync(path.join(tmpdir(), 'kpt-replay-'));
  const objectsFile = path.join(tmp, 'objects.yaml');
  writeObjectsFile({ objects: objects as Record<string, unknown>[] }, objectsFile);
  // An interrupt ends the process from the sandbox's signal handler (after it removed the namespaces), past
  // the finally below: the objects file goes on exit too.
  const removeTmp = () => rmSync(tmp, { recursive: true, force: true });
  process.once('exit', removeTmp);
  const topo = await Topology.create({ pods: plan.pods });
  const keepsSource = modeDefinition(opts.mode).keepsClientAddress;
  let failed = 0;
  try {
    await addDumpAddresses(topo, plan);
    const argv = [process.execPath, '--disable-warning=ExperimentalWarning', BIN, '--mode', opts.mode, '--from', objectsFile];
    argv.push('--hostname-override', plan.hostname, '--cluster-cidr', plan.config.clusterCIDRs.join(','));
    const proxy = await startProxy(topo, argv);
    await startPodServers(topo);
    out.write(`Network built (prefix ${topo.prefix}); the proxy has synced.\n`);
    if (!keepsSource) out.write(`The ${opts.mode} mode opens its own connections to the endpoints: the source addresses they see are not checked.\n`);
    const rows: string[][] = [['SERVICE PORT', 'FROM', 'TO', 'MODEL', 'ANSWERED', '']];
    for (const p of plan.probes) {
      const answering = p.expect.oneOf !== undefined;
      const r = await runProbe(topo, { from: p.from, to: p.to, tries: answering ? TRIES : 1, timeoutMs: TIMEOUT_MS });
      // A proxy that opens its own connections (userspace) hides the client's address from the backend.
      const v = judge(r.tries, p.expect, keepsSource ? {} : { ignore: ['sourceIP', 'sourceNot'] });
      const seen = new Map<string, number>();
      for (const t of r.tries) {
        const key = typeof t === 'object' ? `${podAddress.get(t.answer.pod) ?? t.answer.pod} (src ${plainAddress(t.answer.sourceIP)})` : t;
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }
      if (!v.ok) failed++;
      const from = p.from === 'node-a' ? 'node' : p.from === 'client' ? 'outside' : 'pod';
      rows.push([p.servicePort, from, formatProbeTarget(p.to), p.verdict, [...seen].map(([k, n]) => `${k}×${n}`).join(' '), v.ok ? 'ok' : 'MISMATCH']);
      if (!v.ok) rows.push(['', '', '', '', `  ${v.reasons.join('; ')}`, '']);
    }
    out.write(`\n${table(rows)}\n`);
    await proxy.stop(10_000);
  } finally {
    await topo.destroy();
    process.removeListener('exit', removeTmp);
    removeTmp();
  }
  out.write(
    failed === 0 ? 'Every probe answered as the model says. The network namespaces are gone.\n' : `${failed} probe(s) did not answer as the model says.\n`,
  );
  return failed === 0 ? 0 : 1;
}
