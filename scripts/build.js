// Compiles src/ to dist/ (tsconfig.build.json), the JavaScript that bin/kube-proxy-ts.js runs when it is
// newer than every source. `npm ci` / `npm install` run it (the `prepare` script), as do scripts/test.sh and
// the image's build stage. Plain JavaScript, so that any Node with npm runs it.
//
// The stamp is written before the compiler reads a source, and dist/ replaced whole at the end: a source
// saved during the build is newer than the stamp (bin/ then runs src/), a failed build leaves the previous
// dist/ as it was, and nothing of a deleted source stays behind. src/ holds only .ts files: anything else
// would have to be copied here.
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const next = `${root}dist.next`;
rmSync(next, { recursive: true, force: true });
mkdirSync(next);
// bin/kube-proxy-ts.js reads this file's mtime.
writeFileSync(`${next}/.build-stamp`, 'dist/ compiled from src/ (scripts/build.js); bin/ runs it while src/ is older than this file\n');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', `${root}tsconfig.build.json`, '--outDir', next], { stdio: 'inherit' });
if (r.status !== 0) {
  rmSync(next, { recursive: true, force: true });
  process.stderr.write('build: tsc failed; dist/ is left as it was\n');
  process.exit(r.status ?? 1);
}
rmSync(`${root}dist`, { recursive: true, force: true });
renameSync(next, `${root}dist`);
