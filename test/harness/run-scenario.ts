// Runs scenarios against one mode outside vitest and prints the full report (verdicts, proxy
// output, node-a's rules on failure). For whoever is building a mode:
//
//   node_modules/.bin/node --disable-warning=ExperimentalWarning test/harness/run-scenario.ts \
//     --mode iptables [--dry-run [--one-batch]] [own-cluster-ip | path/to/file.yaml ...]
//
// Without scenarios it runs every one of listScenarioFiles(). Needs root. Exit code 1 if any failed.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MODES } from '../../src/modes/types.ts';
import type { ModeName } from '../../src/modes/types.ts';
import { listScenarioFiles } from '../../src/lab/sandbox/scenario.ts';
import { sweepStale } from '../../src/lab/sandbox/topology.ts';
import { dryRunProxy, formatRun, liveProxy, runScenario } from './run.ts';

const { values, positionals } = parseArgs({
  options: { mode: { type: 'string' }, 'dry-run': { type: 'boolean', default: false }, 'one-batch': { type: 'boolean', default: false } },
  allowPositionals: true,
});
const mode = values.mode as ModeName;
if (!MODES.includes(mode) || (values['one-batch'] && !values['dry-run'])) {
  process.stderr.write(`usage: run-scenario.ts --mode ${MODES.join('|')} [--dry-run [--one-batch]] [scenario name or file ...]\n`);
  process.exit(2);
}
const all = listScenarioFiles();
const files = positionals.length
  ? positionals.map((p) => {
      if (p.endsWith('.yaml') || p.endsWith('.yml')) return path.resolve(p);
      const found = all.find((f) => path.basename(f).replace(/\.ya?ml$/, '') === p);
      if (!found) throw new Error(`no scenario named ${p} (have: ${all.map((f) => path.basename(f)).join(', ')})`);
      return found;
    })
  : all;

const makeProxy = () => (values['dry-run'] ? dryRunProxy(mode, { oneBatch: values['one-batch'] }) : liveProxy(mode));

await sweepStale();
let failed = 0;
for (const file of files) {
  const proxy = makeProxy();
  try {
    const run = await runScenario(file, proxy);
    process.stdout.write(`${formatRun(run)}\n\n`);
    if (!run.ok) failed++;
  } catch (e) {
    failed++;
    process.stdout.write(`scenario ${path.basename(file)} with ${proxy.name}: could not run\n${e instanceof Error ? e.message : String(e)}\n\n`);
  }
}
process.stdout.write(`${files.length - failed} of ${files.length} scenarios passed with ${makeProxy().name}\n`);
process.exitCode = failed ? 1 : 0;
