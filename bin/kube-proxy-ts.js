#!/usr/bin/env -S MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 node --disable-warning=ExperimentalWarning --max-semi-space-size=2 --expose-gc
// --max-semi-space-size=2 (MiB; Node 22 lets the young generation grow to 3 x 16): a proxy allocates in bursts
// (a list, a full sync) and the resident size stays at what a burst reached; with 2 MiB semi-spaces a
// 10,000 x 10 cluster takes about 50 MB less (docs/benchmarks.md, "Where the memory goes"), the first sync
// no slower. --expose-gc: the daemon runs one full collection once every family has synced for the first time
// (daemon/run.ts, releaseStartupGarbage: about 40 MB less at 10,000 x 10, 0.1 s). deploy/Dockerfile's
// ENTRYPOINT and bench/scale.ts pass the same flags (they run `node FILE`).
// MALLOC_ARENA_MAX=2, MALLOC_MMAP_THRESHOLD_=131072 (glibc's allocator, read at process start): memory outside
// the JavaScript heap (read buffers, libuv and V8's threads) is otherwise kept in up to 8 arenas per core and,
// once a large buffer was freed, glibc raises its mmap threshold and keeps later ones of that size on its heap:
// 30 to 50 MB that the process never gives back (docs/benchmarks.md, "Where the memory goes"). The image's
// Dockerfile sets the same (ENV).
// Entry point. It runs the compiled JavaScript of dist/ (scripts/build.js; `npm ci` runs it) when dist/ was
// built from the sources as they are, and otherwise the TypeScript of src/ through Node's type stripping
// (Node >= 22.18). Compiled code starts in half the time and about 30 MB smaller: Node's stripper (a wasm
// module) is never loaded. Check the version first: older Node versions fail with a cryptic error.
import { readdirSync, statSync } from 'node:fs';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `kube-proxy-ts needs Node.js >= 22.18 (this is ${process.version}).\n` +
      'Run it through npm (npx kube-proxy-ts, npm start), which uses the Node 22 that `npm ci` installs, or put node_modules/.bin first on PATH.\n',
  );
  process.exit(1);
}

const SRC = new URL('../src/', import.meta.url);
/** Written by scripts/build.js before the compiler reads a source: its mtime is when the build began. */
const BUILD_STAMP = new URL('../dist/.build-stamp', import.meta.url);

/** The newest mtime (ms) of the files and folders under dir: a folder's changes when an entry is added or removed. */
function newestMtime(dir) {
  let newest = statSync(dir).mtimeMs;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = new URL(e.isDirectory() ? `${e.name}/` : e.name, dir);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * Why dist/ cannot be run, or null when it can: it must exist and be newer than every source (a developer who
 * edits src/ never runs stale code). Without src/ (the image ships dist/ alone) dist/ is what there is.
 * 1-2 ms for src/'s 93 files and folders (measured). A file put back with an older mtime (cp -p, tar) is not seen.
 */
function staleReason() {
  let built;
  try {
    built = statSync(BUILD_STAMP).mtimeMs;
  } catch {
    return 'dist/ is not built';
  }
  try {
    if (newestMtime(SRC) >= built) return 'src/ changed after dist/ was built';
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  return null;
}

/** -v N as kube-proxy takes it (-v=N, -vN, --v N...), for the one line below; 0 when absent or not a number. */
function verbosity(argv) {
  let v = 0;
  for (const [i, a] of argv.entries()) {
    const m = /^--?v(?:=?(\d+))?$/.exec(a);
    if (m) v = Number(m[1] ?? argv[i + 1]) || 0;
  }
  return v;
}

const argv = process.argv.slice(2);
const stale = staleReason();
// stderr only: stdout is what a command prints (state, explain, --dry-run), parsed by tools.
if (stale && verbosity(argv) >= 2) process.stderr.write(`kube-proxy-ts: running src/ through type stripping: ${stale} (npm run build)\n`);
const { main } = await import(stale ? '../src/cli.ts' : '../dist/cli.js');
main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`kube-proxy-ts: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
