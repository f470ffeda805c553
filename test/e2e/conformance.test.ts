// Conformance: every mode must pass every probe of every scenario, with real traffic through the
// real kernel in network namespaces, live and (iptables, nftables) from --dry-run output.
// One topology per scenario x mode x variant; one test per probe, plus one for clean shutdown.
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ModeName } from '../../src/modes/types.ts';
import { listScenarioFiles, loadScenario } from '../../src/lab/sandbox/scenario.ts';
import type { ExpectKey, Scenario } from '../../src/lab/sandbox/scenario.ts';
import { sweepStale } from '../../src/lab/sandbox/topology.ts';
import { dryRunProxy, formatProbeOutcome, formatRun, liveProxy, runScenario, scenarioBudgetMs } from '../harness/run.ts';
import type { ProxyUnderTest, ScenarioRun } from '../harness/run.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

/** The modes under test. Narrow this while a mode is being built; every mode must pass in the end. */
export const MODES: readonly ModeName[] = ['iptables', 'nftables', 'userspace'];

/** A userspace proxy opens its own connection to the endpoint, so the endpoint never sees the client's address. */
const USERSPACE_UNCHECKED: readonly ExpectKey[] = ['sourceIP', 'sourceNot'];

interface Variant {
  title: string;
  proxy: () => ProxyUnderTest;
  ignore: readonly ExpectKey[];
}

const variants: Variant[] = MODES.flatMap((mode): Variant[] => {
  if (mode === 'userspace') {
    return [
      {
        title: 'userspace live',
        proxy: () => liveProxy(mode),
        ignore: USERSPACE_UNCHECKED,
      },
    ];
  }
  return [
    { title: `${mode} live`, proxy: () => liveProxy(mode), ignore: [] },
    { title: `${mode} dry-run`, proxy: () => dryRunProxy(mode), ignore: [] },
  ];
});

type Loaded = { file: string; scenario: Scenario } | { file: string; error: unknown };
const loaded: Loaded[] = listScenarioFiles().map((file) => {
  try {
    return { file, scenario: loadScenario(file) };
  } catch (error) {
    return { file, error };
  }
});

beforeAll(async () => {
  await sweepStale();
});

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '';
}

for (const variant of variants) {
  describe(variant.title, () => {
    for (const entry of loaded) {
      if ('error' in entry) {
        it(`${path.basename(entry.file)} is a valid scenario`, () => {
          throw entry.error;
        });
        continue;
      }
      const scenario = entry.scenario;
      describe(scenario.name, () => {
        let result: ScenarioRun | null = null;
        let setupError: unknown = null;
        let setupErrorShown = false;
        let diagnosticsShown = false;

        beforeAll(async () => {
          try {
            result = await runScenario(scenario, variant.proxy(), { ignore: variant.ignore });
            console.log(formatRun(result, false).split('\n')[0]);
          } catch (e) {
            setupError = e;
          }
        }, scenarioBudgetMs(scenario));

        /** The run, or the setup error: in full the first time, by reference after that. */
        const runOrThrow = (): ScenarioRun => {
          if (result) return result;
          if (setupErrorShown) throw new Error(`the scenario could not run (see its first test): ${firstLine(setupError)}`);
          setupErrorShown = true;
          throw setupError instanceof Error ? setupError : new Error(String(setupError));
        };

        scenario.probes.forEach((probe, i) => {
          const unchecked = variant.ignore.filter((k) => probe.expect[k] !== undefined);
          const title = unchecked.length ? `${probe.name} [${unchecked.join(', ')} not checked: a userspace proxy cannot keep the source address]` : probe.name;
          it(title, () => {
            const run = runOrThrow();
            const outcome = run.probes[i];
            expect(outcome?.probe.name).toBe(probe.name);
            if (outcome?.verdict.ok) return;
            let message = outcome ? formatProbeOutcome(outcome) : `no outcome for ${probe.name}`;
            if (!diagnosticsShown && run.diagnostics) {
              diagnosticsShown = true;
              message += `\n${run.diagnostics}`;
            }
            throw new Error(message);
          });
        });

        it('the proxy and the sandbox ran and stopped cleanly', () => {
          const run = runOrThrow();
          if (run.errors.length === 0) return;
          let message = run.errors.join('\n');
          if (!diagnosticsShown && run.diagnostics) {
            diagnosticsShown = true;
            message += `\n${run.diagnostics}`;
          }
          throw new Error(message);
        });
      });
    }
  });
}
