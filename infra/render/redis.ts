// redis.conf for the Redis the registry replicas share state through: the GC
// lock and blob pins, the mirror's single-flight locks, resumable upload hash
// state, rate-limit counters and the blob descriptor cache. It runs as a
// container on the internal network (no published port) and requires a
// password; the file holds it, so it is uploaded as a secret and never shown
// on a command line.
//
// Without persistence (the default) Redis keeps everything in memory: all of
// the above is either short-lived or rebuilt, and a restart costs at most the
// uploads in flight. With persistence an append-only file on the redis_data
// volume survives restarts.
//
// maxmemory stays under the container's limit so Redis answers "OOM" to writes
// instead of being killed; noeviction because evicting a lock would be wrong,
// not just slow.

export interface RedisConfOptions {
  password: string;
  port: number;
  /** Container memory limit in bytes; maxmemory is 75% of it. */
  memoryLimit: number;
  persistence: boolean;
  /** Data directory (the volume's mount point when persistence is on). */
  dir: string;
  /** Listen addresses (default: every interface of the container; only the internal network reaches it). */
  bind?: string;
}

export function renderRedisConf(o: RedisConfOptions): string {
  if (!/^[A-Za-z0-9._~-]{16,}$/.test(o.password)) throw new Error('redis.conf: the password must be at least 16 URL-safe characters');
  if (!/^\/[A-Za-z0-9._/-]*$/.test(o.dir)) throw new Error(`redis.conf: bad dir ${o.dir}`);
  const bind = o.bind ?? '* -::*';
  if (!/^[0-9a-fA-F:.*\s-]+$/.test(bind)) throw new Error(`redis.conf: bad bind ${bind}`);
  const maxmemory = Math.max(16 * 1024 ** 2, Math.floor(o.memoryLimit * 0.75));
  const lines = [
    '# Rendered by registry-stack (infra/render/redis.ts). Do not edit: `pulumi up` overwrites it.',
    `bind ${bind}`,
    `port ${o.port}`,
    'protected-mode yes',
    `requirepass ${o.password}`,
    `dir ${o.dir}`,
    `maxmemory ${maxmemory}`,
    'maxmemory-policy noeviction',
    'save ""',
    ...(o.persistence ? ['appendonly yes', 'appendfsync everysec'] : ['appendonly no']),
    'loglevel notice',
    'logfile ""',
    '',
  ];
  return lines.join('\n');
}
