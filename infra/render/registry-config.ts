// The two registry configs (distribution's config.yml shape plus our keys),
// rendered from the stack config. Secrets never go into these files: the
// admin token, upstream logins, R2 credentials and the Redis password reach
// the containers as REGISTRY_* environment variables, which the server's
// loader reads (REGISTRY_STORAGE_S3_SECRETKEY sets storage.s3.secretkey).
//
// Storage: the filesystem driver on the container's volume, or the s3 driver
// on the R2 bucket (one bucket, a prefix per registry). With Redis, both
// registries point their `redis` section at it (a database each) and keep
// their blob descriptor cache there, so replicas share what they must.
import * as path from 'node:path';
import { stringify } from 'yaml';
import { ConfigError, loadConfigText } from '../../server/src/config/load.ts';
import type { StackConfig } from '../config.ts';
import { StackConfigError } from '../config.ts';
import { BUCKET_PREFIXES, REDIS_DBS } from './layout.ts';

/** Where one instance runs: container paths on the VPS, temp paths in the local twin. */
export interface RegistryTarget {
  /** http.addr, e.g. ":5000" or "127.0.0.1:41234". */
  addr: string;
  rootdirectory: string;
  htpasswdPath: string;
  /** The admin listener (metrics, health, gc, prune). */
  adminAddr: string;
  /** The public URL clients use (http.host). */
  publicUrl: string;
  /** Proxies whose X-Forwarded-For the server believes (Caddy's network). */
  trustedProxies: string[];
  logFormatter: 'json' | 'text';
  /** host:port of the shared Redis (when the stack runs one). */
  redisAddr?: string;
}

/** The R2 region: R2 takes "auto" (S3 clients need some region to sign with). */
export const R2_REGION = 'auto';

type Service = 'private' | 'mirror';

/** storage.<driver> of one registry: the filesystem driver on its volume, or s3 on the R2 bucket under its prefix. */
function storageDriver(cfg: StackConfig, t: RegistryTarget, service: Service): Record<string, unknown> {
  if (cfg.derived.storage[service] === 'filesystem') return { filesystem: { rootdirectory: t.rootdirectory } };
  const r2 = cfg.cloudflare.r2;
  if (!r2 || !cfg.derived.r2Endpoint) throw new StackConfigError('registry-stack:storage.backend: r2 storage needs cloudflare.r2 (accountId, bucket)');
  return {
    s3: {
      bucket: r2.bucket,
      region: R2_REGION,
      regionendpoint: cfg.derived.r2Endpoint,
      forcepathstyle: cfg.storage.forcePathStyle,
      chunksize: cfg.storage.chunkSize,
      rootdirectory: BUCKET_PREFIXES[service],
    },
  };
}

/** Keys of `storage` that only the s3 driver gets: redirects (private only) and, with Redis, the shared blob descriptor cache. */
function storageExtras(cfg: StackConfig, service: Service): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (cfg.derived.storage[service] === 'r2') {
    // The mirror never redirects: Cloudflare caches its blob answers for a year, longer than a presigned URL lives.
    out.redirect = { disable: service === 'mirror' ? true : !cfg.storage.redirect };
  }
  if (cfg.derived.redis) out.cache = { blobdescriptor: 'redis' };
  return out;
}

/** The `redis` section (distribution's keys); its password arrives as REGISTRY_REDIS_PASSWORD. */
function redisSection(cfg: StackConfig, t: RegistryTarget, service: Service): Record<string, unknown> {
  if (!cfg.derived.redis) return {};
  if (!t.redisAddr) throw new Error('registry config: the stack runs Redis but the target has no redisAddr');
  return { redis: { addr: t.redisAddr, db: REDIS_DBS[service] } };
}

/**
 * The `ratelimit` section: failed-login limiting for a registry that checks
 * logins (from the stack's failedLogins), and the proxies whose
 * X-Forwarded-For names the client. Behind Caddy every connection comes from
 * Caddy's network: without trustedproxies all clients would share Caddy's
 * address, and one guesser would lock everyone out.
 */
export function ratelimitSection(cfg: StackConfig, t: RegistryTarget, checksLogins: boolean): Record<string, unknown> {
  const f = cfg.failedLogins;
  const on = f.enabled && checksLogins;
  return {
    enabled: on,
    ...(on ? { failedlogins: { limit: f.limit, window: f.window } } : {}),
    trustedproxies: t.trustedProxies,
  };
}

/** The access policy's file name: next to the htpasswd, in the directory mounted into the container. */
export const ACCESS_POLICY_FILE = 'access.yaml';

/**
 * dcr's `auth` section: the htpasswd, and with an access policy (stack key
 * `access`) the policy file, which turns on token auth with the built-in token
 * server. Its signing keys are made on first start in <rootdirectory>/auth/
 * token-keys: on the data volume with filesystem storage; with R2 in a volume
 * of their own mounted at the same place (see render/containers.ts), which
 * the server needs named since it is not the storage.
 */
export function privateAuthSection(cfg: StackConfig, t: RegistryTarget): Record<string, unknown> {
  const htpasswd = { realm: cfg.derived.dcrHost, path: t.htpasswdPath };
  if (!cfg.access) return { htpasswd, anonymouspull: cfg.private.anonymousPull };
  return {
    htpasswd,
    access: path.join(path.dirname(t.htpasswdPath), ACCESS_POLICY_FILE),
    ...(cfg.derived.storage.private === 'filesystem' ? {} : { token: { keydir: path.join(t.rootdirectory, 'auth', 'token-keys') } }),
  };
}

const HEADER = '# Rendered by registry-stack (infra/render/registry-config.ts). Do not edit: `pulumi up` overwrites it.\n';

export function privateConfigObject(cfg: StackConfig, t: RegistryTarget): Record<string, unknown> {
  const p = cfg.private;
  const doc: Record<string, unknown> = {
    version: '0.1',
    log: { level: p.logLevel, formatter: t.logFormatter, fields: { service: 'registry' }, accesslog: { disabled: false } },
    storage: {
      ...storageDriver(cfg, t, 'private'),
      delete: { enabled: p.deleteEnabled },
      maintenance: { uploadpurging: { enabled: true, age: p.uploadPurgeAge, interval: '24h', dryrun: false } },
      ...storageExtras(cfg, 'private'),
    },
    http: { addr: t.addr, host: t.publicUrl, headers: { 'X-Content-Type-Options': ['nosniff'] } },
    ...redisSection(cfg, t, 'private'),
    auth: privateAuthSection(cfg, t),
    admin: { addr: t.adminAddr },
    gc: { interval: p.gcInterval, graceperiod: p.gcGracePeriod, deleteuntagged: p.gcDeleteUntagged },
    ratelimit: ratelimitSection(cfg, t, true),
  };
  return deepMerge(doc, p.extraConfig);
}

export function mirrorConfigObject(cfg: StackConfig, t: RegistryTarget): Record<string, unknown> {
  const m = cfg.mirror;
  const doc: Record<string, unknown> = {
    version: '0.1',
    log: { level: m.logLevel, formatter: t.logFormatter, fields: { service: 'registry-cache' }, accesslog: { disabled: false } },
    storage: {
      ...storageDriver(cfg, t, 'mirror'),
      maintenance: { uploadpurging: { enabled: true, age: '24h', interval: '24h', dryrun: false } },
      ...storageExtras(cfg, 'mirror'),
    },
    http: { addr: t.addr, host: t.publicUrl, headers: { 'X-Content-Type-Options': ['nosniff'] } },
    ...redisSection(cfg, t, 'mirror'),
    proxy: {
      ttl: m.ttl,
      upstreams: m.upstreams.map((u) => ({ host: u.host, url: u.url })),
      defaulthost: cfg.derived.mirrorDefaultHost,
      tagfreshness: m.tagFreshness,
      tagmaxage: m.tagMaxAge,
    },
    cache: { maxage: m.ttl, ...(m.maxSize !== undefined ? { maxsize: m.maxSize } : {}), interval: m.pruneInterval },
    admin: { addr: t.adminAddr },
    ratelimit: ratelimitSection(cfg, t, m.requireAuth),
  };
  if (m.requireAuth) doc.auth = { htpasswd: { realm: cfg.derived.mirHost, path: t.htpasswdPath }, anonymouspull: false };
  return deepMerge(doc, m.extraConfig);
}

export function renderPrivateConfig(cfg: StackConfig, t: RegistryTarget): string {
  return finish(privateConfigObject(cfg, t), 'private.extraConfig', 'the private registry config');
}

export function renderMirrorConfig(cfg: StackConfig, t: RegistryTarget): string {
  return finish(mirrorConfigObject(cfg, t), 'mirror.extraConfig', 'the mirror config');
}

/** Serialises and checks with the server's own loader, so a bad extraConfig fails at preview, naming the key. */
function finish(doc: Record<string, unknown>, extraKey: string, what: string): string {
  const text = HEADER + stringify(doc, { lineWidth: 0 });
  try {
    loadConfigText(text, {}, what);
  } catch (err) {
    if (err instanceof ConfigError) throw new StackConfigError(`registry-stack:${extraKey}: ${err.message}`);
    throw err;
  }
  return text;
}

/** The secrets a registry's environment carries. */
export interface RegistrySecrets {
  adminToken: string;
  /** The shared Redis's password (when the stack runs Redis). */
  redisPassword?: string;
  /** The R2 bucket's S3 credentials (when a registry stores in R2). */
  r2AccessKeyId?: string;
  r2SecretAccessKey?: string;
}

/** Environment variables carrying the secrets of one instance (REGISTRY_* overrides of the server's loader). */
export function registryEnv(cfg: StackConfig, secrets: RegistrySecrets, mode: 'private' | 'mirror'): Record<string, string> {
  const env: Record<string, string> = { REGISTRY_ADMIN_TOKEN: secrets.adminToken };
  if (cfg.derived.storage[mode] === 'r2') {
    if (!secrets.r2AccessKeyId || !secrets.r2SecretAccessKey) throw new Error(`registryEnv: ${mode} stores in R2 but no R2 credentials were given`);
    env.REGISTRY_STORAGE_S3_ACCESSKEY = secrets.r2AccessKeyId;
    env.REGISTRY_STORAGE_S3_SECRETKEY = secrets.r2SecretAccessKey;
  }
  if (cfg.derived.redis) {
    if (!secrets.redisPassword) throw new Error('registryEnv: the stack runs Redis but no password was given');
    env.REGISTRY_REDIS_PASSWORD = secrets.redisPassword;
  }
  if (mode === 'mirror') {
    for (const [host, cred] of Object.entries(cfg.upstreamCredentials)) {
      const key = host.toUpperCase().replace(/[^A-Z0-9]/g, '_');
      env[`REGISTRY_PROXY_${key}_USERNAME`] = cred.username;
      env[`REGISTRY_PROXY_${key}_PASSWORD`] = cred.password;
    }
  }
  return env;
}

/**
 * Checks a rendered config together with its environment, as the server will
 * load them: every REGISTRY_* variable must name a config key (a misnamed one
 * would be ignored, silently dropping a secret), and the result must validate.
 */
export function checkRegistryEnv(text: string, env: Record<string, string>, what: string): void {
  let ignored: string[];
  try {
    ignored = loadConfigText(text, env, what).ignoredEnv;
  } catch (err) {
    if (err instanceof ConfigError) throw new Error(`${what} with its environment: ${err.message}`);
    throw err;
  }
  // Upstream logins are read by the mirror's upstream code, not the loader (REGISTRY_PROXY_<HOST>_USERNAME).
  const unknown = ignored.filter((name) => !/^REGISTRY_PROXY_[A-Z0-9_]+_(USERNAME|PASSWORD)$/.test(name));
  if (unknown.length) throw new Error(`${what}: environment variables that name no config key: ${unknown.join(', ')}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isPlainObject(v) && isPlainObject(out[k]) ? deepMerge(out[k] as Record<string, unknown>, v) : v;
  }
  return out;
}
