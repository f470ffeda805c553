// Real traffic through the iptables mode: every shared routing scenario, with the proxier driven
// in-process inside node-a (the conformance suite runs the CLI; this covers what it does not: the
// legacy backend, a data path built by a partial sync, and cleanup leaving node-a clean).
import { beforeAll, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../src/model/k8s.ts';
import { buildState } from '../../src/model/store.ts';
import type { DesiredState } from '../../src/model/types.ts';
import { createProxier } from '../../src/modes/iptables/index.ts';
import type { Backend } from '../../src/modes/iptables/restore.ts';
import { listScenarioFiles, loadScenario, type Scenario } from '../../src/lab/sandbox/scenario.ts';
import { ADDRESSES, sweepStale, type Topology } from '../../src/lab/sandbox/topology.ts';
import { formatRun, type ProxyUnderTest, runScenario, scenarioBudgetMs } from '../harness/run.ts';
import { config } from '../unit/model-fixtures.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables): run them as root');

type How = 'full sync' | 'partial sync' | 'dry run';

function stateOf(scenario: Scenario): DesiredState {
  const { state, issues } = buildState(scenario.objects as unknown as KubeObject[], config({ clusterCIDRs: [ADDRESSES.clusterCIDR] }));
  if (issues.length > 0) throw new Error(`scenario ${scenario.name}: ${JSON.stringify(issues)}`);
  return state;
}

async function ruleLines(topo: Topology, backend: Backend): Promise<string[]> {
  const out: string[] = [];
  for (const table of ['nat', 'filter', 'mangle']) {
    const r = await topo.execOk('node-a', [`iptables-${backend}-save`, '-t', table]);
    out.push(...r.stdout.split('\n').filter((l) => l.includes('KUBE-')));
  }
  return out;
}

/**
 * The proxier in this process, programming node-a: a full sync of the scenario; or a full sync of
 * nothing, then the scenario as one partial sync; or its dry run loaded with iptables-restore.
 * Teardown runs cleanup() and checks that node-a has no KUBE-* rule left.
 */
function inProcess(scenario: Scenario, backend: Backend, how: How): ProxyUnderTest {
  return {
    name: `iptables ${backend} ${how}`,
    async setup(topo) {
      const state = stateOf(scenario);
      const proxier = createProxier({ config: state.config, iptablesBackend: backend, netns: topo.ns('node-a') });
      if (how === 'dry run') {
        await topo.execOk('node-a', [`iptables-${backend}-restore`, '--noflush'], { input: proxier.dryRun(state) });
      } else if (how === 'full sync') {
        expect((await proxier.sync(state, null)).full).toBe(true);
      } else {
        await proxier.sync({ ...state, servicePorts: new Map() }, null);
        const r = await proxier.sync(state, { added: [...state.servicePorts.keys()], updated: [], removed: [] });
        expect(r.full).toBe(false);
      }
      return async () => {
        await proxier.cleanup();
        const left = await ruleLines(topo, backend);
        if (left.length > 0) throw new Error(`cleanup left rules in node-a:\n${left.join('\n')}`);
      };
    },
  };
}

const VARIANTS: { backend: Backend; how: How }[] = [
  { backend: 'nft', how: 'full sync' },
  { backend: 'nft', how: 'partial sync' },
  { backend: 'legacy', how: 'full sync' },
  { backend: 'legacy', how: 'dry run' },
];

const scenarios = listScenarioFiles().map(loadScenario);

beforeAll(async () => {
  await sweepStale();
});

for (const { backend, how } of VARIANTS) {
  describe(`iptables ${backend}, ${how}`, () => {
    for (const scenario of scenarios) {
      it(
        scenario.name,
        async () => {
          const run = await runScenario(scenario, inProcess(scenario, backend, how));
          if (!run.ok) throw new Error(formatRun(run));
        },
        scenarioBudgetMs(scenario),
      );
    }
  });
}
