// `kube-proxy-ts demo`: the sandbox demo. Builds the scenario network in network namespaces, runs the
// proxy on node-a with the bundled example (or a scenario file), sends traffic, prints which backend
// answered, and tears it all down.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildStates } from '../model/store.ts';
import { stateToTable } from '../model/view.ts';
import { modeDefinition } from '../modes/index.ts';
import type { ModeName } from '../modes/types.ts';
import { judge } from './sandbox/judge.ts';
import { startPodServers } from './sandbox/podserver.ts';
import { runProbe } from './sandbox/probe.ts';
import { proxyCommand, startProxy } from './sandbox/proxy.ts';
import { REPO_ROOT, formatProbeTarget, loadScenario, writeObjectsFile } from './sandbox/scenario.ts';
import { clusterCIDRs, Topology } from './sandbox/topology.ts';

export const DEMO_SCENARIO = path.join(REPO_ROOT, 'examples', 'demo.yaml');

export async function runDemo(mode: ModeName, file: string = DEMO_SCENARIO, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and needs root (sudo npm run demo)');
  const scenario = loadScenario(file);
  const tmp = mkdtempSync(path.join(tmpdir(), 'kpt-demo-'));
  const objectsFile = path.join(tmp, 'objects.yaml');
  writeObjectsFile(scenario, objectsFile);
  const { states } = buildStates(scenario.objects as never[], {
    hostname: 'node-a',
    clusterCIDRs: clusterCIDRs(scenario.pods),
    masqueradeAll: false,
    nodePortAddresses: [],
  });
  out.write(`kube-proxy-ts demo: scenario "${scenario.name}", mode ${mode}\n\nWhat node-a will program (kube-proxy-ts state):\n\n${stateToTable(states)}\n`);
  const topo = await Topology.create(scenario);
  let failed = 0;
  try {
    const t0 = performance.now();
    const proxy = await startProxy(topo, proxyCommand(mode, objectsFile, scenario.pods));
    out.write(`Network built (prefix ${topo.prefix}); the proxy synced in ${Math.round(performance.now() - t0)} ms.\n\n`);
    await startPodServers(topo);
    const rows: string[][] = [['FROM', 'TO', 'ANSWERED BY', 'SOURCE SEEN', 'EXPECTED', '']];
    for (const p of scenario.probes) {
      const r = await runProbe(topo, p);
      // A proxy that opens its own connections (userspace) hides the client's address from the backend.
      const v = judge(r.tries, p.expect, modeDefinition(mode).keepsClientAddress ? {} : { ignore: ['sourceIP', 'sourceNot'] });
      const counts = new Map<string, number>();
      const sources = new Set<string>();
      for (const t of r.tries) {
        const key = typeof t === 'object' ? t.answer.pod : t;
        counts.set(key, (counts.get(key) ?? 0) + 1);
        if (typeof t === 'object') sources.add(t.answer.sourceIP);
      }
      const answered = [...counts].map(([k, n]) => `${k}×${n}`).join(' ');
      if (!v.ok) failed++;
      rows.push([p.from, formatProbeTarget(p.to), answered, [...sources].join(',') || '-', JSON.stringify(p.expect).replace(/"/g, ''), v.ok ? 'ok' : 'FAILED']);
      if (!v.ok) rows.push(['', '', `  ${v.reasons.join('; ')}`, '', '', '']);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    out.write(
      `${rows
        .map((r) =>
          r
            .map((c, i) => c.padEnd(widths[i]!))
            .join('  ')
            .trimEnd(),
        )
        .join('\n')}\n\n`,
    );
    await proxy.stop(10_000);
  } finally {
    await topo.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
  out.write(failed === 0 ? 'Every probe answered as expected. The network namespaces are gone.\n' : `${failed} probe(s) did not answer as expected.\n`);
  return failed === 0 ? 0 : 1;
}
