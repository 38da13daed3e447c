import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // End-to-end suites start real clients and servers; two at a time keeps a
    // 2-core machine responsive without serialising everything.
    maxWorkers: 2,
  },
});
