// The configuration file's schema: distribution's config.yml (so existing
// registry:2 configs load unchanged) plus our own keys. Every object is
// strict, so a misspelt key is refused with its full path. Keys stay
// lowercase without underscores, which is what lets REGISTRY_A_B_C map onto
// them as in distribution.
import { z } from 'zod';
import { parseDuration, parseSize } from './units.ts';

// Environment overrides arrive as strings; accept "true"/"5" where a boolean or number is due.
const bool = z.preprocess((v) => (v === 'true' ? true : v === 'false' ? false : v), z.boolean());
const int = z.preprocess(
  (v) => (typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v),
  z.number().int(),
);
const num = z.preprocess(
  (v) => (typeof v === 'string' && /^\s*\d+(?:\.\d+)?\s*$/.test(v) ? Number(v) : v),
  z.number(),
);
const str = z.preprocess((v) => (typeof v === 'number' ? String(v) : v), z.string());

/** A Go duration string ("168h", "30s"), parsed to milliseconds. */
const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? (v === 0 ? 0 : undefined) : parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (use e.g. 30s, 10m, 168h)` });
    return z.NEVER;
  }
  return ms;
});

/** A byte size ("10GB", "512MiB", 1048576), parsed to bytes. */
export const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const bytes = parseSize(v);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (use e.g. 512MB, 10GB, 1GiB)` });
    return z.NEVER;
  }
  return bytes;
});

/**
 * A TCP listen address as http.addr and admin.addr take it: "host:port",
 * ":port" (all interfaces) or "[v6]:port". Checked here so that a typo stops
 * the start with the key's name instead of surfacing from inside listen().
 */
const LISTEN_ADDR = /^(?:\[([^\]]+)\]|([^\s:/[\]]*)):(\d{1,5})$/;

export function parseListenAddr(addr: string): { host: string; port: number } | undefined {
  const m = LISTEN_ADDR.exec(addr.trim());
  if (!m || Number(m[3]) > 65535) return undefined;
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

const listenAddr = str.pipe(
  z.string().refine((v) => parseListenAddr(v) !== undefined, {
    error: (issue) => `must be host:port or :port (e.g. :5000, 127.0.0.1:5000), got ${JSON.stringify(issue.input)}`,
  }),
);

/** A URL as shown in a message: user:password@ is never repeated. */
function redactUrl(v: string): string {
  return v.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, '$1…@');
}

/**
 * The URL of an upstream registry: http(s) only (anything else would fail at
 * the first pull), and no path, which the mirror would silently drop (the
 * distribution API lives at /v2/ of the origin).
 */
const registryUrl = z.string().superRefine((v, ctx) => {
  const shown = JSON.stringify(redactUrl(v));
  let url: URL | undefined;
  try {
    url = new URL(v);
  } catch {
    // "registry-1.docker.io" parses as nothing; "localhost:5000" as scheme "localhost:".
  }
  if (!url || !/^[a-z][a-z0-9+.-]*:\/\//i.test(v)) {
    ctx.addIssue({ code: 'custom', message: `must be an http(s) URL such as https://registry-1.docker.io, got ${shown} (no scheme?)` });
  } else if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.addIssue({ code: 'custom', message: `must be an http(s) URL with no path, e.g. https://ghcr.io; ${url.protocol.slice(0, -1)} is not supported, got ${shown}` });
  } else if (url.pathname !== '/' || url.search !== '' || url.hash !== '') {
    ctx.addIssue({ code: 'custom', message: `must be an http(s) URL with no path, e.g. https://ghcr.io (the registry API is always at /v2/), got ${shown}` });
  }
});

const logLevel = z.enum(['error', 'warn', 'info', 'debug', 'trace', 'fatal', 'panic']);

const log = z.strictObject({
  level: logLevel.default('info'),
  formatter: z.enum(['text', 'json', 'logstash']).optional(),
  fields: z.record(z.string(), z.unknown()).optional(),
  hooks: z.array(z.unknown()).optional(),
  reportcaller: bool.optional(),
  accesslog: z.strictObject({ disabled: bool.default(false) }).default({ disabled: false }),
});

const filesystem = z.strictObject({
  rootdirectory: str.default('/var/lib/registry'),
  maxthreads: int.optional(),
});

const MiB = 1024 * 1024;

/** distribution's s3 driver keys (storage.s3), plus the few of its later versions. */
const s3 = z
  .strictObject({
    bucket: str.pipe(z.string().min(1, 'the bucket name is required')),
    region: str.default('us-east-1'),
    /** Endpoint of an S3-compatible service (R2, Ceph RGW, MinIO); scheme optional (see secure). */
    regionendpoint: str.optional(),
    accesskey: str.optional(),
    secretkey: str.optional(),
    sessiontoken: str.optional(),
    /** Path-style addressing; default: on when regionendpoint is set. */
    forcepathstyle: bool.optional(),
    /** Bytes per stored piece of an upload (at least 5 MiB, as S3's smallest multipart part). */
    chunksize: size.default(10 * MiB),
    rootdirectory: str.optional(),
    /** https for a regionendpoint given without a scheme. */
    secure: bool.default(true),
    skipverify: bool.default(false),
    encrypt: bool.default(false),
    keyid: str.optional(),
    /** Signature v4 is the only one S3 services still accept; false is refused. */
    v4auth: bool.default(true),
    multipartcopychunksize: size.default(32 * MiB),
    multipartcopymaxconcurrency: int.pipe(z.number().int().positive()).default(100),
    multipartcopythresholdsize: size.default(32 * MiB),
    storageclass: str.default('STANDARD'),
    objectacl: str.optional(),
    useragent: str.optional(),
    usedualstack: bool.optional(),
    accelerate: bool.optional(),
    loglevel: str.optional(),
    checksumdisabled: bool.optional(),
    checksumalgorithm: str.optional(),
  })
  .superRefine((s, ctx) => {
    if (s.chunksize < 5 * MiB) {
      ctx.addIssue({ code: 'custom', path: ['chunksize'], message: `must be at least 5 MiB (5242880), got ${s.chunksize}` });
    }
    if (s.chunksize > 5 * 1024 * MiB) {
      ctx.addIssue({ code: 'custom', path: ['chunksize'], message: `must be at most 5 GiB, got ${s.chunksize}` });
    }
    if (s.multipartcopychunksize < 5 * MiB) {
      ctx.addIssue({ code: 'custom', path: ['multipartcopychunksize'], message: 'must be at least 5 MiB (5242880)' });
    }
    if (!s.v4auth) ctx.addIssue({ code: 'custom', path: ['v4auth'], message: 'only signature v4 is supported' });
    if ((s.accesskey === undefined) !== (s.secretkey === undefined)) {
      ctx.addIssue({ code: 'custom', path: [s.accesskey === undefined ? 'accesskey' : 'secretkey'], message: 'accesskey and secretkey go together' });
    }
  });

const storage = z
  .strictObject({
    filesystem: filesystem.optional(),
    s3: s3.optional(),
    delete: z.strictObject({ enabled: bool.default(false) }).default({ enabled: false }),
    cache: z
      .strictObject({
        blobdescriptor: z.enum(['inmemory', 'redis']).optional(),
        blobdescriptorsize: int.optional(),
      })
      .optional(),
    maintenance: z
      .strictObject({
        uploadpurging: z
          .strictObject({
            enabled: bool.default(true),
            age: duration.default(168 * 3_600_000),
            interval: duration.default(24 * 3_600_000),
            dryrun: bool.default(false),
          })
          .optional(),
        readonly: z.strictObject({ enabled: bool.default(false) }).optional(),
      })
      .optional(),
    redirect: z.strictObject({ disable: bool.default(false) }).optional(),
    tag: z.strictObject({ concurrencylimit: int.optional() }).optional(),
  })
  .superRefine((s, ctx) => {
    if (!s.filesystem && !s.s3) {
      ctx.addIssue({ code: 'custom', path: ['filesystem'], message: 'a storage driver is required (storage.filesystem or storage.s3)' });
    }
    if (s.filesystem && s.s3) {
      ctx.addIssue({ code: 'custom', path: ['s3'], message: 'exactly one storage driver may be configured: storage.filesystem or storage.s3, not both' });
    }
  });

const http = z.strictObject({
  /** host:port for net tcp, a socket path for net unix (checked below). */
  addr: str.default(':5000'),
  net: z.enum(['tcp', 'unix']).default('tcp'),
  prefix: str.optional(),
  host: str.optional(),
  secret: str.optional(),
  relativeurls: bool.optional(),
  draintimeout: duration.optional(),
  tls: z
    .strictObject({
      certificate: str.optional(),
      key: str.optional(),
      clientcas: z.array(z.string()).optional(),
      minimumtls: str.optional(),
      ciphersuites: z.array(z.string()).optional(),
      letsencrypt: z.record(z.string(), z.unknown()).optional(),
    })
    .optional(),
  debug: z
    .strictObject({
      addr: str.optional(),
      prometheus: z.strictObject({ enabled: bool.default(false), path: str.default('/metrics') }).optional(),
    })
    .optional(),
  headers: z.record(z.string(), z.union([z.array(z.string()), z.string()])).optional(),
  http2: z.strictObject({ disabled: bool.default(false) }).optional(),
  h2c: z.strictObject({ enabled: bool.default(false) }).optional(),
  timeout: z
    .strictObject({
      read: duration.optional(),
      write: duration.optional(),
      idle: duration.optional(),
    })
    .optional(),
}).superRefine((h, ctx) => {
  if (h.net === 'tcp' && !parseListenAddr(h.addr)) {
    ctx.addIssue({ code: 'custom', path: ['addr'], message: `must be host:port or :port (e.g. :5000, 127.0.0.1:5000), got ${JSON.stringify(h.addr)}` });
  }
});

const htpasswd = z.strictObject({
  realm: str.default('Registry Realm'),
  path: str,
});

const auth = z
  .strictObject({
    htpasswd: htpasswd.optional(),
    token: z.record(z.string(), z.unknown()).optional(),
    silly: z.record(z.string(), z.unknown()).optional(),
    /** Ours: let anonymous clients pull while pushes need a login. */
    anonymouspull: bool.default(false),
  })
  .superRefine((a, ctx) => {
    if (a.token) ctx.addIssue({ code: 'custom', path: ['token'], message: 'token auth is not supported yet; use auth.htpasswd' });
    if (a.silly) ctx.addIssue({ code: 'custom', path: ['silly'], message: 'silly auth is not supported; use auth.htpasswd' });
  });

const health = z.strictObject({
  storagedriver: z
    .strictObject({ enabled: bool.default(false), interval: duration.optional(), threshold: int.optional() })
    .optional(),
  file: z.array(z.unknown()).optional(),
  http: z.array(z.unknown()).optional(),
  tcp: z.array(z.unknown()).optional(),
});

/** One upstream registry of the mirror (ours; distribution's remoteurl gives just one). */
const upstream = z.strictObject({
  /** The registry host clients name: containerd's ?ns= value, or the leading component of a repository name. */
  host: z.string().regex(/^[a-z0-9.-]+(:\d+)?$/, 'must be a registry host such as ghcr.io or registry.example.com:5000'),
  /** Where to reach it, e.g. https://registry-1.docker.io for docker.io. */
  url: registryUrl,
  username: str.optional(),
  password: str.optional(),
});

const proxy = z.strictObject({
  // distribution's keys: one upstream
  remoteurl: str.pipe(registryUrl).optional(),
  username: str.optional(),
  password: str.optional(),
  /** Cached content unused for this long is evicted (distribution's meaning; the pruning job enforces it). */
  ttl: duration.optional(),
  // ours
  upstreams: z.array(upstream).optional(),
  /** Which upstream serves names with no registry host (default: docker.io, or the only upstream). */
  defaulthost: str.optional(),
  /** How long a cached tag is trusted without asking the upstream (0: revalidate every pull by tag). */
  tagfreshness: duration.default(0),
  /** Cache-Control max-age for manifests fetched by tag (for a CDN in front). */
  tagmaxage: duration.default(60_000),
});

/**
 * distribution's `redis` section (2.8 keys): what replicas behind one load
 * balancer share (GC pins and lock, the mirror's single-flight, upload hash
 * state, rate-limit counters, the blob descriptor cache). ioredis multiplexes
 * one connection, so `pool` is accepted for compatibility and not used.
 */
const redis = z.strictObject({
  /** host:port of the Redis server. */
  addr: str.pipe(z.string().regex(/^(?:\[[^\]]+\]|[^\s:/]+):\d{1,5}$/, 'must be host:port, e.g. redis:6379')),
  /** Redis 6 ACL user (distribution 3's key); the password alone authenticates as "default". */
  username: str.optional(),
  password: str.optional(),
  db: int.pipe(z.number().int().min(0)).default(0),
  dialtimeout: duration.optional(),
  readtimeout: duration.optional(),
  writetimeout: duration.optional(),
  tls: z.strictObject({ enabled: bool.default(false), insecureskipverify: bool.default(false) }).optional(),
  pool: z.strictObject({ maxidle: int.optional(), maxactive: int.optional(), idletimeout: duration.optional() }).optional(),
  /** Ours: prefix of every key, so that deployments can share one database. */
  prefix: str.pipe(z.string().regex(/^[A-Za-z0-9:._-]{0,64}$/, 'letters, digits and :._- only')).default('registry:'),
});

/** Ours: the admin listener (metrics, health, GC and prune endpoints), loopback by default. */
const admin = z.strictObject({
  addr: listenAddr.default('127.0.0.1:5001'),
  /** Bearer token the admin endpoints that change things (gc, prune) require; none = loopback trust. */
  token: str.optional(),
});

const bucket = z.strictObject({
  /** Sustained requests per second. */
  rate: num.pipe(z.number().positive()),
  /** Requests allowed in a burst above the rate. */
  burst: int.pipe(z.number().int().positive()),
});

/** Ours: built-in rate limits. */
const ratelimit = z.strictObject({
  enabled: bool.default(false),
  perip: bucket.optional(),
  peruser: bucket.optional(),
  failedlogins: z.strictObject({ limit: int, window: duration }).optional(),
  /** Addresses/CIDRs of proxies (Caddy) whose X-Forwarded-For is believed. */
  trustedproxies: z.array(z.string()).default([]),
});

/** Ours: online garbage collection. */
const gc = z.strictObject({
  /** Run GC this often inside the server (0: only on demand). */
  interval: duration.default(0),
  /** Blobs younger than this are never collected (pushes in flight reference them). */
  graceperiod: duration.default(3_600_000),
  deleteuntagged: bool.default(false),
});

/** Ours: the mirror's cache pruning policy. */
const cache = z.strictObject({
  /** Evict content unused for this long (default: proxy.ttl, 168h). */
  maxage: duration.optional(),
  /** Keep the cache under this size, least recently used first. */
  maxsize: size.optional(),
  /** Prune this often inside the server (0: only on demand / from cron). */
  interval: duration.default(0),
});

export const configSchema = z.strictObject({
  version: z.union([z.string(), z.number()]).transform(String).default('0.1'),
  log: log.default({ level: 'info', accesslog: { disabled: false } }),
  loglevel: logLevel.optional(),
  storage,
  http: http.default({ addr: ':5000', net: 'tcp' }),
  auth: auth.optional(),
  health: health.optional(),
  proxy: proxy.optional(),
  notifications: z.record(z.string(), z.unknown()).optional(),
  redis: redis.optional(),
  validation: z.record(z.string(), z.unknown()).optional(),
  compatibility: z.record(z.string(), z.unknown()).optional(),
  reporting: z.record(z.string(), z.unknown()).optional(),
  middleware: z.record(z.string(), z.unknown()).optional(),
  admin: admin.optional(),
  ratelimit: ratelimit.optional(),
  gc: gc.optional(),
  cache: cache.optional(),
}).superRefine((c, ctx) => {
  if (c.storage.cache?.blobdescriptor === 'redis' && !c.redis) {
    ctx.addIssue({ code: 'custom', path: ['storage', 'cache', 'blobdescriptor'], message: '"redis" needs a redis section (redis.addr)' });
  }
  // Both listeners on one port: the second would fail at listen with "address in use".
  const main = c.http.net === 'tcp' ? parseListenAddr(c.http.addr) : undefined;
  const admin = c.admin ? parseListenAddr(c.admin.addr) : undefined;
  if (main && admin && main.port !== 0 && main.port === admin.port && overlaps(main.host, admin.host)) {
    ctx.addIssue({ code: 'custom', path: ['admin', 'addr'], message: `must not use the port of http.addr (${c.http.addr}), got ${JSON.stringify(c.admin!.addr)}` });
  }
});

const ANY_HOST = new Set(['', '0.0.0.0', '::']);
function overlaps(a: string, b: string): boolean {
  return a === b || ANY_HOST.has(a) || ANY_HOST.has(b);
}

export type RegistryConfig = z.output<typeof configSchema>;
