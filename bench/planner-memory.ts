// The nftables planner's record of what it installed: heap it holds after a full plan, and the plan time.
//   node_modules/.bin/node --expose-gc bench/planner-memory.ts [SERVICES] [ENDPOINTS] [--snapshot FILE]
// Builds the synthetic cluster of bench/synthetic.ts as ServicePorts, plans full() on fresh planners (median
// of 5 after a warm-up), and reports the heap still used, after a full collection, with the last planner
// alive minus without it: the record (port records, reference counts, chains, claims, slots). No nft, no root.
import { writeHeapSnapshot } from 'node:v8';
import { Planner } from '../src/modes/nftables/planner.ts';
import { BENCH_CONFIG, servicePortCluster, stateOf } from './synthetic.ts';

const args = process.argv.slice(2);
const snapshotAt = args.indexOf('--snapshot');
const snapshot = snapshotAt >= 0 ? args.splice(snapshotAt, 2)[1] : undefined;
const services = Number(args[0] ?? 10_000);
const perService = Number(args[1] ?? 10);
const gc = globalThis.gc;
if (!gc) throw new Error('run with --expose-gc');

const heap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
const plan = (state: ReturnType<typeof stateOf>) => {
  const p = new Planner({ family: 'IPv4', config: BENCH_CONFIG });
  const t0 = performance.now();
  const r = p.full(state);
  return { p, ms: performance.now() - t0, elements: r.elementsAdded };
};

for (let w = 0; w < 3; w++) plan(stateOf(servicePortCluster(1000, perService)));
const state = stateOf(servicePortCluster(services, perService));
const times: number[] = [];
let elements = 0;
for (let r = 0; r < 5; r++) {
  const { ms, elements: n } = plan(state);
  times.push(ms);
  elements = n;
}
const before = heap();
/** Heap with a planner's record alive, and the snapshot taken then; the planner is unreachable on return. */
const measureRecord = () => {
  const kept = plan(state).p;
  const used = heap();
  if (snapshot) console.log(`snapshot: ${writeHeapSnapshot(snapshot)}`);
  if (kept.portKeys().next().done) throw new Error('empty record');
  return used;
};
const withRecord = measureRecord();
const after = heap();
times.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    services,
    perService,
    elements,
    recordMB: +((withRecord - before) / 1e6).toFixed(1),
    releasedMB: +((withRecord - after) / 1e6).toFixed(1),
    planMsMedian: Math.round(times[2]!),
    planMsAll: times.map(Math.round),
  }),
);
