// The pod server: run as a script inside a pod's namespace, it listens on the pod's ports, IPv4 and
// IPv6 alike, and answers every TCP connection and every UDP datagram with one line
// `<pod-name> <source-ip>\n`, the source in canonical form (closing the connection for TCP). It prints
// "ready" once every port listens, and exits when its stdin closes (its parent went away) or on
// SIGTERM/SIGINT.
//
//   node --disable-warning=ExperimentalWarning podserver.ts '{"name":"a1","ports":[{"port":8080,"protocol":"tcp"}]}'
//
// The module also exports startPodServers(), which starts one per pod of a topology. The script
// part imports only node: modules and the address module, so it starts fast.
import type { ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { realpathSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { plainAddress } from '../../model/addr.ts';
import type { PodPort, PodSpec } from './scenario.ts';
import type { Topology } from './topology.ts';

export const PODSERVER_SCRIPT = fileURLToPath(import.meta.url);

export interface PodServerConfig {
  name: string;
  ports: PodPort[];
}

/** Whether the script started as `node <argv1>` is `file` (the main-module guard of the sandbox scripts). */
export function isMainModule(argv1: string | undefined, file: string): boolean {
  if (!argv1) return false;
  try {
    return realpathSync(argv1) === file;
  } catch {
    return false;
  }
}

/** The answer line for a client seen at `sourceIP`. */
export function answerLine(pod: string, sourceIP: string): string {
  return `${pod} ${sourceIP}\n`;
}

/**
 * The client's address as the answer carries it: canonical, without the IPv4-mapped prefix the dual-stack
 * sockets report for IPv4 clients.
 */
function sourceOf(address: string | undefined): string {
  return plainAddress(address) || '?';
}

/** Listens on every port, on both families (one dual-stack socket each); resolves once all listen. Never exits by itself. */
async function serve(config: PodServerConfig): Promise<void> {
  const listening: Promise<void>[] = [];
  for (const { port, protocol } of config.ports) {
    if (protocol === 'tcp') {
      const server = createServer((socket) => {
        socket.on('error', () => {
          /* the client went away: nothing to answer */
        });
        socket.end(answerLine(config.name, sourceOf(socket.remoteAddress)));
      });
      listening.push(
        new Promise((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: '::', ipv6Only: false, port, backlog: 1024 }, () => {
            server.removeListener('error', reject);
            server.on('error', (e) => process.stderr.write(`tcp ${port}: ${e.message}\n`));
            resolve();
          });
        }),
      );
    } else {
      const socket = createSocket({ type: 'udp6', ipv6Only: false });
      socket.on('message', (_msg, rinfo) => {
        socket.send(answerLine(config.name, sourceOf(rinfo.address)), rinfo.port, rinfo.address);
      });
      listening.push(
        new Promise((resolve, reject) => {
          socket.once('error', reject);
          socket.bind({ address: '::', port }, () => {
            socket.removeListener('error', reject);
            socket.on('error', (e) => process.stderr.write(`udp ${port}: ${e.message}\n`));
            resolve();
          });
        }),
      );
    }
  }
  await Promise.all(listening);
}

function main(): void {
  const config = JSON.parse(process.argv[2] ?? '') as PodServerConfig;
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
  serve(config).then(
    () => process.stdout.write('ready\n'),
    (e: unknown) => {
      process.stderr.write(`pod server ${config.name}: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}

if (isMainModule(process.argv[1], PODSERVER_SCRIPT)) main();

// ---- host side ----------------------------------------------------------------------------------

/** A running pod server. */
export interface PodServerHandle {
  pod: PodSpec;
  child: ChildProcess;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Whether it is still running. */
  running(): boolean;
}

/**
 * Starts a pod server in every pod of the topology that has ports and waits until all are ready.
 * They are stopped by topo.destroy().
 */
export async function startPodServers(topo: Topology, timeoutMs = 10_000): Promise<PodServerHandle[]> {
  const handles = topo.pods.filter((pod) => pod.ports.length > 0).map((pod) => startPodServer(topo, pod, timeoutMs));
  return Promise.all(handles);
}

function startPodServer(topo: Topology, pod: PodSpec, timeoutMs: number): Promise<PodServerHandle> {
  const config: PodServerConfig = { name: pod.name, ports: pod.ports };
  const child = topo.spawn(`pod:${pod.name}`, [process.execPath, '--disable-warning=ExperimentalWarning', PODSERVER_SCRIPT, JSON.stringify(config)]);
  let err = '';
  let out = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (err.length < 64_000) err += d;
  });
  const handle: PodServerHandle = {
    pod,
    child,
    stderr: () => err,
    running: () => child.exitCode === null && child.signalCode === null,
  };
  const ports = pod.ports.map((p) => `${p.port}/${p.protocol}`).join(', ');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
    const onExit = (code: number | null, signal: string | null): void => fail(`exited (${signal ?? `code ${code}`}) before it was ready`);
    function fail(why: string): void {
      clearTimeout(timer);
      child.removeListener('exit', onExit);
      reject(new Error(`pod server of ${pod.name} (${[pod.ip, pod.ip6].filter(Boolean).join(', ')}: ${ports}) ${why}${err ? `:\n${err.trim()}` : ''}`));
    }
    child.once('exit', onExit);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      if (out.includes('ready\n')) return;
      out += d;
      if (out.includes('ready\n')) {
        clearTimeout(timer);
        child.removeListener('exit', onExit);
        resolve(handle);
      }
    });
  });
}
