// The two registry configs (distribution's config.yml shape plus our keys),
// rendered from the stack config. Secrets never go into these files: the
// admin token and upstream logins reach the containers as REGISTRY_*
// environment variables, which the server's loader reads.
import { stringify } from 'yaml';
import { ConfigError, loadConfigText } from '../../server/src/config/load.ts';
import type { StackConfig } from '../config.ts';
import { StackConfigError } from '../config.ts';

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
}

const HEADER = '# Rendered by registry-stack (infra/render/registry-config.ts). Do not edit: `pulumi up` overwrites it.\n';

export function privateConfigObject(cfg: StackConfig, t: RegistryTarget): Record<string, unknown> {
  const p = cfg.private;
  const doc: Record<string, unknown> = {
    version: '0.1',
    log: { level: p.logLevel, formatter: t.logFormatter, fields: { service: 'registry' }, accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: t.rootdirectory },
      delete: { enabled: p.deleteEnabled },
      maintenance: { uploadpurging: { enabled: true, age: p.uploadPurgeAge, interval: '24h', dryrun: false } },
    },
    http: { addr: t.addr, host: t.publicUrl, headers: { 'X-Content-Type-Options': ['nosniff'] } },
    auth: { htpasswd: { realm: cfg.derived.dcrHost, path: t.htpasswdPath }, anonymouspull: p.anonymousPull },
    admin: { addr: t.adminAddr },
    gc: { interval: p.gcInterval, graceperiod: p.gcGracePeriod, deleteuntagged: p.gcDeleteUntagged },
    ratelimit: { enabled: false, trustedproxies: t.trustedProxies },
  };
  return deepMerge(doc, p.extraConfig);
}

export function mirrorConfigObject(cfg: StackConfig, t: RegistryTarget): Record<string, unknown> {
  const m = cfg.mirror;
  const doc: Record<string, unknown> = {
    version: '0.1',
    log: { level: m.logLevel, formatter: t.logFormatter, fields: { service: 'registry-cache' }, accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: t.rootdirectory },
      maintenance: { uploadpurging: { enabled: true, age: '24h', interval: '24h', dryrun: false } },
    },
    http: { addr: t.addr, host: t.publicUrl, headers: { 'X-Content-Type-Options': ['nosniff'] } },
    proxy: {
      ttl: m.ttl,
      upstreams: m.upstreams.map((u) => ({ host: u.host, url: u.url })),
      defaulthost: cfg.derived.mirrorDefaultHost,
      tagfreshness: m.tagFreshness,
      tagmaxage: m.tagMaxAge,
    },
    cache: { maxage: m.ttl, ...(m.maxSize !== undefined ? { maxsize: m.maxSize } : {}), interval: m.pruneInterval },
    admin: { addr: t.adminAddr },
    ratelimit: { enabled: false, trustedproxies: t.trustedProxies },
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

/** Environment variables carrying the secrets of one instance (REGISTRY_* overrides of the server's loader). */
export function registryEnv(cfg: StackConfig, secrets: { adminToken: string }, mode: 'private' | 'mirror'): Record<string, string> {
  const env: Record<string, string> = { REGISTRY_ADMIN_TOKEN: secrets.adminToken };
  if (mode === 'mirror') {
    for (const [host, cred] of Object.entries(cfg.upstreamCredentials)) {
      const key = host.toUpperCase().replace(/[^A-Z0-9]/g, '_');
      env[`REGISTRY_PROXY_${key}_USERNAME`] = cred.username;
      env[`REGISTRY_PROXY_${key}_PASSWORD`] = cred.password;
    }
  }
  return env;
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
