#!/usr/bin/env -S node --disable-warning=ExperimentalWarning
// Entry point. The sources are TypeScript run through Node's type stripping (Node >= 22.18).
import { main } from '../src/cli.ts';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`kube-proxy-ts: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
