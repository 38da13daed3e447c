// Every file the VPS gets, rendered from the stack config in one call. The
// Pulumi program and `npm run render` both use this, so what the render
// command writes is what `pulumi up` deploys.
import type { StackConfig } from '../config.ts';
import { renderAccessPolicy } from './access.ts';
import { renderCaddyfile } from './caddyfile.ts';
import { renderClientSnippets } from './clients.ts';
import { renderDaemonJson, renderFirewallScript, renderSysctl } from './host.ts';
import { renderHtpasswd } from './htpasswd.ts';
import { CADDY_ADMIN_SOCKET, CADDY_HEALTH_PORT, CADDY_ORIGIN_CERT, CONTAINER_NAMES, HOST_PATHS, IMAGE_PATHS, REDIS_PATHS } from './layout.ts';
import { opsDataMounts, opsEnv, opsJobs, renderCrontab, renderEnvFile, renderLogrotate, renderOpsWrapper, stackContainers } from './ops.ts';
import { renderRedisConf } from './redis.ts';
import { checkRegistryEnv, type RegistryTarget, registryEnv, renderMirrorConfig, renderPrivateConfig } from './registry-config.ts';

export interface StackSecrets {
  originSecret: string;
  adminToken: string;
  /** Seed of the htpasswd salts. */
  htpasswdSeed: string;
  /** The shared Redis's password (needed when the stack runs Redis). */
  redisPassword?: string;
  /** The R2 bucket's S3 credentials (needed when a registry stores in R2). */
  r2AccessKeyId?: string;
  r2SecretAccessKey?: string;
  /** mir's Cloudflare Origin CA certificate (PEM) and its private key: Caddy serves them for mir. */
  mirOriginCert?: string;
  mirOriginKey?: string;
}

export interface RenderOptions {
  image: string;
  previousHtpasswd?: string;
  /** An ACME CA other than Let's Encrypt for dcr (the twin's pebble), with the root that signs its HTTPS endpoint. */
  acme?: { directory: string; rootCa: string };
  /** A PEM bundle on the VPS that the ops jobs trust besides the public roots (see renderOpsWrapper). */
  opsExtraCaFile?: string;
}

export interface RenderedFile {
  content: string;
  /** Octal file mode on the host. */
  mode: string;
  /** Holds a secret (or a secret's hash): kept as a Pulumi secret, written 0600. */
  secret: boolean;
  /** Where it goes: a host path, or "<container>:<path>" for a file uploaded into a container. */
  target: string;
}

export interface RenderedStack {
  files: Record<string, RenderedFile>;
  /** Environment of the two registries' containers (secrets), the same for each replica. */
  privateEnv: Record<string, string>;
  mirrorEnv: Record<string, string>;
  /** Environment of the Redis container (its password for redis-cli in the healthcheck), when the stack runs Redis. */
  redisEnv?: Record<string, string>;
}

/** Caddy's load balancing over replicas, from the stack config. */
export function loadBalancingFor(cfg: StackConfig) {
  const lb = cfg.loadBalancer;
  return {
    policy: lb.policy,
    healthUri: '/healthz',
    healthInterval: lb.healthInterval,
    healthTimeout: lb.healthTimeout,
    failDuration: lb.failDuration,
    tryDuration: lb.tryDuration,
    tryInterval: lb.tryInterval,
  };
}

/** The registry targets inside the containers on the VPS. */
export function vpsTargets(cfg: StackConfig): { private: RegistryTarget; mirror: RegistryTarget } {
  const base = {
    addr: `:${IMAGE_PATHS.port}`,
    rootdirectory: IMAGE_PATHS.data,
    htpasswdPath: IMAGE_PATHS.htpasswd,
    adminAddr: `0.0.0.0:${IMAGE_PATHS.adminPort}`,
    trustedProxies: [cfg.docker.subnet],
    logFormatter: 'json' as const,
    ...(cfg.derived.redis ? { redisAddr: `${CONTAINER_NAMES.redis}:${REDIS_PATHS.port}` } : {}),
  };
  return {
    private: { ...base, publicUrl: `https://${cfg.derived.dcrHost}` },
    mirror: { ...base, publicUrl: `https://${cfg.derived.mirHost}` },
  };
}

/** Where the ACME root given in RenderOptions.acme goes in Caddy's container. */
export const CADDY_ACME_ROOT = '/etc/caddy/acme-root.crt';

export function renderStack(cfg: StackConfig, secrets: StackSecrets, o: RenderOptions): RenderedStack {
  const t = vpsTargets(cfg);
  const file = (target: string, content: string, mode = '0644', secret = false): RenderedFile => ({ target, content, mode, secret });
  const clients = renderClientSnippets(cfg);
  const names = stackContainers(cfg);
  const upstreams = (replicas: string[]) => replicas.map((n) => `${n}:${IMAGE_PATHS.port}`);
  const privateConfig = renderPrivateConfig(cfg, t.private);
  const mirrorConfig = renderMirrorConfig(cfg, t.mirror);
  const privateEnv = registryEnv(cfg, secrets, 'private');
  const mirrorEnv = registryEnv(cfg, secrets, 'mirror');
  // The configs as the servers will load them, secrets from the environment included.
  checkRegistryEnv(privateConfig, privateEnv, 'the private registry config');
  checkRegistryEnv(mirrorConfig, mirrorEnv, 'the mirror config');
  const files: Record<string, RenderedFile> = {
    Caddyfile: file(
      `${CONTAINER_NAMES.caddy}:/etc/caddy/Caddyfile`,
      renderCaddyfile({
        dcrHost: cfg.derived.dcrHost,
        mirHost: cfg.derived.mirHost,
        privateUpstream: upstreams(names.private),
        mirrorUpstream: upstreams(names.mirror),
        loadBalancing: loadBalancingFor(cfg),
        originHeader: cfg.cloudflare.originHeader,
        originSecret: secrets.originSecret,
        acmeEmail: cfg.acmeEmail,
        behindCloudflare: true,
        admin: `unix/${CADDY_ADMIN_SOCKET}`,
        healthPort: CADDY_HEALTH_PORT,
        accessLog: true,
        // The program always passes mir's Origin CA certificate (ACME cannot pass the proxy); `npm run render` and unit tests may not.
        ...(secrets.mirOriginCert ? { mirTls: { certFile: CADDY_ORIGIN_CERT.cert, keyFile: CADDY_ORIGIN_CERT.key } } : {}),
        ...(o.acme ? { acme: { directory: o.acme.directory, rootCaFile: CADDY_ACME_ROOT } } : {}),
      }),
      '0644',
      true,
    ),
    'registry/config.yml': file(`${names.private.join(',')}:${IMAGE_PATHS.config}`, privateConfig),
    'registry-cache/config.yml': file(`${names.mirror.join(',')}:${IMAGE_PATHS.config}`, mirrorConfig),
    htpasswd: file(
      HOST_PATHS.htpasswd,
      renderHtpasswd(cfg.users, { seed: secrets.htpasswdSeed, cost: cfg.docker.bcryptCost, previous: o.previousHtpasswd }),
      '0640',
      true,
    ),
    'host/firewall.sh': file(HOST_PATHS.firewallScript, renderFirewallScript({ sshPort: cfg.vps.firewallSshPort ?? cfg.vps.port }), '0755'),
    'host/99-registry-stack.conf': file(HOST_PATHS.sysctlFile, renderSysctl()),
    'host/daemon.json': file(HOST_PATHS.daemonJson, renderDaemonJson({ logMaxSize: cfg.docker.logMaxSize, logMaxFile: cfg.docker.logMaxFile })),
    'host/registry-stack.cron': file(HOST_PATHS.cronFile, renderCrontab(opsJobs(cfg))),
    'host/registry-stack-ops': file(HOST_PATHS.opsWrapper, renderOpsWrapper({ image: o.image, network: cfg.docker.network, mounts: opsDataMounts(cfg), extraCaFile: o.opsExtraCaFile }), '0755'),
    'host/ops.env': file(HOST_PATHS.opsEnv, renderEnvFile(opsEnv(cfg, secrets), 'Rendered by registry-stack: settings of the ops scripts.'), '0600', true),
    'host/logrotate': file(HOST_PATHS.logrotateFile, renderLogrotate()),
    'clients/registries.yaml': file('/etc/rancher/k3s/registries.yaml', clients.k3sRegistriesYaml),
    'clients/usage.sh': file('(your shell)', clients.usage),
  };
  // Both secret: the key is, and the certificate exists only once Cloudflare issued it (an output at deploy).
  if (secrets.mirOriginCert) {
    if (!secrets.mirOriginKey) throw new Error('renderStack: mir\'s Origin CA certificate needs its key');
    files['caddy/mir-origin.crt'] = file(`${CONTAINER_NAMES.caddy}:${CADDY_ORIGIN_CERT.cert}`, secrets.mirOriginCert, CADDY_ORIGIN_CERT.certMode, true);
    files['caddy/mir-origin.key'] = file(`${CONTAINER_NAMES.caddy}:${CADDY_ORIGIN_CERT.key}`, secrets.mirOriginKey, CADDY_ORIGIN_CERT.keyMode, true);
  }
  // No secret in it (names and rules); readable by the containers' user like the htpasswd beside it.
  if (cfg.access) files['auth/access.yaml'] = file(HOST_PATHS.accessPolicy, renderAccessPolicy(cfg.access), '0640');
  if (o.acme) files['caddy/acme-root.crt'] = file(`${CONTAINER_NAMES.caddy}:${CADDY_ACME_ROOT}`, o.acme.rootCa);
  if (clients.dockerDaemonJson) files['clients/docker-daemon.json'] = file('/etc/docker/daemon.json (clients)', clients.dockerDaemonJson);
  for (const [host, toml] of Object.entries(clients.containerdHosts)) {
    files[`clients/containerd/certs.d/${host}/hosts.toml`] = file(`/etc/containerd/certs.d/${host}/hosts.toml`, toml);
  }
  let redisEnv: Record<string, string> | undefined;
  if (cfg.derived.redis) {
    if (!secrets.redisPassword) throw new Error('renderStack: the stack runs Redis but no password was given');
    files['redis/redis.conf'] = file(
      `${CONTAINER_NAMES.redis}:${REDIS_PATHS.config}`,
      renderRedisConf({
        password: secrets.redisPassword,
        port: REDIS_PATHS.port,
        memoryLimit: cfg.redis.memory,
        persistence: cfg.redis.persistence,
        dir: REDIS_PATHS.data,
      }),
      '0644',
      true,
    );
    // redis-cli reads the password from REDISCLI_AUTH, so the healthcheck's command line holds none.
    redisEnv = { REDISCLI_AUTH: secrets.redisPassword };
  }
  return { files, privateEnv, mirrorEnv, ...(redisEnv ? { redisEnv } : {}) };
}
