import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Starts Ceph RGW (real S3) lazily, once per run, for the suites that ask for a bucket.
    globalSetup: ['test/helpers/s3.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // End-to-end suites start real clients and servers; two at a time keeps a
    // 2-core machine responsive without serialising everything.
    maxWorkers: 2,
  },
});
