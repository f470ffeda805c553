// Conformance: every mode must pass every probe of every scenario (the repository's own, test/scenarios, and
// the shared ones when ../shared/scenarios exists), with real traffic through the real kernel in network
// namespaces: live, and from --dry-run output where that is the mode's whole data path (one output per
// family; and for dual-stack scenarios both families in one batch, where the mode prints them so).
// One topology per scenario x variant; one test per probe, plus one for clean shutdown.
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { MODE_DEFINITIONS } from '../../src/modes/index.ts';
import { MODES, type ModeName } from '../../src/modes/types.ts';
import { expectationFor, isDualStack, listScenarioFiles, loadScenario } from '../../src/lab/sandbox/scenario.ts';
import type { Scenario } from '../../src/lab/sandbox/scenario.ts';
import { sweepStale } from '../../src/lab/sandbox/topology.ts';
import { dryRunIsDataPath, dryRunProxy, formatProbeOutcome, formatRun, keysNotCheckedFor, liveProxy, runScenario, scenarioBudgetMs } from '../harness/run.ts';
import type { ProxyUnderTest, ScenarioRun } from '../harness/run.ts';

if (process.getuid?.() !== 0) throw new Error('the e2e tests need root (network namespaces, iptables, nft): run them as root');

/** The modes under test. Narrow this while a mode is being built; every mode must pass in the end. */
export const UNDER_TEST: readonly ModeName[] = MODES;

interface Variant {
  title: string;
  mode: ModeName;
  proxy: () => ProxyUnderTest;
  /** The scenarios it runs; default all. */
  runs?: (scenario: Scenario) => boolean;
}

const variants: Variant[] = UNDER_TEST.flatMap((mode): Variant[] => {
  const out: Variant[] = [{ title: `${mode} live`, mode, proxy: () => liveProxy(mode) }];
  if (!dryRunIsDataPath(mode)) return out;
  out.push({ title: `${mode} dry-run`, mode, proxy: () => dryRunProxy(mode) });
  if (MODE_DEFINITIONS[mode].dryRun.combine) {
    out.push({ title: `${mode} dry-run, one batch`, mode, proxy: () => dryRunProxy(mode, { oneBatch: true }), runs: isDualStack });
  }
  return out;
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
      if (variant.runs && !variant.runs(scenario)) continue;
      describe(scenario.name, () => {
        let result: ScenarioRun | null = null;
        let setupError: unknown = null;
        let setupErrorShown = false;
        let diagnosticsShown = false;

        beforeAll(async () => {
          try {
            result = await runScenario(scenario, variant.proxy());
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

        const unchecked = keysNotCheckedFor(variant.mode);
        scenario.probes.forEach((probe, i) => {
          const skipped = unchecked.filter((k) => expectationFor(probe, variant.mode)[k] !== undefined);
          const title = skipped.length
            ? `${probe.name} [${skipped.join(', ')} not checked: ${variant.mode} backends never see the client's address]`
            : probe.name;
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
