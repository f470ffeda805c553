// Two projects: `unit` (pure code, parallel) and `e2e` (real kernel in network namespaces, as root;
// one file at a time, after the unit tests). Run one with `npx vitest run --project unit|e2e`.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 10_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          // Files share the machine's 2 cores and the kernel: one at a time.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 300_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
