import { defineConfig } from 'vitest/config';

// The suites of the HTTP API and the end-to-end client tests run twice: on the
// filesystem driver (project "fs", with everything else) and on the s3 driver
// (project "s3": RS_TEST_STORAGE=s3, every test server on its own bucket of the
// run's Ceph RGW; see test/helpers/storage.ts). Both projects share one worker
// pool (maxWorkers) and one RGW.
const DRIVER_SUITES = ['test/api/**/*.test.ts', 'test/e2e/**/*.test.ts'];

export default defineConfig({
  test: {
    // Starts Ceph RGW (real S3) lazily, once per run, for the suites that ask for a bucket.
    globalSetup: ['test/helpers/s3.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // A worker process runs one file after another with the modules it has loaded (vitest
    // reuses a worker only within one project, so fs and s3 never share one): loading the
    // server, the AWS SDK and Pulumi once per worker instead of once per file took the run's
    // summed import time from 82-100 s to 30 s. What a file changes in process-wide state
    // (process.env, globals, spies) it restores: the next file in that worker sees it.
    isolate: false,
    // The AWS SDK warns in every worker (and every server it starts) that its releases
    // after January 2027 need Node 22: its documented switch (aws-sdk-js-v3#7983), for the
    // test processes only; other warnings still show.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    // End-to-end suites start real clients and servers; two at a time keeps a
    // 2-core machine responsive without serialising everything. The run is CPU-bound
    // there (the CPUs are idle 5-10% of it): three workers took as long (453 s against
    // 446 s) and 11% more CPU.
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: { name: 'fs', include: ['test/**/*.test.ts'], exclude: ['test/twin/**'] },
      },
      {
        extends: true,
        test: { name: 's3', include: DRIVER_SUITES, env: { RS_TEST_STORAGE: 's3' } },
      },
      {
        // The VPS twin: private Docker engines, images built offline, the stack
        // deployed and used with the docker CLI. Needs root and .ci/run's packages.
        extends: true,
        test: { name: 'twin', include: ['test/twin/**/*.test.ts'], isolate: true, testTimeout: 600_000, hookTimeout: 1_500_000 },
      },
    ],
  },
});
