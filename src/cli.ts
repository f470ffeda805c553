// The command line: `kube-proxy-ts [flags]` runs the proxy (kube-proxy's flags, src/config.ts); `state`,
// `explain`, `demo` and `compare` are this proxy's own commands. Logs go to stderr; stdout carries only what a
// command prints.
import { writeFile } from 'node:fs/promises';
import {
  RUN_FLAGS,
  STATE_FLAGS,
  type RunOptions,
  UsageError,
  flagsHelp,
  nodeName,
  parseCIDRList,
  parseFlags,
  resolveLogging,
  resolveRunOptions,
} from './config.ts';
import { encodeConfiguration, watchConfigFile } from './config-file.ts';
import type { FlagSpec } from './flags.ts';
import { configureLogging, log } from './log.ts';
import { MODES, type ModeName } from './modes/types.ts';
import { issueLine } from './model/parse.ts';
import { type Explanation, explain, formatExplanation } from './model/explain.ts';
import { hostPort, parseHostPort, parseIP } from './model/addr.ts';
import type { ProxyConfig } from './model/types.ts';
import { buildState, buildStates } from './model/store.ts';
import { type ServicePortView, stateJSONChunks, stateTableChunks, viewsToTable } from './model/view.ts';
import { FileSource, SourceFileError, readObjectsFile } from './watch/file.ts';
import { KubeConfigError, loadKubeConfig } from './watch/api.ts';
import { StartupError } from './errors.ts';
import { versionText } from './version.ts';
import { collectGarbage } from './memory.ts';
import { writeChunks } from './one-shot.ts';

const USAGE = `kube-proxy-ts: a kube-proxy replacement (iptables, nftables and userspace modes).

Usage:
  kube-proxy-ts [flags]                 run the proxy on this node
  kube-proxy-ts state --from FILE [...] print this node's desired state (what every mode programs)
  kube-proxy-ts explain --from FILE --to IP:PORT [--src IP]   what happens to one connection, and why
  kube-proxy-ts demo [--mode MODE]      run the sandbox demo (network namespaces; needs root)
  kube-proxy-ts compare [--modes M,M]   the same traffic through each mode, side by side (needs root)
  kube-proxy-ts replay --from DUMP [--mode MODE]   rehearse a cluster's objects in a sandbox (needs root)

Flags:
${flagsHelp(RUN_FLAGS)}

Run 'kube-proxy-ts state --help' for the state command.
`;

const STATE_USAGE = `Usage: kube-proxy-ts state --from FILE [--hostname-override NODE] [--cluster-cidr CIDR] [-o table|json]
       kube-proxy-ts state --node-url URL [-o table|json]

Prints the node-local desired state built from the Services, EndpointSlices and Node in FILE (or, with
--node-url, the live state of a running proxy, from its metrics address): one row (or JSON object) per service
port and IP family with its frontends, policies, affinity and endpoints. Invalid objects are reported on stderr
and left out.

Flags:
${flagsHelp(STATE_FLAGS)}
`;

/** A command's flags as name -> value (booleans as booleans), with its logging configured from them. */
function commandFlags(argv: readonly string[], specs: readonly FlagSpec[]): Record<string, string | boolean> {
  const parsed = parseFlags(argv, specs);
  if (specs.some((s) => s.name === 'v')) configureLogging(resolveLogging(parsed));
  const out: Record<string, string | boolean> = {};
  for (const s of specs) {
    const v = parsed.values.get(s.name);
    if (v !== undefined) out[s.name] = s.kind === 'bool' ? v === 'true' : v;
  }
  return out;
}

async function stateCommand(argv: string[]): Promise<number> {
  const f = commandFlags(argv, STATE_FLAGS);
  if (f.help) {
    process.stdout.write(STATE_USAGE);
    return 0;
  }
  const output = (f.output as string | undefined) ?? 'table';
  if (output !== 'table' && output !== 'json') throw new UsageError(`-o: ${JSON.stringify(output)} is not table or json`);
  if (typeof f['node-url'] === 'string') {
    // A running proxy answers with exactly `state -o json` of its live state.
    const body = await askNode(f['node-url'], '/debug/state');
    process.stdout.write(output === 'json' ? body : viewsToTable(JSON.parse(body) as ServicePortView[]));
    return 0;
  }
  if (typeof f.from !== 'string') throw new UsageError('state needs --from FILE or --node-url URL');
  const config = {
    hostname: nodeName((f['hostname-override'] as string | undefined) ?? ''),
    clusterCIDRs: parseCIDRList((f['cluster-cidr'] as string | undefined) ?? '', '--cluster-cidr'),
    masqueradeAll: false,
    nodePortAddresses: [],
  };
  const { states, issues } = await statesFromFile(f.from, config);
  for (const i of issues) process.stderr.write(`${issueLine(i)}\n`);
  collectGarbage();
  await writeChunks(process.stdout, output === 'json' ? stateJSONChunks(states) : stateTableChunks(states));
  return 0;
}

/**
 * Both families' states from a file. The objects read live in this function only (a variable set to null in
 * the caller would still be held by its suspended frame): garbage once it returns, before the output is made.
 */
async function statesFromFile(file: string, config: ProxyConfig): Promise<ReturnType<typeof buildStates>> {
  return buildStates(await readObjectsFile(file), config);
}

const EXPLAIN_FLAGS: FlagSpec[] = [
  { name: 'to', kind: 'string', arg: 'IP:PORT[/tcp|udp|sctp]', help: 'the destination of the connection (required)' },
  { name: 'src', kind: 'string', arg: 'IP|node', help: "the source address, or 'node' for a process on the node (default node)" },
  { name: 'dst-local', kind: 'bool', help: 'the destination is an address of this node (NodePorts); guessed when not given' },
  { name: 'masquerade-all', kind: 'bool', help: 'as the proxy flag' },
  { name: 'nodeport-addresses', kind: 'string', arg: 'CIDR[,CIDR]', help: 'as the proxy flag' },
  { name: 'output', aliases: ['o'], kind: 'string', arg: 'text|json', help: 'output format (default text)' },
];

const EXPLAIN_USAGE = `Usage: kube-proxy-ts explain --from FILE --to IP:PORT[/PROTO] [--src IP|node] [--hostname-override NODE] [--cluster-cidr CIDR]
       kube-proxy-ts explain --node-url URL --to IP:PORT[/PROTO] [--src IP|node]

Explains what this node's proxy does with one new connection: which service port and frontend it hits, which
traffic policy applies, whether it is rejected, dropped or DNATed, to which endpoints with what chance, and
whether it is masqueraded. The same decisions every mode programs.

Flags:
${flagsHelp([...STATE_FLAGS.filter((f) => f.name !== 'output' && f.name !== 'help'), ...EXPLAIN_FLAGS])}
`;

async function explainCommand(argv: string[]): Promise<number> {
  const f = commandFlags(argv, [...STATE_FLAGS.filter((x) => x.name !== 'output'), ...EXPLAIN_FLAGS]);
  if (f.help) {
    process.stdout.write(EXPLAIN_USAGE);
    return 0;
  }
  if (typeof f.from !== 'string' && typeof f['node-url'] !== 'string') throw new UsageError('explain needs --from FILE or --node-url URL');
  const toText = String(f.to ?? '');
  const slash = toText.lastIndexOf('/');
  const protoText = slash > toText.lastIndexOf(']') && slash > 0 ? toText.slice(slash + 1) : 'tcp';
  const to = parseHostPort(slash > toText.lastIndexOf(']') && slash > 0 ? toText.slice(0, slash) : toText);
  if (!to || !/^(tcp|udp|sctp)$/i.test(protoText)) throw new UsageError('explain needs --to IP:PORT[/tcp|udp|sctp] ([IPv6]:PORT for IPv6)');
  const srcText = (f.src as string | undefined) ?? 'node';
  const srcIP = srcText === 'node' ? null : parseIP(srcText);
  if (srcText !== 'node' && !srcIP) throw new UsageError(`--src: ${JSON.stringify(srcText)} is not an IP address or 'node'`);
  if (srcIP && srcIP.family !== to.ip.family) throw new UsageError(`--src ${srcIP.ip} and --to ${to.ip.ip} are of different IP families`);
  const src = srcIP?.ip ?? 'node';
  if (typeof f['node-url'] === 'string') {
    const query = new URLSearchParams({ to: hostPort(to.ip.ip, to.port), src, proto: protoText.toLowerCase() });
    if (f['dst-local'] === true) query.set('dst-local', 'true');
    const body = await askNode(f['node-url'], `/debug/explain?${query}`);
    const q = { dst: to.ip.ip, port: to.port, protocol: protoText.toUpperCase() as 'TCP' | 'UDP' | 'SCTP', src };
    process.stdout.write(f.output === 'json' ? body : formatExplanation(q, JSON.parse(body) as Explanation));
    return 0;
  }
  const objects = await readObjectsFile(f.from as string);
  const config = {
    hostname: nodeName((f['hostname-override'] as string | undefined) ?? ''),
    clusterCIDRs: parseCIDRList((f['cluster-cidr'] as string | undefined) ?? '', '--cluster-cidr'),
    masqueradeAll: f['masquerade-all'] === true,
    nodePortAddresses: parseCIDRList((f['nodeport-addresses'] as string | undefined) ?? '', '--nodeport-addresses'),
  };
  // The destination's family decides which family's state the connection meets.
  const { state, issues } = buildState(objects, config, to.ip.family);
  for (const i of issues) process.stderr.write(`${issueLine(i)}\n`);
  const q = {
    dst: to.ip.ip,
    port: to.port,
    protocol: protoText.toUpperCase() as 'TCP' | 'UDP' | 'SCTP',
    src,
    ...(f['dst-local'] === true ? { dstIsLocal: true } : {}),
  };
  const e = explain(q, state);
  process.stdout.write(f.output === 'json' ? `${JSON.stringify(e, null, 2)}\n` : formatExplanation(q, e));
  return 0;
}

/** GET a running proxy's debug endpoint (on its metrics address); the body, or a UsageError saying what went wrong. */
async function askNode(base: string, path: string): Promise<string> {
  let url: URL;
  try {
    url = new URL(path, base.endsWith('/') ? base : `${base}/`);
  } catch {
    throw new UsageError(`--node-url: ${JSON.stringify(base)} is not a URL`);
  }
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  } catch (e) {
    throw new UsageError(`--node-url: cannot reach ${url.origin}: ${(e as Error).message}`);
  }
  const body = await res.text();
  if (!res.ok) throw new UsageError(`--node-url: ${url.pathname} answered ${res.status}: ${body.trim().split('\n')[0]}`);
  return body;
}

const COMPARE_FLAGS: FlagSpec[] = [
  { name: 'modes', kind: 'string', arg: 'MODE[,MODE]', help: 'the modes to compare (default iptables,nftables,userspace)' },
  { name: 'rounds', kind: 'string', arg: 'N', help: 'rounds per figure, the median is reported (default 5)' },
  { name: 'seconds', kind: 'string', arg: 'S', help: 'seconds per throughput and connection-rate round (default 2)' },
  { name: 'quick', kind: 'bool', help: 'fewer, shorter rounds and a 200-service sync (for a first look)' },
  { name: 'no-docs', kind: 'bool', help: 'do not write the figures into docs/benchmarks.md' },
  { name: 'help', aliases: ['h'], kind: 'bool', help: 'show this help' },
];

async function compareCommand(argv: string[]): Promise<number> {
  const f = commandFlags(argv, COMPARE_FLAGS);
  if (f.help) {
    process.stdout.write(
      `Usage: kube-proxy-ts compare [--modes M,M] [--quick]\n\nRuns the same traffic through each mode in turn, in a sandbox network (network namespaces; root needed), and\nprints bulk throughput of one TCP stream, short connections per second, p50/p99 connection latency and the\nsync time of a 2,000-service cluster. The figures also go into docs/benchmarks.md.\n\nFlags:\n${flagsHelp(COMPARE_FLAGS)}\n`,
    );
    return 0;
  }
  if (process.getuid?.() !== 0) throw new Error('compare builds network namespaces and needs root');
  const modes = typeof f.modes === 'string' ? f.modes.split(',') : [...MODES];
  for (const m of modes) if (!MODES.includes(m as ModeName)) throw new UsageError(`--modes: ${JSON.stringify(m)} is not one of ${MODES.join(', ')}`);
  const num = (k: string) => (typeof f[k] === 'string' ? Number(f[k]) : undefined);
  const { runCompare } = await import('./lab/compare/index.ts');
  const quick = f.quick === true;
  const r = await runCompare({
    modes: modes as ModeName[],
    ...(quick ? { rounds: 2, seconds: 1, syncServices: 200 } : {}),
    ...(num('rounds') ? { rounds: num('rounds') } : {}),
    ...(num('seconds') ? { seconds: num('seconds') } : {}),
    ...(f['no-docs'] === true || quick ? { docsFile: null } : {}),
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${r.table}\n`);
  return 0;
}

const DEMO_FLAGS: FlagSpec[] = [
  { name: 'mode', aliases: ['proxy-mode'], kind: 'string', arg: 'MODE', help: 'iptables (default), nftables or userspace' },
  { name: 'scenario', kind: 'string', arg: 'FILE', help: 'a scenario file (default: examples/demo.yaml)' },
  { name: 'help', aliases: ['h'], kind: 'bool', help: 'show this help' },
];

async function demoCommand(argv: string[]): Promise<number> {
  const f = commandFlags(argv, DEMO_FLAGS);
  if (f.help) {
    process.stdout.write(
      `Usage: kube-proxy-ts demo [--mode MODE] [--scenario FILE]\n\nBuilds a sandbox network in network namespaces (root needed), runs the proxy on its node-a, sends\ntraffic and shows which backend answered; then removes everything.\n\nFlags:\n${flagsHelp(DEMO_FLAGS)}\n`,
    );
    return 0;
  }
  const mode = (f.mode as string | undefined) ?? 'iptables';
  if (!MODES.includes(mode as ModeName)) throw new UsageError(`--mode: ${JSON.stringify(mode)} is not one of ${MODES.join(', ')}`);
  const { runDemo, DEMO_SCENARIO } = await import('./lab/demo.ts');
  return runDemo(mode as ModeName, (f.scenario as string | undefined) ?? DEMO_SCENARIO);
}

const REPLAY_FLAGS: FlagSpec[] = [
  { name: 'from', kind: 'string', arg: 'DUMP', help: 'the output of `kubectl get services,endpointslices,nodes -A -o json` (required)' },
  { name: 'mode', aliases: ['proxy-mode'], kind: 'string', arg: 'MODE', help: 'iptables (default), nftables or userspace' },
  { name: 'ip-family', kind: 'string', arg: 'IPv4|IPv6', help: "probe only this family's service ports (default: both)" },
  { name: 'hostname-override', kind: 'string', arg: 'NODE', help: 'this node (default: the node holding the most endpoints)' },
  { name: 'help', aliases: ['h'], kind: 'bool', help: 'show this help' },
];

async function replayCommand(argv: string[]): Promise<number> {
  const f = commandFlags(argv, REPLAY_FLAGS);
  if (f.help) {
    process.stdout.write(
      `Usage: kube-proxy-ts replay --from DUMP [--mode MODE] [--ip-family IPv4|IPv6] [--hostname-override NODE]\n\nRehearses a cluster: builds a sandbox network in network namespaces (root needed) with one pod per\nendpoint address of the dump, at its own address, runs the proxy on this node, probes every service port\nfrom a pod, from the node and from outside, and checks each answer against the model; exits 1 on any\nmismatch. Removes everything it made.\n\nFlags:\n${flagsHelp(REPLAY_FLAGS)}\n`,
    );
    return 0;
  }
  if (typeof f.from !== 'string') throw new UsageError('replay needs --from DUMP');
  const mode = (f.mode as string | undefined) ?? 'iptables';
  if (!MODES.includes(mode as ModeName)) throw new UsageError(`--mode: ${JSON.stringify(mode)} is not one of ${MODES.join(', ')}`);
  const family = f['ip-family'] as string | undefined;
  if (family !== undefined && family !== 'IPv4' && family !== 'IPv6') throw new UsageError(`--ip-family: ${JSON.stringify(family)} is not IPv4 or IPv6`);
  const hostname = f['hostname-override'] as string | undefined;
  const { runReplay } = await import('./lab/replay.ts');
  return runReplay({
    dump: f.from,
    mode: mode as ModeName,
    ...(family ? { family } : {}),
    ...(hostname !== undefined ? { hostname: nodeName(hostname) } : {}),
  });
}

/** The run command after its flags: the one-shot actions, else the proxy until SIGTERM (or a changed --config). */
async function runCommand(opts: RunOptions): Promise<number> {
  // Loaded here: `state` and `explain` never need the daemon's modules (its servers, sync loops, API client),
  // and each module loaded stays resident for the life of the process.
  const [{ cleanupAll, dryRun, runProxy }, { applyNodeSettings }, { requestRestart, restartReason }] = await Promise.all([
    import('./daemon/run.ts'),
    import('./daemon/node-setup.ts'),
    import('./daemon/lifecycle.ts'),
  ]);
  configureLogging(opts.logging);
  for (const n of opts.notices) log.warn({ event: 'config-notice', subject: n.subject }, `${n.subject}: ${n.message}`);
  if (opts.writeConfigTo) {
    await writeFile(opts.writeConfigTo, encodeConfiguration(opts.configuration));
    log.info({ event: 'wrote-config', file: opts.writeConfigTo }, 'wrote the configuration');
    return 0;
  }
  if (opts.cleanup) return cleanupAll(opts);
  if (opts.dryRun) return dryRun(opts);
  // A source the proxy cannot use ends it before it touches the node (upstream builds its client before its
  // conntrack setup): one line and exit 1.
  // The file's read is kept for the daemon's first list (a 10,000-service file takes a second to read).
  const first = opts.from ? await FileSource.readFirst(opts.from) : null;
  if (!opts.from) await loadKubeConfig(opts.kubeconfig, opts.api.master);
  await applyNodeSettings(opts);
  if (opts.initOnly) return 0;
  // Upstream exits when its --config changes, so that the pod restarts with the new ConfigMap.
  const stopWatching = opts.configFile
    ? watchConfigFile(opts.configFile.path, opts.configFile.text, () => requestRestart('the configuration file changed', { file: opts.configFile!.path }))
    : () => {};
  try {
    const code = await runProxy(opts, first);
    return restartReason() !== null ? 1 : code;
  } finally {
    stopWatching();
  }
}

export async function main(argv: string[]): Promise<number> {
  try {
    if (argv[0] === 'state') return await stateCommand(argv.slice(1));
    if (argv[0] === 'demo') return await demoCommand(argv.slice(1));
    if (argv[0] === 'explain') return await explainCommand(argv.slice(1));
    if (argv[0] === 'compare') return await compareCommand(argv.slice(1));
    if (argv[0] === 'replay') return await replayCommand(argv.slice(1));
    const opts = await resolveRunOptions(argv);
    if (opts === 'help') {
      process.stdout.write(USAGE);
      return 0;
    }
    if ('version' in opts) {
      process.stdout.write(versionText(opts.version));
      return 0;
    }
    return await runCommand(opts);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`kube-proxy-ts: ${e.message}\nRun 'kube-proxy-ts --help' for usage.\n`);
      return 2;
    }
    // A proxy that cannot start says why in one line and exits non-zero.
    if (e instanceof SourceFileError || e instanceof KubeConfigError || e instanceof StartupError) {
      process.stderr.write(`kube-proxy-ts: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
