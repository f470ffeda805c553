// Taking over node-a without a gap (src/daemon/takeover.ts). Node-a starts with another data path for the same
// objects: upstream kube-proxy's own rules (built by test/upstream, its iptables or its nftables mode), or this
// proxy's other mode. Clients keep opening connections every 20 ms to a ClusterIP, a NodePort (from outside) and a
// ClusterIP with ClientIP affinity, and to an IPv6 ClusterIP, and one connection stays open, while kube-proxy-ts
// starts, programs its path (both families) and removes the old one. Then: the old rules are gone, no connection failed, and the held connection still
// carries data (its NAT lives in conntrack).
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPodServers } from '../../src/lab/sandbox/podserver.ts';
import { type ProxyProcess, binCommand, proxyArgs, proxyCommand, startProxy } from '../../src/lab/sandbox/proxy.ts';
import type { PodSpec } from '../../src/lab/sandbox/scenario.ts';
import { ADDRESSES, NETWORK, sweepStale, Topology } from '../../src/lab/sandbox/topology.ts';
import { TABLE as OWN_NFT_TABLE } from '../../src/modes/nftables/index.ts';
import type { ModeName } from '../../src/modes/types.ts';
import type { Family, KubeObject, UpstreamConfig } from '../upstream/cluster.ts';
import { isUpstreamChain, upstreamIptables } from '../upstream/iptables.ts';
import { UPSTREAM_NFT_TABLE, upstreamNftables } from '../upstream/nftables.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

const FIXTURES = path.join(import.meta.dirname, 'fixtures');
const CLIENT_LOOP = path.join(FIXTURES, 'client-loop.ts');
const HELD_CONNECTION = path.join(FIXTURES, 'held-connection.ts');
const NODE = [process.execPath, '--disable-warning=ExperimentalWarning'];

const PODS: PodSpec[] = [
  { name: 'a1', node: 'node-a', ip: '198.19.1.11', ip6: '2001:2:0:11::11', ports: [{ port: 8080, protocol: 'tcp' }] },
  { name: 'a2', node: 'node-a', ip: '198.19.1.12', ip6: '2001:2:0:11::12', ports: [] },
  { name: 'e1', node: 'node-a', ip: '198.19.1.13', ports: [] },
  { name: 'b1', node: 'node-b', ip: '198.19.2.11', ip6: '2001:2:0:12::11', ports: [{ port: 8080, protocol: 'tcp' }] },
];
const ECHO_PORT = 9000;

const service = (name: string, ip: string, port: number, spec: KubeObject = {}): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'shop' },
  spec: { clusterIP: ip, clusterIPs: [ip], ipFamilies: ['IPv4'], type: 'ClusterIP', ports: [{ name: 'p', port, protocol: 'TCP' }], ...spec },
});
const slice = (svc: string, port: number, pods: string[], family: Family = 'IPv4'): KubeObject => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${svc}-${family === 'IPv4' ? 1 : 2}`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } },
  addressType: family,
  ports: [{ name: 'p', port, protocol: 'TCP' }],
  endpoints: pods.map((name) => {
    const pod = PODS.find((p) => p.name === name)!;
    return { addresses: [family === 'IPv4' ? pod.ip : pod.ip6!], conditions: { ready: true }, nodeName: pod.node };
  }),
});

const WEB = '198.18.100.10';
const WEB6 = '2001:2:0:100::10';
const NODEPORT = 30080;
const STICKY = '198.18.100.12';
const ECHO = '198.18.100.13';
const OBJECTS: KubeObject[] = [
  { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: ADDRESSES['node-a'] }] } },
  service('web', WEB, 80, {
    clusterIPs: [WEB, WEB6],
    ipFamilies: ['IPv4', 'IPv6'],
    ipFamilyPolicy: 'RequireDualStack',
    ports: [{ name: 'p', port: 80, targetPort: 8080, protocol: 'TCP' }],
  }),
  slice('web', 8080, ['a1', 'b1']),
  slice('web', 8080, ['a1', 'b1'], 'IPv6'),
  service('np', '198.18.100.11', 80, { type: 'NodePort', ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort: NODEPORT, protocol: 'TCP' }] }),
  slice('np', 8080, ['a1', 'b1']),
  service('sticky', STICKY, 80, {
    ports: [{ name: 'p', port: 80, targetPort: 8080, protocol: 'TCP' }],
    sessionAffinity: 'ClientIP',
    sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
  }),
  slice('sticky', 8080, ['a1', 'b1']),
  service('echo', ECHO, ECHO_PORT),
  slice('echo', ECHO_PORT, ['e1']),
];

/** Upstream kube-proxy on node-a, set up as the sandbox runs this proxy: its cluster CIDRs, every local address taking NodePorts. */
const upstreamConfig = (family: Family): UpstreamConfig => ({
  family,
  nodeName: 'node-a',
  clusterCIDR: NETWORK[family].clusterCIDR,
});
const FAMILIES: readonly Family[] = ['IPv4', 'IPv6'];
const iptablesBinary = (family: Family, tool: 'iptables-restore' | 'iptables-save') => (family === 'IPv6' ? tool.replace('iptables', 'ip6tables') : tool);

/** The proxy's command line on node-a, with both families' cluster CIDRs. */
const command = (mode: ModeName) => proxyCommand(mode, objectsFile, PODS);

let topo: Topology;
let dir: string;
let objectsFile: string;

/** One way node-a was programmed before the takeover: how to put it there, and how to see that it is gone. */
interface Before {
  name: string;
  load(): Promise<void>;
  /** What of it is still in node-a (empty once removed). */
  leftovers(): Promise<string[]>;
}

/** Upstream kube-proxy's chains (and jumps to them) still in node-a's iptables, per family. `keep`: chains the running mode owns too. */
async function upstreamChainsLeft(keep: ReadonlySet<string> = new Set()): Promise<string[]> {
  const left: string[] = [];
  for (const family of FAMILIES) {
    const saved = (await topo.execOk('node-a', [iptablesBinary(family, 'iptables-save')])).stdout;
    let table = '';
    for (const line of saved.split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      const chain = /^:(\S+)/.exec(line)?.[1];
      if (chain && isUpstreamChain(table, chain) && !keep.has(`${table} ${chain}`)) left.push(`${family} ${table} chain ${chain}`);
      const target = / -j (\S+)/.exec(line)?.[1];
      if (line.startsWith('-A ') && target && isUpstreamChain(table, target) && !keep.has(`${table} ${target}`)) left.push(`${family} ${table} rule ${line}`);
    }
  }
  return left;
}

/** The nftables tables of this name (any family) still in node-a. */
async function nftTablesLeft(name: string): Promise<string[]> {
  const listed = (await topo.execOk('node-a', ['nft', 'list', 'tables'])).stdout;
  return listed.split('\n').filter((l) => l.trim().endsWith(` ${name}`));
}

const upstreamIptablesBefore: Before = {
  name: "upstream kube-proxy's iptables mode",
  async load() {
    for (const family of FAMILIES) {
      const { loadable } = upstreamIptables(OBJECTS, upstreamConfig(family));
      await topo.execOk('node-a', [iptablesBinary(family, 'iptables-restore'), '--noflush'], { input: loadable });
    }
  },
  leftovers: () => upstreamChainsLeft(),
};

const upstreamNftablesBefore: Before = {
  name: "upstream kube-proxy's nftables mode",
  async load() {
    const batch = FAMILIES.map((family) => upstreamNftables(OBJECTS, upstreamConfig(family))).join('');
    await topo.execOk('node-a', ['nft', '-f', '-'], { input: batch });
  },
  leftovers: () => nftTablesLeft(UPSTREAM_NFT_TABLE),
};

/** This proxy's own mode, run until synced and stopped: its rules stay, as after a DaemonSet update. */
function ownMode(mode: ModeName, leftovers: () => Promise<string[]>): Before {
  return {
    name: `this proxy's ${mode} mode`,
    async load() {
      const proxy = await startProxy(topo, command(mode));
      await waitForLine(proxy, '"event":"takeover-done"');
      await proxy.stop(5000);
    },
    leftovers,
  };
}

async function waitForLine(proxy: ProxyProcess, text: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!proxy.output().includes(text)) {
    if (Date.now() > deadline) throw new Error(`no ${text} within ${timeoutMs} ms\n${proxy.output().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Attempt {
  at: number;
  ok: boolean;
  pod?: string;
  err?: string;
}

/** test/e2e/fixtures/client-loop.ts from a host: a new connection every 20 ms until stopped. */
function startClient(host: 'pod:a2' | 'client', ip: string, port: number) {
  const opts = { proto: 'tcp', ip, port, intervalMs: 20, durationMs: 120_000, timeoutMs: 1000 };
  const child: ChildProcess = topo.spawn(host, [...NODE, CLIENT_LOOP, JSON.stringify(opts)]);
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise((r) => child.once('exit', r));
  const attempts = (): Attempt[] =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Attempt);
  return {
    target: `${host} -> ${ip}:${port}`,
    attempts,
    async stop(): Promise<Attempt[]> {
      child.kill('SIGTERM');
      await exited;
      return attempts();
    },
  };
}

/** test/e2e/fixtures/held-connection.ts: one connection from pod a2 to the echo service, kept open. */
async function holdConnection() {
  const child = topo.spawn('pod:a2', [...NODE, HELD_CONNECTION, 'hold', ECHO, String(ECHO_PORT)]);
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const until = async (text: string) => {
    const deadline = Date.now() + 5000;
    while (!out.includes(text)) {
      if (Date.now() > deadline) throw new Error(`held connection: no "${text}" (output: ${JSON.stringify(out)})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until('connected\n');
  return {
    /** Sends a line and waits for its echo on the same connection. */
    async roundTrip(line: string): Promise<void> {
      child.stdin?.write(`${line}\n`);
      await until(`echo ${line}\n`);
      expect(out).not.toContain('closed');
    },
    stop: () => child.kill('SIGTERM'),
  };
}

/** Node-a with no rules at all and no connection state: each case starts from its own "before" only. */
async function resetNodeA(): Promise<void> {
  await topo.execOk('node-a', ['nft', 'flush', 'ruleset']);
  await topo.exec('node-a', ['conntrack', '-F']);
}

beforeAll(async () => {
  await sweepStale();
  dir = mkdtempSync(path.join(tmpdir(), 'kpt-takeover-'));
  objectsFile = path.join(dir, 'objects.json');
  writeFileSync(objectsFile, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: OBJECTS }));
  topo = await Topology.create({ pods: PODS });
  await startPodServers(topo);
  const echo = topo.spawn('pod:e1', [...NODE, HELD_CONNECTION, 'serve', String(ECHO_PORT)]);
  await new Promise<void>((resolve, reject) => {
    echo.stdout?.setEncoding('utf8').on('data', (d: string) => d.includes('ready') && resolve());
    echo.once('exit', (code) => reject(new Error(`the echo server exited (${code})`)));
  });
}, 120_000);

afterAll(async () => {
  await topo?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const CASES: { before: () => Before; mode: ModeName }[] = [
  { before: () => upstreamIptablesBefore, mode: 'iptables' },
  { before: () => upstreamNftablesBefore, mode: 'nftables' },
  { before: () => upstreamIptablesBefore, mode: 'userspace' },
  { before: () => ownMode('iptables', () => upstreamChainsLeft()), mode: 'nftables' },
  { before: () => ownMode('nftables', () => nftTablesLeft(OWN_NFT_TABLE)), mode: 'iptables' },
];

describe('takeover without a gap', () => {
  for (const c of CASES) {
    it(`${c.mode} mode takes over from ${c.before().name}`, async () => {
      const before = c.before();
      await resetNodeA();
      await before.load();
      expect(await before.leftovers(), 'the "before" state is in place').not.toEqual([]);

      const clients = [
        startClient('pod:a2', WEB, 80),
        startClient('client', ADDRESSES['node-a'], NODEPORT),
        startClient('pod:a2', STICKY, 80),
        startClient('pod:a2', WEB6, 80),
      ];
      const held = await holdConnection();
      let proxy: ProxyProcess | null = null;
      try {
        await held.roundTrip('before');
        // The old path serves before anything changes.
        await waitUntil(
          () => clients.every((cl) => cl.attempts().filter((a) => a.ok).length >= 5),
          5000,
          () => report(clients),
        );
        const switchAt = Date.now();
        proxy = await startProxy(topo, command(c.mode));
        await waitForLine(proxy, '"event":"takeover-done"');
        const takenOverAt = Date.now();

        expect(await leftoversAfter(before, c.mode), `what is left of ${before.name}`).toEqual([]);
        expect(proxy.output()).not.toContain('"event":"takeover-failed"');
        // Traffic goes on through the new path alone for a while.
        await new Promise((r) => setTimeout(r, 1500));
        await held.roundTrip('after');

        const results = await Promise.all(clients.map((cl) => cl.stop()));
        results.forEach((attempts, i) => {
          const failed = attempts.filter((a) => !a.ok);
          expect(failed, `${clients[i]!.target}: failed attempts\n${proxy!.output().slice(-3000)}`).toEqual([]);
          // The attempts span the whole switch: before the proxy started and after the old path was gone.
          expect(attempts[0]!.at).toBeLessThan(switchAt);
          expect(attempts.at(-1)!.at).toBeGreaterThan(takenOverAt + 1000);
        });
      } finally {
        held.stop();
        await Promise.all(clients.map((cl) => cl.stop()));
        await proxy?.stop(5000);
      }
    });
  }
});

/**
 * What is left of the "before" state once the mode took over. The iptables mode keeps upstream's layout and
 * names, so over upstream's iptables rules the chains it writes itself are its own, not leftovers.
 */
async function leftoversAfter(before: Before, mode: ModeName): Promise<string[]> {
  if (before !== upstreamIptablesBefore || mode !== 'iptables') return before.leftovers();
  const own = new Set<string>();
  for (const family of FAMILIES) {
    const dry = await topo.execOk('node-a', binCommand(['--dry-run', '--ip-family', family, ...proxyArgs(mode, objectsFile, PODS)]));
    let table = '';
    for (const line of dry.stdout.split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      const chain = /^:(\S+)/.exec(line)?.[1];
      if (chain) own.add(`${table} ${chain}`);
    }
  }
  return upstreamChainsLeft(own);
}

async function waitUntil(ok: () => boolean, timeoutMs: number, why: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${why()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function report(clients: ReturnType<typeof startClient>[]): string {
  return clients.map((cl) => `${cl.target}: ${JSON.stringify(cl.attempts().slice(-3))}`).join('\n');
}
