// Reads vitest's JSON report; prints the closing "N passed, N failed, N skipped" line; exits non-zero when
// tests failed, when none ran, or (under CI) when any was skipped: the e2e tests must run in CI.
import { readFileSync } from 'node:fs';

interface Report {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
  numTotalTests: number;
  testResults: { name: string; status: string; assertionResults: { fullName: string; status: string }[] }[];
}

const file = process.argv[2];
if (!file) throw new Error('usage: test-summary REPORT.json');
let r: Report;
try {
  r = JSON.parse(readFileSync(file, 'utf8')) as Report;
} catch (e) {
  console.log('tests: 0 passed, 1 failed');
  console.error(`no test report (${(e as Error).message}): the test run did not complete`);
  process.exit(1);
}
const skipped = r.numPendingTests + r.numTodoTests;
const failedFiles = r.testResults.filter((t) => t.status === 'failed' && t.assertionResults.every((a) => a.status !== 'failed'));
const failed = r.numFailedTests + failedFiles.length;
for (const f of failedFiles) console.error(`failed to run: ${f.name}`);
console.log(`tests: ${r.numPassedTests} passed, ${failed} failed, ${skipped} skipped`);
if (skipped > 0) {
  for (const t of r.testResults)
    for (const a of t.assertionResults) if (a.status === 'pending' || a.status === 'skipped' || a.status === 'todo') console.error(`skipped: ${a.fullName}`);
}
if (failed > 0 || r.numTotalTests === 0) process.exit(1);
if (process.env.CI && skipped > 0) {
  console.error('CI: tests were skipped; every test must run in CI');
  process.exit(1);
}
