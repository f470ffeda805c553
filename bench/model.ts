// Model benchmark: building the desired state for 10,000 services x 10 endpoints from parsed objects
// (goal < 1 s) and applying one EndpointSlice change to it incrementally (goal < 5 ms).
import { ClusterState } from '../src/model/store.ts';
import { fmtMs, writeSection } from './docs.ts';
import { BENCH_CONFIG, makeObjects, makeSlice } from './synthetic.ts';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))]!;
}

const SERVICES = 10_000;
const ENDPOINTS = 10;
const objects = makeObjects(SERVICES, ENDPOINTS);

// Warm up the JIT on a smaller cluster, then measure whole builds.
for (let w = 0; w < 3; w++) {
  const cs = new ClusterState(BENCH_CONFIG);
  for (const o of makeObjects(1000, ENDPOINTS)) cs.upsert(o);
  cs.commit();
}
const builds: number[] = [];
let cluster!: ClusterState;
for (let r = 0; r < 5; r++) {
  const t0 = performance.now();
  const cs = new ClusterState(BENCH_CONFIG);
  for (const o of objects) cs.upsert(o);
  const c = cs.commit();
  builds.push(performance.now() - t0);
  if (c.state.servicePorts.size !== SERVICES) throw new Error('wrong size');
  cluster = cs;
}
global.gc?.();
const heapMB = process.memoryUsage().heapUsed / 1e6;
const rssMB = process.memoryUsage().rss / 1e6;

// One EndpointSlice change at a time: upsert + commit (what the sync loop does before a partial sync).
const changes: number[] = [];
for (let k = 0; k < 2000; k++) {
  const i = (k * 7919) % SERVICES;
  const s = makeSlice(i, ENDPOINTS, 1); // 2,000 distinct services, each changing its endpoint port once
  const t0 = performance.now();
  cluster.upsertEndpointSlice(s);
  const c = cluster.commit();
  changes.push(performance.now() - t0);
  if (c.changes.updated.length !== 1) throw new Error('expected exactly one updated service port');
}

const rows = [
  ['build state, 10,000 services x 10 endpoints (median of 5)', fmtMs(median(builds)), '< 1 s', median(builds) < 1000 ? 'met' : 'missed'],
  ['apply one EndpointSlice change, incremental (median of 2,000)', fmtMs(median(changes)), '< 5 ms', median(changes) < 5 ? 'met' : 'missed'],
  ['apply one EndpointSlice change, p99', fmtMs(pct(changes, 99)), '', ''],
  ['heap used with the state built', `${heapMB.toFixed(0)} MB`, '', ''],
  ['resident memory', `${rssMB.toFixed(0)} MB`, '', ''],
];
const table = ['| figure | value | goal | |', '|---|---|---|---|', ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
const body = `## Model (\`bench/model.ts\`)

Building the node-local desired state from parsed objects, and the incremental path for one changed
EndpointSlice (upsert + commit, which recomputes only that service's ports). ${new Date().toISOString().slice(0, 10)}, Node ${process.version}.

${table}`;
writeSection('model', body);
console.log(table);
