// The S3 side of `npm run bench -- --storage s3`: a Ceph RGW of the bench's
// own (test/tools/start-ceph-rgw.sh: one mon, one OSD on bluestore, one
// radosgw, all on 127.0.0.1 under the bench's temp directory), one bucket per
// server on it, and the few object operations the bench needs on its own
// (removing a blob's objects between pushes, checking that a mirror cached a
// blob). RS_S3_ENDPOINT (+ RS_S3_ACCESS_KEY, RS_S3_SECRET_KEY, RS_S3_REGION),
// as for the tests, points the bench at an S3 that is already running
// instead: nothing is started or stopped then, and the bench's buckets are
// emptied and removed at the end.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  S3Client,
} from '@aws-sdk/client-s3';
import { startCephRgw, stopCephRgw, tail } from '../tools/ceph-rgw.ts';


export interface BenchS3 {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region: string;
  client: S3Client;
  /** What the S3 is, for the table's header. */
  description: string;
  /** PIDs of the S3 service's processes on this machine (ceph-mon, ceph-osd, radosgw); none for an external S3. */
  pids(): number[];
  /** Creates a bucket the bench owns (removed at stop() on an external S3). */
  createBucket(label: string): Promise<string>;
  /** Stops what was started (`keep`: leave RGW's data directory and logs behind). */
  stop(keep: boolean): Promise<void>;
}

export async function startS3(workDir: string, log: (msg: string) => void): Promise<BenchS3> {
  const env = process.env;
  const buckets: string[] = [];
  let cephDir: string | undefined;
  let endpoint: string;
  let accessKey = 'benchaccesskey';
  let secretKey = 'benchsecretkey';
  let region = 'us-east-1';
  let description: string;
  if (env.RS_S3_ENDPOINT) {
    endpoint = env.RS_S3_ENDPOINT;
    accessKey = env.RS_S3_ACCESS_KEY ?? 'testaccesskey';
    secretKey = env.RS_S3_SECRET_KEY ?? 'testsecretkey';
    region = env.RS_S3_REGION ?? region;
    description = `the S3 at ${endpoint} (RS_S3_ENDPOINT)`;
  } else {
    cephDir = path.join(workDir, 'ceph');
    mkdirSync(cephDir, { recursive: true });
    const logFile = path.join(workDir, 'ceph-start.log');
    log(`s3: starting Ceph RGW in ${cephDir}`);
    const started = await startCephRgw({ cephDir, logFile, accessKey, secretKey });
    const code = started.code;
    endpoint = started.endpoint;
    if (code !== 0) {
      stopCephRgw(cephDir, false);
      throw new Error(
        `Ceph RGW did not start (start-ceph-rgw.sh exited with ${code}).\n` +
          `Install: apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd ceph-common\n${tail(logFile)}`,
      );
    }
    let version = '';
    try {
      version = spawnSync('radosgw', ['--version'], { encoding: 'utf8' }).stdout.trim().split(' ').slice(0, 3).join(' ');
    } catch {
      // not fatal
    }
    description =
      `Ceph RGW (${version || 'radosgw'}) on 127.0.0.1: 1 mon, 1 OSD (bluestore on a sparse file on the same disk), ` +
      'beast frontend, test/tools/start-ceph-rgw.sh';
  }

  const client = new S3Client({
    region,
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: accessKey, secretAccessKey: secretKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });

  const cephPids = (): number[] => {
    if (!cephDir) return [];
    const run = path.join(cephDir, 'run');
    if (!existsSync(run)) return [];
    const pids: number[] = [];
    for (const f of readdirSync(run)) {
      if (!f.endsWith('.pid')) continue;
      const pid = Number(readFileSync(path.join(run, f), 'utf8').trim());
      if (pid > 0) pids.push(pid);
    }
    return pids;
  };
  // Read once: the pid files are only rewritten by a restart, which the bench never does.
  const pids = cephPids();

  return {
    endpoint,
    accessKey,
    secretKey,
    region,
    client,
    description,
    pids: () => pids,
    async createBucket(label: string): Promise<string> {
      const bucket = `rs-bench-${label}-${randomBytes(3).toString('hex')}`;
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      buckets.push(bucket);
      return bucket;
    },
    async stop(keep: boolean): Promise<void> {
      if (cephDir) {
        client.destroy();
        stopCephRgw(cephDir, !keep);
        return;
      }
      for (const bucket of buckets) {
        await removeBucket(client, bucket).catch((err) => log(`s3: could not remove bucket ${bucket}: ${(err as Error).message}`));
      }
      client.destroy();
    },
  };
}

/** Every key under `prefix` in `bucket`. */
async function listKeys(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const out: ListObjectsV2CommandOutput = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of out.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Deletes every object under `prefix` (and unfinished multipart uploads there). */
export async function deletePrefix(client: S3Client, bucket: string, prefix: string): Promise<void> {
  const keys = await listKeys(client, bucket, prefix);
  for (let i = 0; i < keys.length; i += 1000) {
    await client.send(
      new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true } }),
    );
  }
  const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
  for (const u of uploads.Uploads ?? []) {
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
  }
}

export async function objectExists(client: S3Client, bucket: string, key: string): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

async function removeBucket(client: S3Client, bucket: string): Promise<void> {
  await deletePrefix(client, bucket, '');
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

