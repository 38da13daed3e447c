// The configuration file's schema: distribution's config.yml (so existing
// registry:2 configs load unchanged) plus our own keys. Every object is
// strict, so a misspelt key is refused with its full path. Keys stay
// lowercase without underscores, which is what lets REGISTRY_A_B_C map onto
// them as in distribution.
import { isIP } from 'node:net';
import * as z from 'zod';
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
  level: logLevel.default('info').describe('Least severe level logged (panic is taken as fatal).'),
  formatter: z.enum(['text', 'json', 'logstash']).optional().describe('Accepted; logs are always JSON lines on stdout.'),
  fields: z.record(z.string(), z.unknown()).optional().describe('Fields added to every log line, e.g. {service: registry}.'),
  hooks: z.array(z.unknown()).optional().describe('Accepted; not used.'),
  reportcaller: bool.optional().describe('Accepted; not used.'),
  accesslog: z
    .strictObject({ disabled: bool.default(false).describe('No access log line per request.') })
    .default({ disabled: false })
    .describe('One log line per request: method, path, status, duration, user, client address, bytes.'),
});

const filesystem = z.strictObject({
  rootdirectory: str.default('/var/lib/registry').describe("The data directory, in distribution's layout (docker/registry/v2/...); created at start and write-probed."),
  maxthreads: int.optional().describe('Accepted; not used.'),
});

const MiB = 1024 * 1024;

/** distribution's s3 driver keys (storage.s3), plus the few of its later versions. */
const s3 = z
  .strictObject({
    bucket: str.pipe(z.string().min(1, 'the bucket name is required')).describe('The bucket (required).'),
    region: str.default('us-east-1').describe('The bucket\'s region; R2 takes "auto".'),
    regionendpoint: str.optional().describe('Endpoint of an S3-compatible service (R2, Ceph RGW, MinIO); omit for AWS S3. Scheme optional (see secure).'),
    accesskey: str.optional().describe('Access key ID (or REGISTRY_STORAGE_S3_ACCESSKEY); goes with secretkey. Without both, the AWS SDK\'s default credential chain.'),
    secretkey: str.optional().describe('Secret access key (or REGISTRY_STORAGE_S3_SECRETKEY).'),
    sessiontoken: str.optional().describe('Session token of temporary credentials.'),
    forcepathstyle: bool.optional().describe('Path-style addressing; default: on when regionendpoint is set.'),
    chunksize: size.default(10 * MiB).describe("Bytes per stored part of an upload: 5 MiB (S3's smallest multipart part) to 5 GiB."),
    rootdirectory: str.optional().describe('Prefix of every key, e.g. one per registry in a shared bucket.'),
    secure: bool.default(true).describe('https for a regionendpoint given without a scheme.'),
    skipverify: bool.default(false).describe("Do not verify the endpoint's TLS certificate."),
    encrypt: bool.default(false).describe('Server-side encryption of stored objects: AES256, or aws:kms with keyid.'),
    keyid: str.optional().describe('KMS key ID for encrypt.'),
    v4auth: bool.default(true).describe('Signature v4 is the only one S3 services still accept; false is refused.'),
    multipartcopychunksize: size.default(32 * MiB).describe('Part size of server-side copies (at least 5 MiB).'),
    multipartcopymaxconcurrency: int.pipe(z.number().int().positive()).default(100).describe('Parts copied at once in a server-side copy.'),
    multipartcopythresholdsize: size.default(32 * MiB).describe('Objects larger than this are copied in parts.'),
    storageclass: str.default('STANDARD').describe('Storage class of stored objects.'),
    objectacl: str.optional().describe('Accepted; not used.'),
    useragent: str.optional().describe('User-Agent of S3 requests.'),
    usedualstack: bool.optional().describe('Accepted; not used.'),
    accelerate: bool.optional().describe('Accepted; not used.'),
    loglevel: str.optional().describe('Accepted; not used.'),
    checksumdisabled: bool.optional().describe('Accepted; not used.'),
    checksumalgorithm: str.optional().describe('Accepted; not used.'),
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
    filesystem: filesystem.optional().describe('Store in a local directory. Exactly one driver: filesystem or s3.'),
    s3: s3.optional().describe('Store in an S3-compatible bucket (R2, AWS S3, Ceph RGW, MinIO), with the same key layout as on disk.'),
    delete: z
      .strictObject({ enabled: bool.default(false).describe('Clients may delete tags and manifests (never on a mirror).') })
      .default({ enabled: false }),
    cache: z
      .strictObject({
        blobdescriptor: z
          .enum(['inmemory', 'redis'])
          .optional()
          .describe("inmemory: also trust a repository's links for 10 s once seen; redis: share blob sizes between replicas (the default with a redis section). Blob sizes are always cached in memory."),
        blobdescriptorsize: int.optional().describe('Entries of the in-memory blob size cache (default 10000).'),
      })
      .optional()
      .describe('What is cached about stored blobs.'),
    maintenance: z
      .strictObject({
        uploadpurging: z
          .strictObject({
            enabled: bool.default(true).describe('Delete abandoned upload sessions.'),
            age: duration.default(168 * 3_600_000).describe('Sessions older than this are abandoned.'),
            interval: duration.default(24 * 3_600_000).describe('How often to look for them.'),
            dryrun: bool.default(false).describe('Only log how many would go.'),
          })
          .optional()
          .describe('The upload purger (on by default).'),
        readonly: z
          .strictObject({ enabled: bool.default(false).describe('Refuse pushes and deletes (for an offline garbage-collect).') })
          .optional(),
      })
      .optional(),
    redirect: z
      .strictObject({ disable: bool.default(false).describe('s3: serve blob GETs through the registry instead of a 307 to a presigned bucket URL.') })
      .optional(),
    tag: z.strictObject({ concurrencylimit: int.optional().describe('Accepted; not used.') }).optional(),
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
  addr: str.default(':5000').describe('Where the API listens: host:port or :port (all interfaces) for net tcp, a socket path for net unix.'),
  net: z.enum(['tcp', 'unix']).default('tcp').describe('tcp or unix.'),
  prefix: str.optional().describe('Path the API is served under, e.g. /registry.'),
  host: str.optional().describe('Accepted; not used (upload Locations are relative).'),
  secret: str.optional().describe('Accepted; not used.'),
  relativeurls: bool.optional().describe('Accepted; Locations are always relative.'),
  draintimeout: duration.optional().describe('Accepted; not used.'),
  tls: z
    .strictObject({
      certificate: str.optional().describe('PEM certificate file: serve HTTPS (with key).'),
      key: str.optional().describe('PEM key file of the certificate.'),
      clientcas: z.array(z.string()).optional().describe('Accepted; not used.'),
      minimumtls: str.optional().describe("Accepted; not used (Node's default minimum, TLS 1.2)."),
      ciphersuites: z.array(z.string()).optional().describe('Accepted; not used.'),
      letsencrypt: z.record(z.string(), z.unknown()).optional().describe('Accepted; not used (Caddy gets the certificates).'),
    })
    .optional()
    .describe('TLS on the listener itself; the stack terminates TLS in Caddy instead.'),
  debug: z
    .strictObject({
      addr: str.optional(),
      prometheus: z.strictObject({ enabled: bool.default(false), path: str.default('/metrics') }).optional(),
    })
    .optional()
    .describe('Accepted; not used: metrics and health are on the admin listener.'),
  headers: z.record(z.string(), z.union([z.array(z.string()), z.string()])).optional().describe('Headers added to every response, e.g. X-Content-Type-Options: [nosniff].'),
  http2: z.strictObject({ disabled: bool.default(false) }).optional().describe('Accepted; not used (HTTP/1.1).'),
  h2c: z.strictObject({ enabled: bool.default(false) }).optional().describe('Accepted; not used.'),
  timeout: z
    .strictObject({
      read: duration.optional().describe('Longest time to receive a whole request, body included (default: none, so big pushes are not cut off).'),
      write: duration.optional().describe('A connection with no traffic for this long is closed (default: none).'),
      idle: duration.optional().describe('Keep-alive connections are closed after this long idle (default 75s).'),
    })
    .optional(),
}).superRefine((h, ctx) => {
  if (h.net === 'tcp' && !parseListenAddr(h.addr)) {
    ctx.addIssue({ code: 'custom', path: ['addr'], message: `must be host:port or :port (e.g. :5000, 127.0.0.1:5000), got ${JSON.stringify(h.addr)}` });
  }
});

const htpasswd = z.strictObject({
  realm: str.default('Registry Realm').describe('Realm of the Basic challenge.'),
  path: str.describe('The htpasswd file (bcrypt entries, htpasswd -B); read at start, re-read when it changes.'),
});

/**
 * Token auth: distribution's keys (an external token server's realm, service,
 * issuer and certificates) plus ours for the built-in token server that
 * auth.access turns on.
 */
const token = z.strictObject({
  realm: str.optional().describe('Where clients get tokens (an absolute URL); default: this server\'s /auth/token.'),
  service: str.optional().describe('The service tokens are for (their audience; clients send it back as ?service=). Default: registry-stack.'),
  issuer: str.optional().describe('The issuer tokens must name. Default: registry-stack.'),
  rootcertbundle: str.optional().describe('PEM certificates of an external token server: of its signing keys (tokens name them by kid: libtrust key ID or JWK thumbprint), or roots that the certificate chains in its tokens (x5c) lead to.'),
  jwks: str.optional().describe('Ours: an external token server\'s public keys (by kid) as a JWK set: a file, or an http(s) URL such as another registry\'s /auth/jwks.json (fetched at start, again for a kid it lacks and when 5 minutes old).'),
  autoredirect: bool.optional().describe('Accepted; not used.'),
  keydir: str.optional().describe('Ours: the built-in token server\'s signing keys (PEM, made on first start with mode 0600, or put there). Default: <rootdirectory>/auth/token-keys; replicas share one.'),
  signingalgorithm: z.enum(['ES256', 'RS256']).default('ES256').describe('Ours: the algorithm of keys the built-in token server makes.'),
  keyrotation: duration.default(720 * 3_600_000).describe('Ours: a new signing key is made when the newest is this old (0: never); older keys keep verifying what they signed.'),
  expiration: duration.default(300_000).describe('Ours: how long an access token of the built-in token server lives.'),
  refreshexpiration: duration.default(720 * 3_600_000).describe('Ours: how long a refresh token (docker login\'s) lives; a new password or a removed user ends it sooner.'),
});

const auth = z
  .strictObject({
    htpasswd: htpasswd.optional().describe('Users from an htpasswd file: they may push, pull and delete (with auth.access: what the policy lets them). Without an auth section everyone may pull and nobody may push.'),
    access: str.optional().describe('Ours: the access policy file (who may pull, push, delete which repositories); turns on token auth with the built-in token server at /auth/token. Re-read when it changes.'),
    token: token.optional().describe('Token auth (Docker token protocol): without auth.access, tokens of an external token server (realm, service, issuer, rootcertbundle or jwks required).'),
    silly: z.record(z.string(), z.unknown()).optional().describe('Refused: not supported.'),
    anonymouspull: bool.default(false).describe('Ours: anonymous clients may pull while pushes need a login (with auth.access: refused; the policy says what anonymous clients may do).'),
  })
  .superRefine((a, ctx) => {
    if (a.silly) ctx.addIssue({ code: 'custom', path: ['silly'], message: 'silly auth is not supported; use auth.htpasswd' });
    if (a.access && a.anonymouspull) {
      ctx.addIssue({ code: 'custom', path: ['anonymouspull'], message: 'with auth.access, the policy file says what anonymous clients may do (anonymous: [pull])' });
    }
    if (a.token && !a.access) {
      for (const key of ['realm', 'service', 'issuer'] as const) {
        if (!a.token[key]) ctx.addIssue({ code: 'custom', path: ['token', key], message: 'required for an external token server (or set auth.access for the built-in one)' });
      }
      if (!a.token.rootcertbundle && !a.token.jwks) {
        ctx.addIssue({ code: 'custom', path: ['token', 'rootcertbundle'], message: 'an external token server\'s certificates (or auth.token.jwks) are required' });
      }
    }
  });

const health = z.strictObject({
  storagedriver: z
    .strictObject({ enabled: bool.default(false), interval: duration.optional(), threshold: int.optional() })
    .optional()
    .describe('Accepted; not used: /readyz always checks the storage.'),
  file: z.array(z.unknown()).optional().describe('Accepted; not used.'),
  http: z.array(z.unknown()).optional().describe('Accepted; not used.'),
  tcp: z.array(z.unknown()).optional().describe('Accepted; not used.'),
});

/** One upstream registry of the mirror (ours; distribution's remoteurl gives just one). */
const upstream = z.strictObject({
  host: z
    .string()
    .regex(/^[a-z0-9.-]+(:\d+)?$/, 'must be a registry host such as ghcr.io or registry.example.com:5000')
    .describe("The registry host clients name: containerd's ?ns= value, or the first component of a repository name (mir.example.com/ghcr.io/org/app)."),
  url: registryUrl.describe('Where to reach it: http(s), no path, e.g. https://registry-1.docker.io for docker.io.'),
  username: str.optional().describe('Login at this upstream (or REGISTRY_PROXY_<HOST>_USERNAME, e.g. REGISTRY_PROXY_GHCR_IO_USERNAME).'),
  password: str.optional().describe('Password or token (or REGISTRY_PROXY_<HOST>_PASSWORD).'),
});

/** An IP address or CIDR block (10.0.5.20, 192.168.1.0/24, fd00::/8). */
const ipOrCidr = z.string().refine(
  (v) => {
    const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(v);
    const family = m ? isIP(m[1]) : 0;
    return family !== 0 && (m![2] === undefined || Number(m![2]) <= (family === 4 ? 32 : 128));
  },
  { error: (issue) => `must be an IP address or CIDR such as 10.0.5.20 or 192.168.1.0/24, got ${JSON.stringify(issue.input)}` },
);

const proxy = z.strictObject({
  // distribution's keys: one upstream
  remoteurl: str
    .pipe(registryUrl)
    .optional()
    .describe('The one upstream (distribution\'s key): http(s), no path. Named docker.io when it is Docker Hub, else by its host:port. Without remoteurl and upstreams: Docker Hub.'),
  username: str.optional().describe('Login at remoteurl (or REGISTRY_PROXY_USERNAME).'),
  password: str.optional().describe('Password or access token at remoteurl (or REGISTRY_PROXY_PASSWORD).'),
  ttl: duration.optional().describe('Cached content unused for this long is evicted by prune (the default of cache.maxage).'),
  // ours
  upstreams: z.array(upstream).optional().describe('Ours: more upstreams in the same mirror, each under the host clients name it by.'),
  defaulthost: str.optional().describe('Ours: the upstream (by host) that serves names with no registry host (default: docker.io if listed, else the first upstream).'),
  tagfreshness: duration.default(0).describe('Ours: how long a cached tag is trusted without asking the upstream (0: revalidate every pull by tag).'),
  tagmaxage: duration.default(60_000).describe('Ours: Cache-Control max-age of manifests fetched by tag, for a CDN in front.'),
  internaltargets: z
    .array(str.pipe(ipOrCidr))
    .optional()
    .describe('Ours: internal addresses or CIDRs (loopback, link-local, private) that upstream redirects and token realms may lead to, e.g. an S3 endpoint on the LAN; other internal targets are refused (the upstream\'s own host always may).'),
  filltimeout: duration
    .default(120_000)
    .describe('Ours: a blob fill gets at most filltimeout plus its size at fillminrate to arrive; a slower upstream body (a trickle) is given up.'),
  fillminrate: size
    .pipe(z.number().int().min(1, 'must be at least 1 byte (per second)'))
    .default(128 * 1024)
    .describe('Ours: the slowest average upstream rate, per second, a blob fill is given time for beyond filltimeout (e.g. 128KiB).'),
});

/**
 * distribution's `redis` section (2.8 keys): what replicas behind one load
 * balancer share (GC pins and lock, the mirror's single-flight, upload hash
 * state, rate-limit counters, the blob descriptor cache). ioredis multiplexes
 * one connection, so `pool` is accepted for compatibility and not used.
 */
const redis = z.strictObject({
  addr: str
    .pipe(z.string().regex(/^(?:\[[^\]]+\]|[^\s:/]+):\d{1,5}$/, 'must be host:port, e.g. redis:6379'))
    .describe('host:port of the Redis server (required); the server refuses to start if it cannot reach it.'),
  username: str.optional().describe('Redis 6 ACL user (distribution 3\'s key); the password alone authenticates as "default".'),
  password: str.optional().describe('Password (or REGISTRY_REDIS_PASSWORD); never logged.'),
  db: int.pipe(z.number().int().min(0)).default(0).describe('Database number; give each deployment (private, mirror) its own, or its own prefix.'),
  dialtimeout: duration.optional().describe('Connect timeout (default 10s).'),
  readtimeout: duration.optional().describe('Per-command timeout: the larger of readtimeout and writetimeout (default none).'),
  writetimeout: duration.optional().describe('See readtimeout.'),
  tls: z
    .strictObject({
      enabled: bool.default(false).describe('Connect over TLS.'),
      insecureskipverify: bool.default(false).describe("Do not verify the server's certificate."),
    })
    .optional(),
  pool: z
    .strictObject({ maxidle: int.optional(), maxactive: int.optional(), idletimeout: duration.optional() })
    .optional()
    .describe('Accepted for compatibility; not used (one multiplexed connection).'),
  prefix: str.pipe(z.string().regex(/^[A-Za-z0-9:._-]{0,64}$/, 'letters, digits and :._- only')).default('registry:')
    .describe('Ours: prefix of every key, so that deployments can share one database.'),
});

/** Ours: the admin listener (metrics, health, GC and prune endpoints), loopback by default. */
const admin = z.strictObject({
  addr: listenAddr.default('127.0.0.1:5001').describe('Where the admin listener listens; keep it on loopback or a private network.'),
  token: str.optional().describe('Bearer token POST /admin/gc and /admin/prune require (or REGISTRY_ADMIN_TOKEN); without one, whoever reaches the listener may call them.'),
});

const bucket = z.strictObject({
  rate: num.pipe(z.number().positive()).describe('Sustained requests per second.'),
  burst: int.pipe(z.number().int().positive()).describe('Requests allowed in a burst above the rate.'),
});

/** Ours: built-in rate limits. */
const ratelimit = z.strictObject({
  enabled: bool.default(true).describe('false turns every limit below off, the default failed-login limit included.'),
  perip: bucket.optional().describe('Every client address (checked before authentication); off unless set.'),
  peruser: bucket.optional().describe('Every authenticated user, from any address; off unless set.'),
  failedlogins: z
    .strictObject({
      enabled: bool.default(true).describe('false turns the failed-login limit off.'),
      limit: int.pipe(z.number().int().positive()).default(20).describe('Failed logins allowed per client address and window; then every request from it gets 429 until the window ends.'),
      window: duration.default(900_000).describe('The window, e.g. 15m.'),
    })
    .prefault({})
    .describe('Brute-force protection, per client address: on by default whenever the server checks passwords (auth.htpasswd or auth.access). Behind a reverse proxy, list it in trustedproxies, or one guesser locks out every client.'),
  trustedproxies: z
    .array(z.string())
    .default([])
    .describe('Proxies (addresses, CIDRs, or loopback/linklocal/uniquelocal) whose X-Forwarded-For is believed, read right to left.'),
});

/** Ours: online garbage collection. */
const gc = z.strictObject({
  interval: duration.default(0).describe('Run GC this often inside the server (0: only on request).'),
  graceperiod: duration.default(3_600_000).describe('Blobs younger than this, or HEADed or mounted within it, are never collected (pushes in flight rely on them).'),
  deleteuntagged: bool.default(false).describe('Also delete manifests that no tag reaches (with their referrers).'),
});

/** Ours: the mirror's cache pruning policy. */
const cache = z.strictObject({
  maxage: duration.optional().describe('Evict what was not used for this long (default: proxy.ttl, else 168h).'),
  maxsize: size.optional().describe('Then keep the cached blobs under this size, least recently used first.'),
  interval: duration.default(0).describe('Prune this often inside the server (0: only on request or from cron).'),
});

/** Ours: the web UI at /ui/ on the API listener. */
const ui = z.strictObject({
  enabled: bool.default(true).describe('false: no /ui/ pages (they answer 404 like any unknown path).'),
});

export const configSchema = z.strictObject({
  version: z.union([z.string(), z.number()]).transform(String).default('0.1').describe('Config format version; accepted and not checked.'),
  log: log.default({ level: 'info', accesslog: { disabled: false } }).describe('Logging: JSON lines on stdout.'),
  loglevel: logLevel.optional().describe("distribution's old top-level form of log.level; wins over it."),
  storage: storage.describe('Where everything is stored: one driver (filesystem or s3) and how it is kept.'),
  http: http.default({ addr: ':5000', net: 'tcp' }).describe('The API listener.'),
  auth: auth.optional().describe('Who may do what.'),
  health: health.optional().describe('Accepted for compatibility; not used: /healthz and /readyz are built in.'),
  proxy: proxy.optional().describe('With this section the server is a read-only pull-through mirror (pushes and deletes get 405).'),
  notifications: z.record(z.string(), z.unknown()).optional().describe('Accepted; not used (no webhooks).'),
  redis: redis.optional().describe('Shared state of replicas behind one load balancer (GC pins and lock, mirror single-flight, upload hash state, rate-limit counters, blob sizes).'),
  validation: z.record(z.string(), z.unknown()).optional().describe('Accepted; not used.'),
  compatibility: z.record(z.string(), z.unknown()).optional().describe('Accepted; not used.'),
  reporting: z.record(z.string(), z.unknown()).optional().describe('Accepted; not used.'),
  middleware: z.record(z.string(), z.unknown()).optional().describe('Accepted; not used (s3 redirects are built in, see storage.redirect).'),
  admin: admin.optional().describe('Ours: the admin listener (metrics, health, GC and prune endpoints); off without this section.'),
  ratelimit: ratelimit.prefault({}).describe('Ours: built-in rate limits; a request over one gets 429 TOOMANYREQUESTS with Retry-After. Only the failed-login limit is on by default.'),
  gc: gc.optional().describe('Ours: online garbage collection.'),
  cache: cache.optional().describe("Ours: the mirror's cache pruning policy."),
  ui: ui.prefault({}).describe('Ours: the web UI at /ui/ on the API listener (the same users as the API; see docs/ui.md).'),
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
