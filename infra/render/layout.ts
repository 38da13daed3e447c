// Names and paths shared by the renderers and the Pulumi program: one place
// says where everything lives on the VPS and inside the containers.

export const HOST_PATHS = {
  base: '/opt/registry-stack',
  scripts: '/opt/registry-stack/scripts',
  bin: '/opt/registry-stack/bin',
  opsWrapper: '/opt/registry-stack/bin/registry-stack-ops',
  firewallScript: '/opt/registry-stack/bin/firewall.sh',
  opsEnv: '/opt/registry-stack/ops.env',
  /** The htpasswd lives here on the host, bind-mounted (as a directory, so replacing the file shows) into the registries. */
  authDir: '/opt/registry-stack/auth',
  htpasswd: '/opt/registry-stack/auth/htpasswd',
  /** dcr's access policy (registry-stack:access), next to the htpasswd and mounted with it. */
  accessPolicy: '/opt/registry-stack/auth/access.yaml',
  logDir: '/var/log/registry-stack',
  cronFile: '/etc/cron.d/registry-stack',
  logrotateFile: '/etc/logrotate.d/registry-stack',
  sysctlFile: '/etc/sysctl.d/99-registry-stack.conf',
  daemonJson: '/etc/docker/daemon.json',
  dockerSocket: '/var/run/docker.sock',
} as const;

export const CONTAINER_NAMES = { caddy: 'caddy', private: 'registry', mirror: 'registry-cache', redis: 'redis' } as const;

/**
 * The containers of a registry with `count` replicas: the plain name for one
 * (so an existing single-replica stack keeps its containers), else
 * <name>-1 … <name>-<count>.
 */
export function replicaNames(base: string, count: number): string[] {
  if (!Number.isInteger(count) || count < 1) throw new Error(`bad replica count ${count}`);
  return count === 1 ? [base] : Array.from({ length: count }, (_, i) => `${base}-${i + 1}`);
}

export const VOLUME_NAMES = {
  caddyData: 'caddy_data',
  caddyConfig: 'caddy_config',
  /** Caddy's admin socket, shared with the ops jobs (renew-cert reloads Caddy through it). */
  caddyAdmin: 'caddy_admin',
  privateData: 'registry_data',
  mirrorData: 'registry_cache_data',
  /**
   * dcr's token signing keys when it stores in R2 (on the filesystem they live in registry_data):
   * one volume all dcr replicas on the VPS share, mounted where the image's data directory is.
   */
  privateAuth: 'registry_auth',
  /** Redis's append-only file, when redis.persistence is on. */
  redisData: 'redis_data',
} as const;

/** Redis inside its container: the official image's paths, the port on the internal network. */
export const REDIS_PATHS = {
  config: '/usr/local/etc/redis/redis.conf',
  data: '/data',
  port: 6379,
} as const;

/** Key prefixes of the two registries in the shared R2 bucket (storage.s3.rootdirectory). */
export const BUCKET_PREFIXES = { private: '/private', mirror: '/mirror' } as const;

/** Redis logical databases: one per registry, so their keys never meet. */
export const REDIS_DBS = { private: 0, mirror: 1 } as const;

/** Paths and ports inside the server image. */
export const IMAGE_PATHS = {
  app: '/opt/registry-stack',
  config: '/etc/registry/config.yml',
  authDir: '/etc/registry/auth',
  htpasswd: '/etc/registry/auth/htpasswd',
  accessPolicy: '/etc/registry/auth/access.yaml',
  /** The server's CLI (`registry robot create …` runs it inside a dcr container). */
  registryBin: '/opt/registry-stack/server/bin/registry.mjs',
  /** The image's unprivileged user (node) and group. */
  uid: 1000,
  gid: 1000,
  data: '/var/lib/registry',
  port: 5000,
  adminPort: 5001,
} as const;

export const CADDYFILE_PATH = '/etc/caddy/Caddyfile';

/**
 * mir's Cloudflare Origin CA certificate and its key inside Caddy's container:
 * the program uploads them with the Caddyfile, the key with mode 0600 (Caddy
 * runs as root in its image). Origin CA certificates are what Cloudflare's
 * Full (strict) mode trusts, and Cloudflare is the only client mir has.
 */
export const CADDY_ORIGIN_CERT = {
  dir: '/etc/caddy/origin',
  cert: '/etc/caddy/origin/mir.crt',
  key: '/etc/caddy/origin/mir.key',
  certMode: '0644',
  keyMode: '0600',
} as const;

/** Caddy's admin API: a unix socket on the caddy_admin volume, off the network. */
export const CADDY_ADMIN_DIR = '/run/caddy';
export const CADDY_ADMIN_SOCKET = `${CADDY_ADMIN_DIR}/admin.sock`;
/** A container-local plain-HTTP site Caddy's healthcheck asks. */
export const CADDY_HEALTH_PORT = 2020;

/** The ops jobs (scripts/<name>.ts) and their stack-config schedule keys. */
export const OPS_JOBS = [
  { name: 'monitor', schedule: 'monitor' },
  { name: 'gc', schedule: 'gc' },
  { name: 'prune', schedule: 'prune' },
  { name: 'renew-cert', schedule: 'renewCert' },
] as const;
