// Writes one benchmark's section into docs/benchmarks.md, between <!-- NAME:begin --> and <!-- NAME:end -->,
// leaving the other sections as they are.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

export const BENCH_DOC = resolve(import.meta.dirname, '..', 'docs', 'benchmarks.md');

const HEADER = `# Benchmarks

Every figure here is written by a benchmark in \`bench/\` (\`npm run bench\` runs them all; each file can be
run alone). Speeds are compared as ratios within one run, against the bare \`iptables-restore\` / \`nft\`
apply of the same rules (the floor). Machine: 2 cores, 24 GiB, Linux, Node 22. Sections are replaced whole
by the next run of their benchmark.
`;

export function writeSection(name: string, body: string): void {
  let doc = existsSync(BENCH_DOC) ? readFileSync(BENCH_DOC, 'utf8') : HEADER;
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const block = `${begin}\n${body.trim()}\n${end}`;
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i >= 0 && j > i) doc = doc.slice(0, i) + block + doc.slice(j + end.length);
  else doc = `${doc.trimEnd()}\n\n${block}\n`;
  writeFileSync(BENCH_DOC, doc);
}

export function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : ms >= 10 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(2)} ms`;
}
