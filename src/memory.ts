// Giving memory back to the system. V8 keeps the pages a collection empties in a pool, still resident, and runs
// its major collections when the heap's growth says so, not when a burst of allocation ends. The proxy knows when
// a burst ends (the first sync done, a relist or a file read) and asks for V8's last-resort collection there: the
// one a low-memory notification runs, which also returns the pooled pages. At 10,000 services it takes 100-250 ms, and
// it may flush compiled code (so it is not run in the middle of work: between planning a full table and writing
// it, it made the first sync at 5,000 x 50 half a second slower). Measured effects are in docs/benchmarks.md
// ("Where the memory goes").

/**
 * V8's last-resort full collection, synchronous; returns how long it took in ms, or null when the process runs
 * without Node's --expose-gc (bin/kube-proxy-ts.js's first line and the image's entrypoint pass it).
 */
export function releaseGarbage(): number | null {
  const gc = (globalThis as { gc?: (options?: object) => void }).gc;
  if (!gc) return null;
  const started = performance.now();
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  return performance.now() - started;
}

/**
 * A full garbage collection between two phases of a burst of work, not the last-resort one (compiled code stays).
 * V8 collects when its heap grows, not when a phase ends: the garbage of one phase (a file's text and parsed objects
 * before they are reduced; the lists read and the model built) would still be there, and counted in the resident
 * size, while the next one allocates on top of it. Tens of milliseconds at 10,000 services, so only where the process
 * may stop: between the phases of a one-shot command, and in the daemon before the first sync of a large cluster
 * (sync/loop.ts). Needs Node's --expose-gc (bin/kube-proxy-ts.js's first line); without it, nothing happens.
 */
export function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}
