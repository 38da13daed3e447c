// The one Redis client a server shares its cross-replica state through
// (config `redis`, distribution's keys). ioredis multiplexes every command of
// the process over one connection, so distribution's `pool` settings have
// nothing to tune and are ignored. The client is created lazily and
// connected once at start-up, so that a replica whose Redis is unreachable
// refuses to start with a message naming redis.addr instead of running
// without the state it must share. The password never reaches a log line:
// errors are logged by their message only (ioredis never puts it there).
// ioredis is loaded only by a server that has a redis section: a single
// instance would otherwise carry it (about 10 MB) for nothing.
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';
import type { RegistryConfig } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';

export type RedisConfig = NonNullable<RegistryConfig['redis']>;

/** What every Redis-backed piece gets: the client and the key prefix of this deployment. */
export interface SharedRedis {
  readonly client: Redis;
  /** Prefix of every key (redis.prefix, "registry:" by default). */
  readonly prefix: string;
  /** host:port, for messages. */
  readonly addr: string;
  key(...parts: string[]): string;
  /** Registers a Lua script (EVALSHA, falling back to EVAL) and returns a function that runs it. */
  script<R = unknown>(name: string, numberOfKeys: number, lua: string): (...args: Array<string | number | Buffer>) => Promise<R>;
  connect(): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export class RedisUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RedisUnavailable';
  }
}

/** host:port (or [v6]:port) → host and port. */
export function parseRedisAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^\s:/]+)):(\d{1,5})$/.exec(addr.trim());
  if (!m) throw new Error(`redis.addr must be host:port, got "${addr}"`);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

/** ioredis options for the config (exported for tests). */
export function redisOptions(config: RedisConfig): RedisOptions {
  const { host, port } = parseRedisAddr(config.addr);
  const timeouts = [config.readtimeout, config.writetimeout].filter((t): t is number => t !== undefined && t > 0);
  return {
    host,
    port,
    username: config.username,
    password: config.password,
    db: config.db,
    connectTimeout: config.dialtimeout && config.dialtimeout > 0 ? config.dialtimeout : 10_000,
    // One deadline per command: ioredis has no separate read and write timeouts.
    commandTimeout: timeouts.length > 0 ? Math.max(...timeouts) : undefined,
    tls: config.tls?.enabled ? { servername: host, rejectUnauthorized: !config.tls.insecureskipverify } : undefined,
    lazyConnect: true,
    // RESP2: works with every Redis from 5 on, and with managed services that lack HELLO.
    protocol: 2,
    // A request waits through a short reconnect, not forever.
    maxRetriesPerRequest: 3,
    connectionName: 'registry',
    disableClientInfo: true,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  };
}

/** ioredis's Redis class, loaded on first use (synchronously: it is CommonJS, and callers need the client at once). */
function redisClass(): typeof Redis {
  return (createRequire(import.meta.url)('ioredis') as typeof import('ioredis')).Redis;
}

export function createSharedRedis(config: RedisConfig, logger: Logger): SharedRedis {
  const RedisClient = redisClass();
  const client = new RedisClient(redisOptions(config));
  const addr = config.addr;
  const prefix = config.prefix;
  // Without a listener ioredis prints every connection error; log them, at most every 10 s.
  let lastLogged = 0;
  client.on('error', (err: Error) => {
    const now = Date.now();
    if (now - lastLogged < 10_000) return;
    lastLogged = now;
    logger.warn({ redis: addr, err: err.message }, 'redis connection error');
  });
  let closed = false;
  const scripts = new Set<string>();
  return {
    client,
    prefix,
    addr,
    key: (...parts) => prefix + parts.join(':'),
    script<R>(name: string, numberOfKeys: number, lua: string) {
      const command = `rs${name}`;
      if (!scripts.has(command)) {
        client.defineCommand(command, { numberOfKeys, lua });
        scripts.add(command);
      }
      const fn = (client as unknown as Record<string, (...args: unknown[]) => Promise<R>>)[command];
      return (...args: Array<string | number | Buffer>) => fn.apply(client, args);
    },
    async connect() {
      // ioredis rejects with "Connection is closed"; the socket's own error says why.
      let cause: Error | undefined;
      const remember = (err: Error) => {
        cause ??= err;
      };
      client.on('error', remember);
      try {
        await withTimeout(client.connect(), (config.dialtimeout || 10_000) + 1000);
        await client.ping();
      } catch (err) {
        client.disconnect();
        throw new RedisUnavailable(`cannot reach redis at ${addr} (redis.addr): ${(cause ?? (err as Error)).message}`);
      } finally {
        client.off('error', remember);
      }
    },
    async ping() {
      await client.ping();
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await withTimeout(client.quit(), 2000);
      } catch {
        client.disconnect();
      }
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Milliseconds on Redis's clock, for Lua scripts (every replica then agrees on "now"). */
export const LUA_NOW = `local __t = redis.call('TIME')
local now = tonumber(__t[1]) * 1000 + math.floor(tonumber(__t[2]) / 1000)
`;
