// A real S3 for the tests: Ceph RGW from Debian's packages, started at most
// once per test run, on random loopback ports in a temp dir, and only when a
// test file asks for a bucket (test/tools/start-ceph-rgw.sh). Each test file
// gets a fresh bucket.
//
// Two halves:
// - vitest globalSetup (vitest.config.ts): setup() makes the run's directory
//   and hands it to the workers; teardown() stops the cluster if one started.
//   Every project of the run shares the one directory (and cluster).
// - test files: `const s3 = await createTestBucket('name')` (in beforeAll)
//   starts RGW if this run has none yet (under a lock: workers run in
//   parallel) and creates the bucket; `await s3.destroy()` empties and removes it.
//
// RS_S3_ENDPOINT (+ RS_S3_ACCESS_KEY, RS_S3_SECRET_KEY, RS_S3_REGION) points
// the tests at an S3 that is already running instead; nothing is started or
// stopped then. If RGW cannot start, createTestBucket throws with its logs:
// the S3 tests fail, they are never skipped.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import type { TestProject } from 'vitest/node';
import { startCephRgw, stopCephRgw, tail } from '../tools/ceph-rgw.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    rsS3RunDir: string;
  }
}

const RUN_DIR_PREFIX = 'rs-rgw-';

export interface S3Target {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region: string;
}

// ---------------------------------------------------------------- globalSetup

/**
 * The run's directory, shared by every vitest project of the run: each project
 * (vitest.config.ts has two, and the root config counts as one) loads this file
 * and calls setup() and teardown() once, so the first setup makes the directory
 * and the last teardown stops the cluster. Kept on globalThis, which all of
 * them share (they run in vitest's main process), not in this module, which
 * each project may load on its own.
 */
const SHARED = Symbol.for('registry-stack.test-s3-run');
type Shared = { dir: string; users: number };
const shared = globalThis as { [SHARED]?: Shared };

export function setup(project: TestProject): void {
  if (process.env.RS_S3_ENDPOINT) return;
  let run = shared[SHARED];
  if (!run) {
    cleanUpAbandonedRuns();
    run = shared[SHARED] = { dir: mkdtempSync(path.join(tmpdir(), `${RUN_DIR_PREFIX}${process.pid}-`)), users: 0 };
  }
  run.users++;
  project.provide('rsS3RunDir', run.dir);
}

export function teardown(): void {
  const run = shared[SHARED];
  if (!run || --run.users > 0) return;
  stopCluster(run.dir);
  rmSync(run.dir, { recursive: true, force: true });
  delete shared[SHARED];
}

function stopCluster(dir: string): void {
  const cephDir = path.join(dir, 'ceph');
  if (existsSync(cephDir)) stopCephRgw(cephDir, true);
}

/** Clusters of earlier runs that were killed before their teardown (their vitest is gone). */
function cleanUpAbandonedRuns(): void {
  for (const name of readdirSync(tmpdir())) {
    const m = new RegExp(`^${RUN_DIR_PREFIX}(\\d+)-`).exec(name);
    if (!m || isAlive(Number(m[1]))) continue;
    const dir = path.join(tmpdir(), name);
    stopCluster(dir);
    rmSync(dir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---------------------------------------------------------------- test files

let target: Promise<S3Target> | undefined;

/** The S3 endpoint of this run: RS_S3_ENDPOINT, or the run's RGW (started on first use). */
export function s3Target(): Promise<S3Target> {
  target ??= resolveTarget();
  // A failed start is reported to every caller, and retried by none (it would fail the same way).
  return target;
}

async function resolveTarget(): Promise<S3Target> {
  const env = process.env;
  if (env.RS_S3_ENDPOINT) {
    return {
      endpoint: env.RS_S3_ENDPOINT,
      accessKey: env.RS_S3_ACCESS_KEY ?? 'testaccesskey',
      secretKey: env.RS_S3_SECRET_KEY ?? 'testsecretkey',
      region: env.RS_S3_REGION ?? 'us-east-1',
    };
  }
  const { inject } = await import('vitest');
  const dir = inject('rsS3RunDir');
  if (!dir) {
    throw new Error('S3 tests need the globalSetup test/helpers/s3.ts (vitest.config.ts) or RS_S3_ENDPOINT');
  }
  return withLock(path.join(dir, 'lock'), () => startRgw(dir));
}

async function startRgw(dir: string): Promise<S3Target> {
  const infoFile = path.join(dir, 'endpoint.json');
  if (existsSync(infoFile)) {
    const info = JSON.parse(readFileSync(infoFile, 'utf8')) as S3Target;
    if (await answers(info.endpoint)) return info;
  }
  const cephDir = path.join(dir, 'ceph');
  const logFile = path.join(dir, 'start.log');
  const accessKey = 'testaccesskey';
  const secretKey = 'testsecretkey';
  // The OSD keeps its objects in RAM (memstore): RGW answers the S3 API the same as on
  // bluestore, without bluestore's disk writes, RocksDB and checksums (the OSD's CPU for the
  // S3-heavy suites fell by about 40%). Buckets are emptied after each file, so it holds little.
  const { endpoint, code } = await startCephRgw({
    cephDir,
    logFile,
    accessKey,
    secretKey,
    objectStore: 'memstore',
    extraConf: LEAN_CEPH_CONF,
    env: LEAN_CEPH_ENV,
  });
  if (code !== 0 || !(await answers(endpoint))) {
    throw new Error(
      `Ceph RGW did not start (start-ceph-rgw.sh exited with ${code}); S3 tests cannot run.\n` +
        `Install: apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd ceph-common\n${tail(logFile)}` +
        `\nceph logs: ${path.join(cephDir, 'log')}`,
    );
  }
  const info: S3Target = { endpoint, accessKey, secretKey, region: 'us-east-1' };
  writeFileSync(infoFile, JSON.stringify(info));
  return info;
}

/**
 * Less CPU for the same S3 answers (the bench keeps Ceph's defaults). Measured on the S3 suites
 * (driver-contract + s3-registry, four runs each): the daemons took 22-26 CPU-s with Ceph's
 * defaults, 15-21 with both of these, and no less than the defaults with only one of them.
 * - glibc's malloc hands the messenger's multi-megabyte buffers back to the kernel when they are
 *   freed (mmap, then the top of the heap trimmed) and faults them in again for the next object:
 *   a fixed mmap threshold of 64 MiB and trim threshold of 256 MiB keep them in the heap.
 * - Debug logging off: Ceph formats every message up to a subsystem's second level (mostly 5)
 *   into its in-memory log even when it writes none of them, and its op trackers keep a history
 *   of every op. The daemons' logs still get errors.
 */
const LEAN_CEPH_ENV = { MALLOC_MMAP_THRESHOLD_: String(64 * 1024 * 1024), MALLOC_TRIM_THRESHOLD_: String(256 * 1024 * 1024) };
const QUIET_SUBSYSTEMS = [
  'asok', 'auth', 'buffer', 'client', 'context', 'crush', 'crypto', 'filer', 'finisher', 'heartbeatmap', 'lockdep',
  'memdb', 'mon', 'monc', 'ms', 'none', 'objclass', 'objecter', 'optracker', 'osd', 'paxos', 'perfcounter',
  'prioritycache', 'rados', 'reserver', 'rgw', 'rgw_sync', 'rocksdb', 'throttle', 'timer', 'tp',
];
const LEAN_CEPH_CONF = [
  '[global]',
  ...QUIET_SUBSYSTEMS.map((s) => `debug_${s} = 0/0`),
  'mon_enable_op_tracker = false',
  'osd_enable_op_tracker = false',
].join('\n');

export interface TestBucket extends S3Target {
  bucket: string;
  client: S3Client;
  /** storage.s3 for a registry config on this bucket (merge `extra` over it). */
  storageConfig(extra?: Record<string, unknown>): Record<string, unknown>;
  /** Every object key in the bucket (hidden ones too), sorted. */
  keys(prefix?: string): Promise<string[]>;
  /** Empties and removes the bucket. */
  destroy(): Promise<void>;
}

/** A fresh, empty bucket on the run's S3. */
export async function createTestBucket(label = 'test'): Promise<TestBucket> {
  const t = await s3Target();
  const client = new S3Client({
    region: t.region,
    endpoint: t.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: t.accessKey, secretAccessKey: t.secretKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const clean = label.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 40);
  const bucket = `rs-${clean}-${randomBytes(4).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  const keys = async (prefix = ''): Promise<string[]> => {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  };
  return {
    ...t,
    bucket,
    client,
    keys,
    storageConfig: (extra = {}) => ({
      bucket,
      region: t.region,
      regionendpoint: t.endpoint,
      accesskey: t.accessKey,
      secretkey: t.secretKey,
      forcepathstyle: true,
      ...extra,
    }),
    async destroy() {
      try {
        const all = await keys();
        for (let i = 0; i < all.length; i += 1000) {
          await client.send(
            new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: all.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true } }),
          );
        }
        const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
        for (const u of uploads.Uploads ?? []) {
          await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
        }
        await client.send(new DeleteBucketCommand({ Bucket: bucket }));
      } finally {
        client.destroy();
      }
    },
  };
}

// ---------------------------------------------------------------- helpers

/** Serialises `fn` across the run's worker processes (mkdir is atomic). */
async function withLock<T>(lockDir: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(path.join(lockDir, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A holder that died leaves its lock behind.
      let holder = 0;
      try {
        holder = Number(readFileSync(path.join(lockDir, 'pid'), 'utf8'));
      } catch {
        // being written right now
      }
      if (holder > 0 && !isAlive(holder)) rmSync(lockDir, { recursive: true, force: true });
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}

async function answers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    return res.status < 500;
  } catch {
    return false;
  }
}

