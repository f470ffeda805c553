// Real traffic through the iptables mode: every shared routing scenario, with the proxiers driven
// in-process inside node-a (the conformance suite runs the CLI; this covers what it does not: the
// legacy backend, a data path built by a partial sync, and cleanup leaving node-a clean).
import { beforeAll, describe, it } from 'vitest';
import type { Backend } from '../../src/modes/iptables/restore.ts';
import { listScenarioFiles, loadScenario } from '../../src/lab/sandbox/scenario.ts';
import { sweepStale } from '../../src/lab/sandbox/topology.ts';
import { formatRun, runScenario, scenarioBudgetMs } from '../harness/run.ts';
import { type How, inProcessProxy } from './iptables-helpers.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables): run them as root');

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
          const run = await runScenario(scenario, inProcessProxy(scenario, backend, how));
          if (!run.ok) throw new Error(formatRun(run));
        },
        scenarioBudgetMs(scenario),
      );
    }
  });
}
