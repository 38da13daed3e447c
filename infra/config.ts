// The stack configuration: every `registry-stack:*` key of Pulumi.<stack>.yaml,
// with defaults and validation. A minimal stack needs only `domain`, `vps.host`
// and one entry in `users`; everything else has a default.
//
// The same schema serves `pulumi up` (values read from the Pulumi config) and
// `npm run render` (values read from a YAML file), so what the render command
// writes is exactly what the program deploys.
import { z } from 'zod';
import { compilePattern } from '../server/src/auth/access-policy.ts';
import { parseRobotScope, ROBOT_PREFIX } from '../server/src/auth/robots.ts';
import { size } from '../server/src/config/schema.ts';
import { parseDuration } from '../server/src/config/units.ts';

/** The Pulumi project name, which namespaces every config key (`registry-stack:domain`). */
export const PROJECT = 'registry-stack';

/** Top-level config keys whose values are secrets (set with `pulumi config set --secret`). */
export const SECRET_KEYS = ['users', 'sshPrivateKey', 'upstreamCredentials', 'alertWebhook', 'originSecret', 'adminToken', 'r2Credentials'] as const;

/** Storage backends: named volumes on the VPS, or the R2 bucket (cloudflare.r2) through its S3 API. */
export const STORAGE_BACKENDS = ['filesystem', 'r2'] as const;
export type StorageBackend = (typeof STORAGE_BACKENDS)[number];

/** Caddy's load-balancing policies that suit registries (no sticky cookies: registry clients do not keep them). */
export const LB_POLICIES = ['least_conn', 'round_robin', 'random', 'ip_hash', 'first'] as const;

const MiB = 1024 ** 2;

const hostname = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$/, 'must be a DNS name such as example.com');

const label = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a single DNS label such as dcr');

const ipv4 = z.string().regex(/^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$/, 'must be an IPv4 address');
const ipv6 = z.string().regex(/^[0-9a-fA-F:]+$/, 'must be an IPv6 address').refine((v) => v.includes(':'), 'must be an IPv6 address');

/** A Go-style duration ("168h", "30s", "0"); kept as the string the registry config takes. */
const duration = z
  .union([z.string(), z.number()])
  .transform((v) => String(v).trim())
  .refine((v) => parseDuration(v) !== undefined, { message: 'must be a duration such as 30s, 10m, 168h or 0' });

const CRON_MACROS = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly']);
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const CRON_FIELDS: Array<{ min: number; max: number; names?: string[]; nameBase?: number }> = [
  { min: 0, max: 59 },
  { min: 0, max: 23 },
  { min: 1, max: 31 },
  { min: 1, max: 12, names: MONTHS, nameBase: 1 },
  { min: 0, max: 7, names: DAYS, nameBase: 0 },
];

/** Checks one field of a five-field cron schedule: lists of *, n, n-m, each with an optional /step. */
function cronFieldOk(text: string, f: (typeof CRON_FIELDS)[number]): boolean {
  const value = (v: string): number | undefined => {
    if (/^\d+$/.test(v)) return Number(v);
    const i = f.names?.indexOf(v.toLowerCase()) ?? -1;
    return i >= 0 ? i + (f.nameBase ?? 0) : undefined;
  };
  return text.split(',').every((item) => {
    const m = /^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:\/(\d+))?$/i.exec(item);
    if (!m) return false;
    if (m[2] !== undefined && Number(m[2]) < 1) return false;
    if (m[1] === '*') return true;
    const [a, b] = m[1].split('-').map(value);
    if (a === undefined || a < f.min || a > f.max) return false;
    if (m[1].includes('-') && (b === undefined || b < a || b > f.max)) return false;
    return true;
  });
}

export function isCronSchedule(v: string): boolean {
  if (CRON_MACROS.has(v)) return true;
  const fields = v.split(/\s+/);
  return fields.length === 5 && fields.every((text, i) => cronFieldOk(text, CRON_FIELDS[i]));
}

/** A five-field cron schedule, a macro such as @daily, or "off" to disable the job. */
export const cronSchedule = z
  .string()
  .trim()
  .refine((v) => v === 'off' || isCronSchedule(v), {
    message: 'must be a cron schedule with five fields (e.g. "*/5 * * * *"), a macro such as @daily, or "off"',
  });

const userName = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/, 'user names are letters, digits, ".", "_" or "-"');

/** A mirror upstream: the host clients name (docker.io, ghcr.io) and where to reach it. */
const upstream = z.strictObject({
  host: z
    .string()
    .trim()
    .toLowerCase()
    .regex(/^[a-z0-9.-]+(:\d+)?$/, 'must be a registry host such as ghcr.io or registry.example.com:5000'),
  url: z
    .string()
    .trim()
    .regex(/^https?:\/\/[^/]+\/?$/, 'must be an http(s) URL with no path, e.g. https://ghcr.io')
    .transform((u) => u.replace(/\/+$/, '')),
});

export const DOCKER_HUB_UPSTREAM = { host: 'docker.io', url: 'https://registry-1.docker.io' };

const anyObject = z.record(z.string(), z.unknown());

/** The images a stack runs unless docker.* says otherwise: current releases, by tag. */
export const DEFAULT_IMAGES = { caddy: 'caddy:2.10.2-alpine', node: 'node:24.22.3-bookworm-slim' } as const;

const imageName = z
  .string()
  .trim()
  .regex(/^[a-z0-9][A-Za-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$/, 'must be an image reference such as caddy:2.10.2-alpine');
const imageDigest = z
  .string()
  .trim()
  .regex(/^sha256:[0-9a-f]{64}$/, 'must be an image digest: sha256: and 64 lowercase hex digits (docker buildx imagetools inspect <image>)');

// `pulumi config set` stores what it is given; accept "true"/"22" where a boolean or number is due.
const bool = () => z.preprocess((v) => (v === 'true' ? true : v === 'false' ? false : v), z.boolean());
const int = (min: number, max: number) =>
  z.preprocess((v) => (typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v), z.number().int().min(min).max(max));

// --- Who may do what on dcr: the access policy and robot accounts ---

const action = z.enum(['pull', 'push', 'delete', '*'], { error: 'actions are pull, push, delete or *' });
const actions = z.array(action);
/** A user of `users`, or robot$NAME of `robots` (checked against them below). */
const accountName = z.string().trim().min(1, 'must be a user name or robot$NAME');
const groupName = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/, 'group names are letters, digits, ".", "_" or "-"');
const robotName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'robot names are lowercase letters, digits, ".", "_" or "-" (at most 64)');

/** One rule of the policy: the first rule whose pattern matches a repository name decides. */
const accessRule = z.strictObject({
  /** `team/**` (everything under team/), `*\/cache` (one component, then cache), `**` (every name). */
  pattern: z
    .string()
    .trim()
    .refine((p) => compilePattern(p) !== undefined, 'must be a repository pattern: lowercase name characters, "/", "*" and "**" (e.g. team/** or */cache)'),
  /** Clients without credentials. */
  anonymous: actions.default([]),
  /** Every logged-in client (users and robots). */
  default: actions.default([]),
  users: z.record(accountName, actions).default({}),
  groups: z.record(groupName, actions).default({}),
});

/**
 * dcr's access policy (the server's auth.access file, rendered from this):
 * who may pull, push and delete which repositories. The file's own shape, but
 * `repositories` is a list of rules with a `pattern` each, since Pulumi does
 * not keep the order of a map's keys and the first matching pattern decides.
 */
const accessPolicy = z.strictObject({
  /** Group → members (user names, robot$NAME). */
  groups: z.record(groupName, z.array(accountName)).default({}),
  /** May do everything everywhere: user names, robot$NAME, or @group. */
  admins: z.array(accountName).default([]),
  repositories: z.array(accessRule, {
    error: (issue) =>
      issue.code === 'invalid_type' && issue.input !== null && typeof issue.input === 'object'
        ? 'must be a list of rules (- pattern: team/**), not a map: Pulumi does not keep the order of a map\'s keys, and the first pattern that matches decides'
        : undefined,
  }),
});

/**
 * A robot account for CI (robot$NAME): made by `pulumi up` with the server's
 * own `registry robot create`, inside the first dcr container; its secret is
 * the stack output robotSecrets.NAME (a Pulumi secret).
 */
const robot = z.strictObject({
  /** What it may do at most, e.g. repository:team/**:pull,push (the policy must allow it too). */
  scopes: z
    .array(
      z.string().refine((s) => {
        try {
          parseRobotScope(s);
          return true;
        } catch {
          return false;
        }
      }, 'must be repository:<pattern>:<actions>, e.g. repository:team/**:pull,push'),
    )
    .min(1, 'a robot needs at least one scope'),
  /** Expires this long after it was made (e.g. 90d); default: never. */
  ttl: z
    .union([z.string(), z.number()])
    .transform((v) => String(v).trim())
    .refine((v) => (parseDuration(v) ?? 0) > 0, 'must be a duration such as 90d or 720h')
    .optional(),
  description: z.string().trim().min(1).max(200).optional(),
  /** Raise it (2, 3, …) and run `pulumi up` to give the robot a new secret (and a new ttl). */
  generation: int(1, 1_000_000).default(1),
});

export const stackConfigSchema = z
  .strictObject({
    /** The domain the two hosts live under: dcr.<domain> and mir.<domain>. */
    domain: hostname,
    /** The Cloudflare zone: its id (32 hex digits) or its name (default: the domain). */
    zone: z.string().trim().min(1).optional(),
    /** The first label of each host name. */
    hostnames: z
      .strictObject({ private: label.default('dcr'), mirror: label.default('mir') })
      .default({ private: 'dcr', mirror: 'mir' }),
    /** The VPS: a fresh machine with Docker and SSH. */
    vps: z.strictObject({
      /** Address to SSH to (name or IP). */
      host: z.string().trim().min(1),
      user: z.string().trim().min(1).default('root'),
      port: int(1, 65535).default(22),
      /** The public IPv4 address the DNS records point at (default: vps.host when it is an IPv4 address). */
      publicIp: ipv4.optional(),
      /** Also publish AAAA records to this address. */
      publicIpv6: ipv6.optional(),
      /** The server's SSH host key (a line of `ssh-keyscan -t ed25519 HOST`), pinned; without it, ~/.ssh/known_hosts must know the host. */
      hostKey: z.string().optional(),
      /** SSH port to leave open in the firewall (default: vps.port). */
      firewallSshPort: int(1, 65535).optional(),
    }),
    /** Secret. PEM/OpenSSH private key for the SSH user (default: the local ssh-agent). */
    sshPrivateKey: z.string().min(1).optional(),
    /** Secret. Registry users: user name → password. Hashed with bcrypt at deploy; never stored in clear on the host. */
    users: z
      .record(userName, z.string().min(8, 'passwords need at least 8 characters'))
      .refine((u) => Object.keys(u).length > 0, { message: 'at least one user is required' }),
    /** E-mail for Let's Encrypt registration (optional). */
    acmeEmail: z.string().email().optional(),
    /**
     * dcr's access policy: groups, admins and repository rules (see accessPolicy above).
     * Turns on token auth with dcr's built-in token server; without it every user may do everything.
     */
    access: accessPolicy.optional(),
    /** Robot accounts for CI on dcr (name → scopes, ttl, description, generation); they need `access`. */
    robots: z.record(robotName, robot).default({}),
    /**
     * Brute-force protection of the logins (dcr, and mir with requireAuth): a client address with
     * `limit` failed logins within `window` gets 429 for every request, right password or not, until
     * the window has passed. dcr is DNS-only, so nothing in front of it limits guessing, and every
     * guess costs a bcrypt check. A NAT that hides many clients shares one budget: raise the limit
     * rather than turn this off.
     */
    failedLogins: z
      .strictObject({
        enabled: bool().default(true),
        limit: int(1, 100_000).default(20),
        window: duration.default('15m'),
      })
      .default({ enabled: true, limit: 20, window: '15m' }),

    private: z
      .strictObject({
        /** Let anonymous clients pull from dcr (pushes always need a login). */
        anonymousPull: bool().default(false),
        /** Accept manifest/blob DELETEs (needed for cleanup and GC). */
        deleteEnabled: bool().default(true),
        /** Online GC inside the server ("0" = only from the cron job / on demand). */
        gcInterval: duration.default('0'),
        gcGracePeriod: duration.default('1h'),
        gcDeleteUntagged: bool().default(false),
        /** Abandoned uploads older than this are purged. */
        uploadPurgeAge: duration.default('168h'),
        memory: size.default(1024 ** 3),
        logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
        /** Extra registry config merged over the rendered one (e.g. ratelimit buckets); validated by the server's own loader. */
        extraConfig: anyObject.default({}),
      })
      .default({
        anonymousPull: false,
        deleteEnabled: true,
        gcInterval: '0',
        gcGracePeriod: '1h',
        gcDeleteUntagged: false,
        uploadPurgeAge: '168h',
        memory: 1024 ** 3,
        logLevel: 'info',
        extraConfig: {},
      }),

    mirror: z
      .strictObject({
        /** Upstream registries the mirror caches (default: Docker Hub only). */
        upstreams: z.array(upstream).min(1, 'the mirror needs at least one upstream').default([DOCKER_HUB_UPSTREAM]),
        /** Which upstream serves names with no registry host (default: docker.io, or the first upstream). */
        defaultHost: z.string().trim().toLowerCase().optional(),
        /** Cached content unused this long is evicted (distribution's proxy.ttl). */
        ttl: duration.default('168h'),
        /** How long a cached tag is served without asking the upstream ("0": revalidate every pull by tag). */
        tagFreshness: duration.default('0'),
        /**
         * Cache-Control max-age of manifests fetched by tag, for clients and their caches.
         * Cloudflare never caches them: the answer depends on the Accept header and its cache key is the URL.
         */
        tagMaxAge: duration.default('60s'),
        /** Keep the cache under this size, least recently used first. */
        maxSize: size.optional(),
        /** Prune inside the server this often ("0": only from the cron job). */
        pruneInterval: duration.default('0'),
        /** Require the same logins as dcr for pulls from mir (off: a public mirror; Cloudflare then caches it). */
        requireAuth: bool().default(false),
        memory: size.default(1024 ** 3),
        logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
        extraConfig: anyObject.default({}),
      })
      .default({
        upstreams: [DOCKER_HUB_UPSTREAM],
        ttl: '168h',
        tagFreshness: '0',
        tagMaxAge: '60s',
        pruneInterval: '0',
        requireAuth: false,
        memory: 1024 ** 3,
        logLevel: 'info',
        extraConfig: {},
      }),
    /** Secret. Upstream registry logins: host → {username, password} (Docker Hub: raises the pull limit). */
    upstreamCredentials: z.record(z.string(), z.strictObject({ username: z.string().min(1), password: z.string().min(1) })).default({}),

    cloudflare: z
      .strictObject({
        /** Edge TTL in seconds of blobs and manifests by digest (immutable content). */
        immutableTtl: int(60, Number.MAX_SAFE_INTEGER).default(31_536_000),
        /** TTL in seconds of dcr's DNS record (DNS only). */
        dnsTtl: int(60, 86_400).default(300),
        /** Name of the origin-check header the transform rule adds and Caddy requires on mir. */
        originHeader: z
          .string()
          .regex(/^[A-Za-z0-9-]+$/, 'must be an HTTP header name')
          .refine((h) => !/^cf-/i.test(h), 'Cloudflare reserves cf-* headers')
          .default('X-Origin-Secret'),
        /** Create the WAF custom ruleset (method/path allow-list on mir). */
        waf: bool().default(true),
        /** Create the cache-settings ruleset. */
        cacheRules: bool().default(true),
        /** Set SSL mode Full (strict) for mir only, with a configuration rule. */
        strictTls: bool().default(true),
        /**
         * mir serves a Cloudflare Origin CA certificate the program requests (15 years). Raise this
         * number (2, 3, …) and run `pulumi up` to get a new key and certificate; the old certificate
         * is revoked once Caddy has the new one. The renew-cert job says when it is due.
         */
        originCertGeneration: int(1, 1_000_000).default(1),
        /** Optional R2 bucket (created by the program, protected); `storage.backend: r2` stores the registries' data in it. */
        r2: z
          .strictObject({
            /** The Cloudflare account that owns the bucket (32 hex digits, on the dashboard's R2 page). */
            accountId: z.string().min(1),
            bucket: z.string().regex(/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/, 'must be an R2 bucket name: 3-63 lowercase letters, digits and "-"'),
            /** Location hint for a new bucket. */
            location: z.enum(['apac', 'eeur', 'enam', 'weur', 'wnam', 'oc']).optional(),
            /** Data jurisdiction (default: none); eu and fedramp buckets have their own S3 endpoint. */
            jurisdiction: z.enum(['default', 'eu', 'fedramp']).optional(),
          })
          .optional(),
      })
      .default({
        immutableTtl: 31_536_000,
        dnsTtl: 300,
        originHeader: 'X-Origin-Secret',
        waf: true,
        cacheRules: true,
        strictTls: true,
        originCertGeneration: 1,
      }),

    /**
     * Where the registries keep blobs and manifests. filesystem (default): the
     * registry_data and registry_cache_data volumes on the VPS, as always.
     * r2: the cloudflare.r2 bucket through its S3 API (the server's storage.s3
     * driver), under the prefixes /private and /mirror; needed for replicas.
     */
    storage: z
      .strictObject({
        backend: z.enum(STORAGE_BACKENDS).default('filesystem'),
        /** The mirror's backend (default: storage.backend), e.g. r2 for dcr and a local cache for mir. */
        mirrorBackend: z.enum(STORAGE_BACKENDS).optional(),
        /** Path-style S3 addressing (<endpoint>/<bucket>/key); R2 serves both styles. */
        forcePathStyle: bool().default(true),
        /** Part size of the multipart uploads blobs are stored with (5 MiB to 5 GiB). */
        chunkSize: size
          .refine((b) => b >= 5 * MiB, { message: 'must be at least 5MiB (the smallest S3 multipart part)' })
          .refine((b) => b <= 5 * 1024 * MiB, { message: 'must be at most 5GiB' })
          .default(10 * MiB),
        /**
         * Private registry only: answer blob GETs with a redirect to a presigned R2 URL, so
         * clients download from R2 directly. The mirror always streams: Cloudflare caches its
         * answers for a year, and a cached redirect would outlive the presigned URL.
         */
        redirect: bool().default(true),
      })
      .default({ backend: 'filesystem', forcePathStyle: true, chunkSize: 10 * MiB, redirect: true }),
    /** Secret. The R2 bucket's S3 credentials (an R2 API token's Access Key ID and Secret Access Key); default: the program creates an account API token scoped to the bucket. */
    r2Credentials: z
      .strictObject({
        accessKeyId: z.string().trim().min(1),
        secretAccessKey: z.string().trim().min(1),
      })
      .optional(),
    /** How many containers of each registry run behind Caddy (more than one needs storage.backend r2, and brings Redis). */
    replicas: z
      .strictObject({
        private: int(1, 32).default(1),
        mirror: int(1, 32).default(1),
      })
      .default({ private: 1, mirror: 1 }),
    /** How Caddy spreads requests over the replicas and takes failing ones out (used when a host has more than one). */
    loadBalancer: z
      .strictObject({
        /** Caddy's lb_policy. */
        policy: z.enum(LB_POLICIES).default('least_conn'),
        /** Active health checks: GET /healthz on each replica this often, failing after healthTimeout. */
        healthInterval: duration.default('10s'),
        healthTimeout: duration.default('5s'),
        /** Passive health checks: a replica that failed a request is skipped for this long. */
        failDuration: duration.default('30s'),
        /** Retry a request that could not reach a replica on another one, for up to this long. */
        tryDuration: duration.default('10s'),
        tryInterval: duration.default('250ms'),
      })
      .default({ policy: 'least_conn', healthInterval: '10s', healthTimeout: '5s', failDuration: '30s', tryDuration: '10s', tryInterval: '250ms' }),
    /**
     * The Redis the registries share state through (GC lock, mirror single-flight,
     * upload hash state, rate limits, blob descriptor cache): a container on the
     * internal network, no published port, a password generated once and kept in
     * the Pulumi state. Runs when a registry has replicas or uses R2.
     */
    redis: z
      .strictObject({
        /** Force it on (e.g. shared rate limits with one replica) or off (only allowed with one replica of each registry). */
        enabled: bool().optional(),
        image: z.string().min(1).default('redis:7.4-alpine'),
        memory: size.default(256 * MiB),
        /** Keep Redis's data across restarts (append-only file on the redis_data volume); off: in memory only, the state is rebuilt. */
        persistence: bool().default(false),
      })
      .default({ image: 'redis:7.4-alpine', memory: 256 * MiB, persistence: false }),
    /** When the ops scripts run (cron schedules in the host's time zone; "off" disables one). */
    cron: z
      .strictObject({
        monitor: cronSchedule.default('*/5 * * * *'),
        gc: cronSchedule.default('30 3 * * 0'),
        prune: cronSchedule.default('0 4 * * *'),
        renewCert: cronSchedule.default('15 5 * * *'),
      })
      .default({ monitor: '*/5 * * * *', gc: '30 3 * * 0', prune: '0 4 * * *', renewCert: '15 5 * * *' }),
    /** Thresholds the monitor and renew-cert scripts apply. */
    alerts: z
      .strictObject({
        diskPercent: int(1, 100).default(85),
        certMinDays: int(1, 80).default(14),
      })
      .default({ diskPercent: 85, certMinDays: 14 }),
    /** Secret. A webhook URL the ops scripts post alerts to. */
    alertWebhook: z.string().url().optional(),
    /** Secret. The origin-check header value (default: random, generated once and kept in the Pulumi state). */
    originSecret: z.string().regex(/^[A-Za-z0-9._~-]{16,}$/, 'must be at least 16 URL-safe characters').optional(),
    /** Secret. Bearer token of the registries' admin endpoints (default: random, kept in the Pulumi state). */
    adminToken: z.string().min(16).optional(),

    docker: z
      .strictObject({
        caddyImage: imageName.default(DEFAULT_IMAGES.caddy),
        /** Pins caddyImage to exactly this image (sha256:…): a moved tag cannot change what runs. */
        caddyImageDigest: imageDigest.optional(),
        /** The base image of the server image (the NODE_IMAGE build argument of server/Dockerfile). */
        nodeImage: imageName.default(DEFAULT_IMAGES.node),
        nodeImageDigest: imageDigest.optional(),
        caddyMemory: size.default(256 * 1024 ** 2),
        /** The bridge network the containers share. */
        network: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/).default('proxy_net'),
        subnet: z
          .string()
          .regex(/^\d+\.\d+\.\d+\.\d+\/\d+$/, 'must be a CIDR such as 172.30.0.0/24')
          .default('172.30.0.0/24'),
        /** json-file log limits, for the daemon default and each container. */
        logMaxSize: z.string().regex(/^\d+[kmg]$/, 'must be a size such as 10m').default('10m'),
        logMaxFile: int(1, 100).default(3),
        /** Bcrypt cost of the htpasswd hashes. */
        bcryptCost: int(4, 14).default(10),
      })
      .default({
        caddyImage: DEFAULT_IMAGES.caddy,
        nodeImage: DEFAULT_IMAGES.node,
        caddyMemory: 256 * 1024 ** 2,
        network: 'proxy_net',
        subnet: '172.30.0.0/24',
        logMaxSize: '10m',
        logMaxFile: 3,
        bcryptCost: 10,
      }),
  })
  .superRefine((c, ctx) => {
    checkAccess(c, ctx);
    if (!c.vps.publicIp && !ipv4.safeParse(c.vps.host).success) {
      ctx.addIssue({ code: 'custom', path: ['vps', 'publicIp'], message: 'required when vps.host is not an IPv4 address' });
    }
    if (c.hostnames.private === c.hostnames.mirror) {
      ctx.addIssue({ code: 'custom', path: ['hostnames', 'mirror'], message: 'must differ from hostnames.private' });
    }
    const hosts = c.mirror.upstreams.map((u) => u.host);
    hosts.forEach((h, i) => {
      if (hosts.indexOf(h) !== i) ctx.addIssue({ code: 'custom', path: ['mirror', 'upstreams', i, 'host'], message: `${h} is listed twice` });
    });
    if (c.mirror.defaultHost && !hosts.includes(c.mirror.defaultHost)) {
      ctx.addIssue({ code: 'custom', path: ['mirror', 'defaultHost'], message: `${c.mirror.defaultHost} is not one of mirror.upstreams` });
    }
    for (const host of Object.keys(c.upstreamCredentials)) {
      if (!hosts.includes(host)) {
        ctx.addIssue({ code: 'custom', path: ['upstreamCredentials', host], message: `${host} is not one of mirror.upstreams` });
      }
    }
    const backends = { private: c.storage.backend, mirror: c.storage.mirrorBackend ?? c.storage.backend };
    for (const service of ['private', 'mirror'] as const) {
      const n = c.replicas[service];
      if (n > 1 && backends[service] === 'filesystem') {
        const backendKey = service === 'mirror' && c.storage.mirrorBackend ? 'storage.mirrorBackend' : 'storage.backend';
        ctx.addIssue({
          code: 'custom',
          path: ['replicas', service],
          message: `${n} replicas need shared storage, but ${backendKey} is filesystem (a volume on one host cannot be shared): set ${backendKey}: r2 (with cloudflare.r2), or replicas.${service}: 1`,
        });
      }
    }
    if ((backends.private === 'r2' || backends.mirror === 'r2') && !c.cloudflare.r2) {
      ctx.addIssue({
        code: 'custom',
        path: ['storage', c.storage.backend === 'r2' ? 'backend' : 'mirrorBackend'],
        message: 'r2 storage needs the bucket: set cloudflare.r2 (accountId, bucket)',
      });
    }
    if (c.r2Credentials && !c.cloudflare.r2) {
      ctx.addIssue({ code: 'custom', path: ['r2Credentials'], message: 'set cloudflare.r2 too (the bucket these credentials are for)' });
    }
    for (const [image, digest] of [
      ['caddyImage', 'caddyImageDigest'],
      ['nodeImage', 'nodeImageDigest'],
    ] as const) {
      if (c.docker[digest] && c.docker[image].includes('@')) {
        ctx.addIssue({ code: 'custom', path: ['docker', digest], message: `docker.${image} already pins a digest: give it once` });
      }
    }
    if (c.redis.enabled === false && (c.replicas.private > 1 || c.replicas.mirror > 1)) {
      ctx.addIssue({
        code: 'custom',
        path: ['redis', 'enabled'],
        message: 'replicas share their state (GC lock, uploads, mirror fetches) through Redis: it cannot be off with more than one replica',
      });
    }
  });

/** The access policy against the rest of the config: every name it uses is a user, robot or group of the stack. */
interface AccessCheckInput {
  access?: z.output<typeof accessPolicy>;
  robots: Record<string, unknown>;
  users: Record<string, string>;
  private: { anonymousPull: boolean };
}

function checkAccess(c: AccessCheckInput, ctx: z.RefinementCtx): void {
  const robots = Object.keys(c.robots);
  const a = c.access;
  if (!a) {
    if (robots.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['robots'], message: 'robots log in only where there is an access policy: set registry-stack:access too' });
    }
    return;
  }
  if (c.private.anonymousPull) {
    ctx.addIssue({
      code: 'custom',
      path: ['private', 'anonymousPull'],
      message: 'with registry-stack:access, the policy says what anonymous clients may pull (anonymous: [pull] on a rule): remove this key',
    });
  }
  const known = (name: string) =>
    name.startsWith(ROBOT_PREFIX) ? robots.includes(name.slice(ROBOT_PREFIX.length)) : Object.hasOwn(c.users, name);
  const unknown = (name: string) =>
    name.startsWith(ROBOT_PREFIX)
      ? `${name} is not one of registry-stack:robots`
      : `"${name}" is not one of registry-stack:users${/^robot[^$]/.test(name) ? ' (a robot is named robot$NAME)' : ''}`;
  for (const [group, members] of Object.entries(a.groups)) {
    members.forEach((m, i) => {
      if (!known(m)) ctx.addIssue({ code: 'custom', path: ['access', 'groups', group, i], message: unknown(m) });
    });
  }
  a.admins.forEach((m, i) => {
    if (m.startsWith('@')) {
      if (!Object.hasOwn(a.groups, m.slice(1))) ctx.addIssue({ code: 'custom', path: ['access', 'admins', i], message: `group "${m.slice(1)}" is not one of access.groups` });
    } else if (!known(m)) {
      ctx.addIssue({ code: 'custom', path: ['access', 'admins', i], message: unknown(m) });
    }
  });
  const seen = new Map<string, number>();
  a.repositories.forEach((rule, i) => {
    const first = seen.get(rule.pattern);
    if (first !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['access', 'repositories', i, 'pattern'],
        message: `"${rule.pattern}" is already access.repositories[${first}]'s pattern: the first match decides, so this rule would never apply`,
      });
    }
    seen.set(rule.pattern, first ?? i);
    for (const user of Object.keys(rule.users)) {
      if (!known(user)) ctx.addIssue({ code: 'custom', path: ['access', 'repositories', i, 'users', user], message: unknown(user) });
    }
    for (const group of Object.keys(rule.groups)) {
      if (!Object.hasOwn(a.groups, group)) {
        ctx.addIssue({ code: 'custom', path: ['access', 'repositories', i, 'groups', group], message: `group "${group}" is not one of access.groups` });
      }
    }
  });
}

export type StackConfigInput = z.input<typeof stackConfigSchema>;
export type StackConfig = z.output<typeof stackConfigSchema> & {
  /** Derived: the two host names and the address the records point at. */
  readonly derived: {
    dcrHost: string;
    mirHost: string;
    zone: string;
    publicIp: string;
    mirrorDefaultHost: string;
    /** Each registry's storage backend. */
    storage: { private: StorageBackend; mirror: StorageBackend };
    /** The R2 bucket's S3 endpoint, when cloudflare.r2 is set. */
    r2Endpoint?: string;
    /** Whether the Redis container runs. */
    redis: boolean;
  };
};

export class StackConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StackConfigError';
  }
}

/**
 * Validates raw config values (keys without the `registry-stack:` prefix) and
 * fills in defaults. Throws a StackConfigError naming every bad key as
 * `registry-stack:<key>.<path>`.
 */
export function parseStackConfig(raw: Record<string, unknown>, source = 'stack config'): StackConfig {
  const result = stackConfigSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((k) => `${keyName([...issue.path, k])}: unknown key`).join('\n  ');
      }
      const value = getPath(raw, issue.path);
      let message = issue.message;
      // A record's bad key: say what is wrong with it (the key's own schema), not "Invalid key in record".
      if (issue.code === 'invalid_key' && issue.issues[0]) message = issue.issues[0].message;
      if (issue.code === 'invalid_type' && value === undefined) message = `required key is missing (expected ${issue.expected})`;
      return `${keyName(issue.path)}: ${message}`;
    });
    throw new StackConfigError(`invalid ${source}:\n  ${lines.join('\n  ')}`);
  }
  const c = result.data;
  const hosts = c.mirror.upstreams.map((u) => u.host);
  const storage = { private: c.storage.backend, mirror: c.storage.mirrorBackend ?? c.storage.backend };
  return {
    ...c,
    derived: {
      dcrHost: `${c.hostnames.private}.${c.domain}`,
      mirHost: `${c.hostnames.mirror}.${c.domain}`,
      zone: c.zone ?? c.domain,
      publicIp: c.vps.publicIp ?? c.vps.host,
      mirrorDefaultHost: c.mirror.defaultHost ?? (hosts.includes('docker.io') ? 'docker.io' : hosts[0]),
      storage,
      ...(c.cloudflare.r2 ? { r2Endpoint: r2Endpoint(c.cloudflare.r2.accountId, c.cloudflare.r2.jurisdiction) } : {}),
      redis: c.redis.enabled ?? (c.replicas.private > 1 || c.replicas.mirror > 1 || storage.private === 'r2' || storage.mirror === 'r2'),
    },
  };
}

function keyName(path: PropertyKey[]): string {
  if (path.length === 0) return PROJECT;
  const [first, ...rest] = path.map(String);
  return `${PROJECT}:${first}${rest.map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p}`)).join('')}`;
}

function getPath(doc: unknown, path: PropertyKey[]): unknown {
  let node = doc;
  for (const key of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** The S3 endpoint of an account's R2 buckets (jurisdiction-specific for eu and fedramp buckets). */
export function r2Endpoint(accountId: string, jurisdiction?: 'default' | 'eu' | 'fedramp'): string {
  const j = jurisdiction && jurisdiction !== 'default' ? `${jurisdiction}.` : '';
  return `https://${accountId}.${j}r2.cloudflarestorage.com`;
}

/**
 * The images the stack runs, as Docker references: the configured name:tag,
 * with @sha256:… appended when docker.*Digest pins it. caddy is what the Caddy
 * container runs; node is the server image's base (its NODE_IMAGE build argument).
 */
export function imageRefs(cfg: Pick<StackConfig, 'docker'>): { caddy: string; node: string } {
  const ref = (image: string, digest: string | undefined) => (digest ? `${image}@${digest}` : image);
  return { caddy: ref(cfg.docker.caddyImage, cfg.docker.caddyImageDigest), node: ref(cfg.docker.nodeImage, cfg.docker.nodeImageDigest) };
}

/** Is this a Cloudflare zone id (rather than a zone name)? */
export function isZoneId(zone: string): boolean {
  return /^[0-9a-f]{32}$/.test(zone);
}

/**
 * Turns the `config:` map of a Pulumi.<stack>.yaml (or a plain map of keys
 * without the prefix) into raw values for parseStackConfig. Encrypted values
 * (`secure: v1:...`) cannot be read outside Pulumi: they are reported in
 * `encrypted` and left out.
 */
export function rawFromStackFile(doc: unknown): { raw: Record<string, unknown>; encrypted: string[] } {
  const top = (doc && typeof doc === 'object' && 'config' in doc ? (doc as { config: unknown }).config : doc) ?? {};
  if (typeof top !== 'object' || Array.isArray(top)) throw new StackConfigError('the stack file must be a mapping of config keys');
  const raw: Record<string, unknown> = {};
  const encrypted: string[] = [];
  const strip = (v: unknown, key: string): unknown => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (Object.keys(o).length === 1 && typeof o.secure === 'string') {
        encrypted.push(key);
        return undefined;
      }
      const out: Record<string, unknown> = {};
      for (const [k, val] of Object.entries(o)) {
        const s = strip(val, `${key}.${k}`);
        if (s !== undefined) out[k] = s;
      }
      return out;
    }
    if (Array.isArray(v)) return v.map((x, i) => strip(x, `${key}[${i}]`));
    return v;
  };
  for (const [k, v] of Object.entries(top as Record<string, unknown>)) {
    const colon = k.indexOf(':');
    const ns = colon >= 0 ? k.slice(0, colon) : PROJECT;
    if (ns !== PROJECT) continue; // provider settings such as cloudflare:apiToken
    const key = colon >= 0 ? k.slice(colon + 1) : k;
    const value = strip(v, key);
    if (value !== undefined) raw[key] = value;
  }
  return { raw, encrypted };
}

/** Every config key the schema knows, for reading them out of the Pulumi config. */
export const CONFIG_KEYS = Object.keys(stackConfigSchema.shape);
