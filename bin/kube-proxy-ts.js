#!/usr/bin/env -S node --disable-warning=ExperimentalWarning --max-semi-space-size=2 --expose-gc
// --max-semi-space-size=2 (MiB; Node 22 lets the young generation grow to 3 x 16): a proxy allocates in bursts
// (a list, a full sync) and the resident size stays at what a burst reached; with 2 MiB semi-spaces a
// 10,000 x 10 cluster takes about 50 MB less (docs/benchmarks.md, "Where the memory goes"), the first sync
// no slower. --expose-gc: the daemon runs one full collection once every family has synced for the first time
// (daemon/run.ts, releaseStartupGarbage: about 40 MB less at 10,000 x 10, 0.1 s). deploy/Dockerfile's
// ENTRYPOINT and bench/scale.ts pass the same flags (they run `node FILE`).
// Entry point. The sources are TypeScript run through Node's type stripping (Node >= 22.18), so there is
// no build step. Check the version first: older Node versions fail on the .ts import with a cryptic error.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `kube-proxy-ts needs Node.js >= 22.18 (this is ${process.version}).\n` +
      'Run it through npm (npx kube-proxy-ts, npm start), which uses the Node 22 that `npm ci` installs, or put node_modules/.bin first on PATH.\n',
  );
  process.exit(1);
}
const { main } = await import('../src/cli.ts');
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`kube-proxy-ts: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
