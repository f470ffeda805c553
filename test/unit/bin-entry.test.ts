// bin/kube-proxy-ts.js's choice between the compiled dist/ and the TypeScript of src/, on a copy of bin/ next to
// a stand-in src/ and dist/ (each main() prints which one ran): dist/ only while every source is older than its
// build stamp, src/ otherwise (a note on stderr at -v 2 and above, never on stdout), dist/ alone without src/.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'kube-proxy-ts.js');
const T0 = new Date('2026-01-01T00:00:00Z');
const BUILT = new Date('2026-01-02T00:00:00Z');
const LATER = new Date('2026-01-03T00:00:00Z');

let root: string;

/** A checkout as the build leaves it: sources, then dist/ and its stamp a day later. */
function checkout(): void {
  root = mkdtempSync(join(tmpdir(), 'kpt-bin-'));
  writeFileSync(join(root, 'package.json'), '{ "type": "module" }\n');
  mkdirSync(join(root, 'bin'));
  copyFileSync(BIN, join(root, 'bin', 'kube-proxy-ts.js'));
  mkdirSync(join(root, 'src', 'model'), { recursive: true });
  writeFileSync(
    join(root, 'src', 'cli.ts'),
    "export async function main(argv: string[]): Promise<number> { process.stdout.write(`src ${argv.join(' ')}\\n`); return 0; }\n",
  );
  writeFileSync(join(root, 'src', 'model', 'store.ts'), 'export {};\n');
  mkdirSync(join(root, 'dist'));
  writeFileSync(join(root, 'dist', 'cli.js'), "export async function main(argv) { process.stdout.write(`dist ${argv.join(' ')}\\n`); return 0; }\n");
  writeFileSync(join(root, 'dist', '.build-stamp'), '');
  for (const p of ['src/cli.ts', 'src/model/store.ts', 'src/model', 'src']) utimesSync(join(root, p), T0, T0);
  utimesSync(join(root, 'dist', '.build-stamp'), BUILT, BUILT);
}

function run(...args: string[]) {
  const r = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', join(root, 'bin', 'kube-proxy-ts.js'), ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('bin/kube-proxy-ts.js: dist/ or src/', () => {
  beforeEach(() => {
    checkout();
    return () => rmSync(root, { recursive: true, force: true });
  });

  it('runs dist/ when it was built after every source, silently at any verbosity', () => {
    expect(run('--version', '-v=4')).toEqual({ code: 0, stdout: 'dist --version -v=4\n', stderr: '' });
  });

  it('runs src/ once a source is edited after the build: a note on stderr at -v 2 and above only', () => {
    utimesSync(join(root, 'src', 'model', 'store.ts'), LATER, LATER);
    expect(run('state', '-v', '1')).toEqual({ code: 0, stdout: 'src state -v 1\n', stderr: '' });
    for (const v of [['-v', '2'], ['-v=2'], ['--v=3'], ['-v6']]) {
      const r = run('state', ...v);
      expect(r.stdout).toBe(`src state ${v.join(' ')}\n`);
      expect(r.stderr).toBe('kube-proxy-ts: running src/ through type stripping: src/ changed after dist/ was built (npm run build)\n');
    }
  });

  it('runs src/ once a source is added or removed after the build (its folder changes), whatever its own mtime', () => {
    writeFileSync(join(root, 'src', 'model', 'new.ts'), 'export {};\n');
    utimesSync(join(root, 'src', 'model', 'new.ts'), T0, T0);
    expect(run().stdout).toBe('src \n');
  });

  it('runs src/ when dist/ was never built (no stamp)', () => {
    rmSync(join(root, 'dist', '.build-stamp'));
    expect(run('-v=2')).toEqual({
      code: 0,
      stdout: 'src -v=2\n',
      stderr: 'kube-proxy-ts: running src/ through type stripping: dist/ is not built (npm run build)\n',
    });
  });

  it('runs dist/ without src/, as the image ships it', () => {
    rmSync(join(root, 'src'), { recursive: true });
    expect(run('-v=2').stdout).toBe('dist -v=2\n');
  });
});
