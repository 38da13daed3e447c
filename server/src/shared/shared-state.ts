// Chooses, once at start-up, where the state that replicas must share lives:
//
//                       no redis section            redis section
//   GC pins, marks,     in-process (gc-guard.ts)    RedisGcGuard
//   recent use
//   GC/prune lock       in-process (KeyedLock)      RedisExclusive
//   mirror fills        in-process single-flight    RedisFillCoordinator
//   mirror manifests    in-process single-flight    RedisExclusive (one lock per manifest)
//   upload hash state   native, in memory           RedisHashStates
//   rate limits         RateLimiterMemory           RateLimiterRedis
//   blob descriptors    in-process LRU              RedisDescriptorCache
//                                                   (unless blobdescriptor: inmemory)
//   robot changes       the record cache's 5 s      RedisRobotChanges (pub/sub: at once)
//
// Without a redis section nothing here touches the network and the server
// behaves exactly as a single instance always did.
import type { RegistryConfig } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import type { FillCoordinator } from '../proxy/fill-coordinator.ts';
import type { Exclusive } from '../registry/keyed-lock.ts';
import type { HashStateEvent } from '../registry/uploads.ts';
import type { SharedRegistryState } from '../registry/local-registry.ts';
import { RedisHashStates } from './hash-states.ts';
import { RedisRobotChanges } from './redis-robots.ts';
import { RedisDescriptorCache } from './redis-descriptors.ts';
import { RedisFillCoordinator } from './redis-fills.ts';
import { RedisGcGuard } from './redis-gc-guard.ts';
import { RedisExclusive } from './redis-lock.ts';
import { createSharedRedis, type SharedRedis } from './redis.ts';

const WEEK_MS = 168 * 3_600_000;
const MANIFEST_LOCK_TTL_MS = 10_000;

export interface SharedState {
  /** The Redis client, when the config has a redis section. */
  readonly redis?: SharedRedis;
  /** For LocalRegistry (options.shared). */
  readonly registry: SharedRegistryState;
  /** For MirrorRegistry (options.fills). */
  readonly fills?: FillCoordinator;
  /** For MirrorRegistry (options.manifestLocks). */
  readonly manifestLocks?: Exclusive;
  /** For the robot store (createAuth's robotChanges), with auth.access. */
  readonly robotChanges?: RedisRobotChanges;
  /** Extra readiness checks (name → probe that throws when failing). */
  readonly checks: Record<string, () => Promise<void>>;
  /** What is shared, for the start-up log line. */
  readonly summary: string[];
  close(): Promise<void>;
}

export interface SharedStateOptions {
  onHashState?: (event: HashStateEvent) => void;
}

/** Builds the shared state for `config`; with Redis, connects first and throws (naming redis.addr) if it cannot. */
export async function createSharedState(
  config: RegistryConfig,
  logger: Logger,
  options: SharedStateOptions = {},
): Promise<SharedState> {
  const onHashState = options.onHashState;
  if (!config.redis) {
    // One instance: the native hash (several times faster than hash-wasm) keeps
    // the running state in memory; an upload continued elsewhere is re-read once
    // at commit. Replicas are meant to share a redis section.
    return { registry: { onHashState }, checks: {}, summary: [], close: async () => {} };
  }
  const redis = createSharedRedis(config.redis, logger);
  await redis.connect();
  const guard = new RedisGcGuard(redis);
  const descriptorsInRedis = config.storage.cache?.blobdescriptor !== 'inmemory';
  if (!descriptorsInRedis) {
    logger.warn(
      'storage.cache.blobdescriptor is inmemory while replicas share state through redis: a replica may trust a cached blob size after another replica garbage-collected the blob; use blobdescriptor: redis',
    );
  }
  const uploadAge = config.storage.maintenance?.uploadpurging?.age ?? WEEK_MS;
  const registry: SharedRegistryState = {
    guard,
    exclusive: new RedisExclusive(redis, logger),
    descriptors: descriptorsInRedis ? new RedisDescriptorCache(redis) : undefined,
    hashStates: new RedisHashStates(redis, Math.max(uploadAge, 3_600_000)),
    onHashState,
  };
  const fills = config.proxy ? new RedisFillCoordinator(redis, logger) : undefined;
  // Held while a manifest is fetched and stored (well under a second): a replica that dies holding
  // one keeps the others waiting at most this long.
  const manifestLocks = config.proxy ? new RedisExclusive(redis, logger, MANIFEST_LOCK_TTL_MS) : undefined;
  const robotChanges = config.auth?.access ? new RedisRobotChanges(redis, logger) : undefined;
  return {
    redis,
    registry,
    fills,
    manifestLocks,
    robotChanges,
    checks: { redis: () => redis.ping() },
    summary: [
      'gc pins and lock',
      'upload hash state',
      ...(descriptorsInRedis ? ['blob descriptor cache'] : []),
      ...(fills ? ['mirror single-flight (blobs and manifests)'] : []),
      ...(config.ratelimit?.enabled ? ['rate limits'] : []),
      ...(robotChanges ? ['robot changes'] : []),
    ],
    close: async () => {
      guard.close();
      robotChanges?.close();
      await redis.close();
    },
  };
}
