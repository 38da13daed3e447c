// Replicas for the scale-out suites: our server as child processes (`node
// server/bin/registry.mjs serve config.yml`, as in production), all on one
// test bucket of the run's Ceph RGW and (optionally) one private Redis, each
// with its own admin listener for /metrics and /admin/gc.
import { rmSync } from 'node:fs';
import { request } from 'undici';
import { metric } from './ops/servers.ts';
import { freePort, makeTempDir, type ServerProcess, startServerProcess } from './process.ts';
import type { TestRedis } from './redis.ts';
import type { TestBucket } from './s3.ts';

export const MiB = 1024 * 1024;

export interface ReplicaOptions {
  /** For temp dir names and messages. */
  label: string;
  bucket: TestBucket;
  /** Share state through this Redis (redis.addr); none: each replica keeps its own. */
  redis?: TestRedis;
  /** user → password: htpasswd auth on (each replica gets the same users). */
  users?: Record<string, string>;
  /** More keys for storage (merged over the s3 driver section and the defaults). */
  storage?: Record<string, unknown>;
  /** More keys for redis. */
  redisExtra?: Record<string, unknown>;
  /** Other top-level config keys (proxy, gc, ratelimit, ...). */
  extra?: Record<string, unknown>;
}

export interface Replica extends ServerProcess {
  readonly label: string;
  readonly adminUrl: string;
  /** The admin listener's Prometheus text. */
  metricsText(): Promise<string>;
  /** One sample of /metrics (0 when absent). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** Stops the process (if still running) and removes its temp dir. */
  dispose(): Promise<void>;
}

export async function startReplica(options: ReplicaOptions): Promise<Replica> {
  const workDir = makeTempDir(`rs-scale-${options.label}-`);
  const adminPort = await freePort();
  const proc = await startServerProcess({
    dataDir: workDir,
    workDir,
    users: options.users,
    extra: {
      log: { level: 'info', accesslog: { disabled: true } },
      storage: {
        // The smallest part size S3 allows: more parts, so fills and pushes are tailed part by part.
        s3: options.bucket.storageConfig({ chunksize: 5 * MiB }),
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
        ...options.storage,
      },
      ...(options.redis ? { redis: { addr: options.redis.addr, ...options.redisExtra } } : {}),
      admin: { addr: `127.0.0.1:${adminPort}` },
      ...options.extra,
    },
  });
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const metricsText = async () => {
    const res = await request(`${adminUrl}/metrics`);
    if (res.statusCode !== 200) throw new Error(`${options.label} /metrics: ${res.statusCode}`);
    return res.body.text();
  };
  return Object.assign(proc, {
    label: options.label,
    adminUrl,
    metricsText,
    async metric(name: string, labels: Record<string, string> = {}) {
      return metric(await metricsText(), name, labels) ?? 0;
    },
    async dispose() {
      await proc.stop();
      rmSync(workDir, { recursive: true, force: true });
    },
  });
}

/** POST /admin/<what> on a replica; resolves with the JSON answer (throws on a non-200). */
export async function adminPost(replica: Replica, pathAndQuery: string): Promise<any> {
  const res = await request(`${replica.adminUrl}${pathAndQuery}`, { method: 'POST' });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${replica.label} POST ${pathAndQuery}: ${res.statusCode} ${text}`);
  return JSON.parse(text);
}
