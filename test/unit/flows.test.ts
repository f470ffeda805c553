// Every flow of the behaviour table (flows.ts, upstream kube-proxy's packet-flow tests) through both kernel
// modes: each case is rendered by the mode itself (its Proxier.dryRun, exactly what --dry-run prints), loaded
// into the mode's packet simulator (iptables-sim.ts, nftables-sim.ts), and the first packet of each flow is
// followed along every random choice the rules make. The answer must be the table's: the set of endpoints,
// each as likely, and masquerade or not; or REJECT, DROP, or nothing.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { hostPort, inAnyCIDR } from '../../src/model/addr.ts';
import type { DesiredState } from '../../src/model/types.ts';
import { MODE_DEFINITIONS } from '../../src/modes/index.ts';
import { BASE_CONFIG, type Expect, type Flow, FLOW_CASES, type FlowCase, KERNEL_MODES, type KernelMode, NODE_ADDRESSES } from './flows.ts';
import { Table as IptablesTable } from './iptables-sim.ts';
import { desiredState, endpoint, NODE, servicePort } from './model-fixtures.ts';
import { commands } from './nftables-fixtures.ts';
import { type Outcome, type Packet, Table as NftTable } from './nftables-sim.ts';

// ---- the flow as a packet, and outcomes as comparable text ----

const LOOPBACK = ['127.0.0.0/8', '::1/128'];
const isNodeAddress = (ip: string) => NODE_ADDRESSES.includes(ip) || inAnyCIDR(LOOPBACK, ip);

function packetOf(f: Flow): Packet {
  return {
    saddr: f.from,
    daddr: f.to,
    proto: (f.protocol ?? 'TCP').toLowerCase() as Packet['proto'],
    dport: f.port,
    saddrLocal: isNodeAddress(f.from),
    daddrLocal: isNodeAddress(f.to),
  };
}

function outcomeText(o: Outcome): string {
  switch (o.verdict) {
    case 'dnat':
      return `DNAT ${hostPort(o.addr, o.port)}${o.masquerade ? ', masqueraded' : ''}`;
    case 'accept':
      return o.masquerade ? 'pass, masqueraded' : 'pass';
    default:
      return o.verdict.toUpperCase();
  }
}

/** Outcome text -> probability, rounded so that 1/3 from iptables' 10-decimal probabilities compares equal. */
type Distribution = Record<string, number>;

function expected(e: Expect): Distribution {
  if (e.verdict === 'dnat') {
    return Object.fromEntries(e.endpoints.map((ep) => [`DNAT ${ep}${e.masquerade ? ', masqueraded' : ''}`, round(1 / e.endpoints.length)]));
  }
  return { [e.verdict === 'pass' ? 'pass' : e.verdict.toUpperCase()]: 1 };
}

const round = (p: number) => Math.round(p * 1e6) / 1e6;

/** Picks one of several alternatives of the given weights (a numgen value, a statistic match taken or not). */
type Pick = (weights: readonly number[]) => number;

/** Every outcome of `run` over every sequence of choices it makes, with its probability. */
function everyOutcome(run: (pick: Pick) => Outcome): Distribution {
  const out: Distribution = {};
  const pending: number[][] = [[]];
  for (let paths = 0; pending.length > 0; paths++) {
    if (paths > 10_000) throw new Error('more than 10000 paths through the rules');
    const prefix = pending.pop()!;
    const taken: number[] = [];
    let probability = 1;
    const outcome = run((weights) => {
      const depth = taken.length;
      if (depth >= prefix.length) for (let j = 1; j < weights.length; j++) pending.push([...taken, j]);
      const i = depth < prefix.length ? prefix[depth]! : 0;
      taken.push(i);
      probability *= weights[i]!;
      return i;
    });
    if (probability === 0) continue;
    const key = outcomeText(outcome);
    out[key] = round((out[key] ?? 0) + probability);
  }
  return out;
}

// ---- the two modes, rendered and simulated ----

interface Simulated {
  outcomes(p: Packet): Distribution;
  /** What to print when a flow goes wrong. */
  explain(p: Packet): string;
}

function stateOf(c: FlowCase): DesiredState {
  const state = desiredState(c.ports, { ...BASE_CONFIG, ...c.config }, c.family);
  return { ...state, node: { name: NODE, labels: {}, zone: '', addresses: [...NODE_ADDRESSES], podCIDRs: [], deleting: false } };
}

/** What `--dry-run` prints for this state, from the mode's own proxier. */
function rulesOf(mode: KernelMode, state: DesiredState): string {
  const proxier = MODE_DEFINITIONS[mode].create({ config: state.config, family: state.family, iptablesBackend: 'nft' });
  // Notes for a person running --dry-run (route_localnet, configuration left out) go to stderr; a flow shows
  // what they mean for traffic.
  const write = process.stderr.write;
  process.stderr.write = () => true;
  try {
    return proxier.dryRun(state);
  } finally {
    process.stderr.write = write;
  }
}

function simulate(mode: KernelMode, state: DesiredState): Simulated {
  return SIMULATORS[mode](rulesOf(mode, state));
}

function iptablesSimulated(restoreText: string): Simulated {
  const t = new IptablesTable(restoreText);
  return {
    outcomes: (p) => everyOutcome((pick) => t.trace(p, { decide: (probability) => pick([probability, 1 - probability]) === 0 }).outcome),
    explain: (p) => `rules matched on the first path:\n  ${t.trace(p).rules.join('\n  ')}`,
  };
}

/**
 * The base chains Table.connect follows, in its order within the output hook; a batch with another base chain,
 * or these in another order, fails the test rather than being followed wrongly.
 */
const NFT_BASE_CHAINS = ['filter-input', 'filter-forward', 'nat-prerouting', 'nat-postrouting', 'filter-output', 'nat-output', 'filter-output-post-dnat'];
const NFT_OUTPUT_ORDER = ['filter-output', 'nat-output', 'filter-output-post-dnat'];

function nftablesSimulated(batch: string): Simulated {
  const t = new NftTable(batch);
  const prio = new Map<string, number>();
  for (const [verb, kind, body] of commands(batch)) {
    if (verb !== 'add' || kind !== 'chain' || body.hook === undefined) continue;
    if (!NFT_BASE_CHAINS.includes(body.name as string)) {
      throw new Error(
        `base chain ${String(body.name)} (${String(body.type)} hook ${String(body.hook)}): the nftables simulator does not follow packets through it`,
      );
    }
    prio.set(body.name as string, body.prio as number);
  }
  const output = NFT_OUTPUT_ORDER.filter((c) => prio.has(c));
  const byPriority = [...output].sort((a, b) => prio.get(a)! - prio.get(b)!);
  if (byPriority.join() !== output.join())
    throw new Error(`output hook chains in priority order ${byPriority.join(', ')}; the simulator follows ${output.join(', ')}`);
  return {
    outcomes: (p) => everyOutcome((pick) => t.connect(p, (mod) => pick(Array<number>(mod).fill(1 / mod)))),
    explain: () => '(the nftables simulator does not list matched rules)',
  };
}

/** Each kernel mode's output, loaded into its simulator. */
const SIMULATORS: Record<KernelMode, (rules: string) => Simulated> = { iptables: iptablesSimulated, nftables: nftablesSimulated };

// ---- the table ----

/** A flow's expectation for one mode, and why it differs from the table's when it does. */
function expectationFor(f: Flow, mode: KernelMode): { want: Expect; why: string | null } {
  const m = f.modes?.[mode];
  return m ? { want: m.expect, why: m.why } : { want: f.expect, why: null };
}

describe('the behaviour table', () => {
  it('names every case and every flow of a case once', () => {
    const names = FLOW_CASES.map((c) => c.name);
    expect(names.length).toBe(new Set(names).size);
    for (const c of FLOW_CASES) {
      const flows = c.flows.map((f) => f.name);
      expect(flows.length, c.name).toBe(new Set(flows).size);
    }
  });

  it('gives a reason wherever a mode or the table departs, and a mode departs only to differ', () => {
    for (const c of FLOW_CASES) {
      for (const f of c.flows) {
        for (const [mode, m] of Object.entries(f.modes ?? {})) {
          expect(m.why.length, `${c.name} / ${f.name} / ${mode}`).toBeGreaterThan(20);
          expect(m.expect, `${c.name} / ${f.name} / ${mode}`).not.toEqual(f.expect);
        }
        if (f.departs) expect(f.departs.why.length, `${c.name} / ${f.name}`).toBeGreaterThan(20);
      }
    }
  });
});

for (const c of FLOW_CASES) {
  describe(c.name, () => {
    for (const mode of KERNEL_MODES) {
      describe(mode, () => {
        let sim: Simulated;
        beforeAll(() => {
          sim = simulate(mode, stateOf(c));
        });
        for (const f of c.flows) {
          const { want, why } = expectationFor(f, mode);
          it(why ? `${f.name} (differs in this mode)` : f.name, () => {
            const p = packetOf(f);
            const got = sim.outcomes(p);
            const context = `${f.protocol ?? 'TCP'} ${f.from} -> ${hostPort(f.to, f.port)}${why ? `\n(${mode} differs: ${why})` : ''}\n${sim.explain(p)}`;
            expect(got, context).toEqual(expected(want));
          });
        }
      });
    }
  });
}

// ---- the iptables simulator itself ----

describe('iptables simulator', () => {
  const load = (...lines: string[]) => new IptablesTable(['*nat', ':KUBE-X - [0:0]', ...lines, 'COMMIT', ''].join('\n'));
  const pkt: Packet = { saddr: '198.19.1.2', daddr: '198.18.100.1', proto: 'tcp', dport: 80 };

  it('refuses what iptables-restore refuses, and options the iptables mode never writes', () => {
    expect(() => load('-A KUBE-X -j KUBE-MISSING')).toThrow(/missing chain KUBE-MISSING/);
    expect(() => load('-A KUBE-X -m multiport --dports 80,443 -j ACCEPT')).toThrow(/unknown match module multiport/);
    expect(() => load('-A KUBE-X -i eth0 -j ACCEPT')).toThrow(/unknown option -i/);
    expect(() => load('-A KUBE-X -s 10.0.0.1/8 -j ACCEPT')).toThrow(/not a canonical CIDR/);
    expect(() => new IptablesTable('*nat\n-A PREROUTING -j ACCEPT\n')).toThrow(/without COMMIT/);
  });

  it('loads every golden rule file of the iptables mode (each jump has its chain)', () => {
    const dir = path.resolve(import.meta.dirname, '..', 'golden', 'iptables');
    const files = readdirSync(dir).filter((f) => f.endsWith('.rules'));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(() => new IptablesTable(readFileSync(path.join(dir, f), 'utf8')), f).not.toThrow();
  });

  it('keeps tables between loads, as --noflush does; a declaration flushes its chain; -D and -X remove', () => {
    const t = load('-A KUBE-X -j DNAT --to-destination 198.19.1.11:8080', '-A PREROUTING -j KUBE-X');
    expect(t.trace(pkt).outcome).toEqual({ verdict: 'dnat', addr: '198.19.1.11', port: 8080, masquerade: false });
    t.apply('*nat\n:KUBE-X - [0:0]\n-A KUBE-X -j DNAT --to-destination [2001:2:0:11::11]:8080\nCOMMIT\n');
    expect(t.chain('nat', 'KUBE-X')).toEqual(['-A KUBE-X -j DNAT --to-destination [2001:2:0:11::11]:8080']);
    t.apply('*nat\n-D PREROUTING -j KUBE-X\n-F KUBE-X\n-X KUBE-X\nCOMMIT\n');
    expect(t.chain('nat', 'KUBE-X')).toBeUndefined();
    expect(t.trace(pkt).outcome).toEqual({ verdict: 'accept', masquerade: false });
  });

  it('leaves the tables as they were when a part fails', () => {
    const t = load('-A PREROUTING -j KUBE-X');
    expect(() => t.apply('*nat\n-F PREROUTING\n-A KUBE-X -j KUBE-NONE\nCOMMIT\n')).toThrow();
    expect(t.chain('nat', 'PREROUTING')).toEqual(['-A PREROUTING -j KUBE-X']);
  });

  it('follows ClientIP affinity (-m recent) across connections, until the timeout', () => {
    const eps = [endpoint('198.19.1.11'), endpoint('198.19.2.11', 8080, { node: 'node-b' })];
    const sticky = servicePort({ name: 'sticky', clusterIPs: ['198.18.100.1'], affinityTimeoutSeconds: 10, endpoints: eps });
    const state = desiredState([sticky], BASE_CONFIG);
    const t = new IptablesTable(rulesOf('iptables', state));
    const p = { ...pkt, dport: 80 };
    // A first connection that takes the first endpoint, recorded as a real one.
    expect(t.trace(p, { decide: () => true, record: true }).outcome).toMatchObject({ addr: '198.19.1.11' });
    // Without the record, the statistic rules alone would now pick the last endpoint.
    expect(t.trace(p).outcome).toMatchObject({ addr: '198.19.1.11' });
    expect(t.trace({ ...p, saddr: '198.19.1.3' }).outcome).toMatchObject({ addr: '198.19.2.11' });
    t.now += 11;
    expect(t.trace(p).outcome).toMatchObject({ addr: '198.19.2.11' });
  });
});
