// Every file the VPS gets, rendered from the stack config in one call. The
// Pulumi program and `npm run render` both use this, so what the render
// command writes is what `pulumi up` deploys.
import type { StackConfig } from '../config.ts';
import { renderCaddyfile } from './caddyfile.ts';
import { renderClientSnippets } from './clients.ts';
import { renderDaemonJson, renderFirewallScript, renderSysctl } from './host.ts';
import { renderHtpasswd } from './htpasswd.ts';
import { CADDY_ADMIN_SOCKET, CADDY_HEALTH_PORT, CONTAINER_NAMES, HOST_PATHS, IMAGE_PATHS } from './layout.ts';
import { opsEnv, opsJobs, renderCrontab, renderEnvFile, renderLogrotate, renderOpsWrapper } from './ops.ts';
import { type RegistryTarget, registryEnv, renderMirrorConfig, renderPrivateConfig } from './registry-config.ts';

export interface StackSecrets {
  originSecret: string;
  adminToken: string;
  /** Seed of the htpasswd salts. */
  htpasswdSeed: string;
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
  /** Environment of the two registry containers (secrets). */
  privateEnv: Record<string, string>;
  mirrorEnv: Record<string, string>;
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
  };
  return {
    private: { ...base, publicUrl: `https://${cfg.derived.dcrHost}` },
    mirror: { ...base, publicUrl: `https://${cfg.derived.mirHost}` },
  };
}

export function renderStack(cfg: StackConfig, secrets: StackSecrets, o: { image: string; previousHtpasswd?: string }): RenderedStack {
  const t = vpsTargets(cfg);
  const file = (target: string, content: string, mode = '0644', secret = false): RenderedFile => ({ target, content, mode, secret });
  const clients = renderClientSnippets(cfg);
  const files: Record<string, RenderedFile> = {
    Caddyfile: file(
      `${CONTAINER_NAMES.caddy}:/etc/caddy/Caddyfile`,
      renderCaddyfile({
        dcrHost: cfg.derived.dcrHost,
        mirHost: cfg.derived.mirHost,
        privateUpstream: `${CONTAINER_NAMES.private}:${IMAGE_PATHS.port}`,
        mirrorUpstream: `${CONTAINER_NAMES.mirror}:${IMAGE_PATHS.port}`,
        originHeader: cfg.cloudflare.originHeader,
        originSecret: secrets.originSecret,
        acmeEmail: cfg.acmeEmail,
        behindCloudflare: true,
        admin: `unix/${CADDY_ADMIN_SOCKET}`,
        healthPort: CADDY_HEALTH_PORT,
        accessLog: true,
      }),
      '0644',
      true,
    ),
    'registry/config.yml': file(`${CONTAINER_NAMES.private}:${IMAGE_PATHS.config}`, renderPrivateConfig(cfg, t.private)),
    'registry-cache/config.yml': file(`${CONTAINER_NAMES.mirror}:${IMAGE_PATHS.config}`, renderMirrorConfig(cfg, t.mirror)),
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
    'host/registry-stack-ops': file(HOST_PATHS.opsWrapper, renderOpsWrapper({ image: o.image, network: cfg.docker.network }), '0755'),
    'host/ops.env': file(HOST_PATHS.opsEnv, renderEnvFile(opsEnv(cfg, secrets), 'Rendered by registry-stack: settings of the ops scripts.'), '0600', true),
    'host/logrotate': file(HOST_PATHS.logrotateFile, renderLogrotate()),
    'clients/registries.yaml': file('/etc/rancher/k3s/registries.yaml', clients.k3sRegistriesYaml),
    'clients/usage.sh': file('(your shell)', clients.usage),
  };
  if (clients.dockerDaemonJson) files['clients/docker-daemon.json'] = file('/etc/docker/daemon.json (clients)', clients.dockerDaemonJson);
  for (const [host, toml] of Object.entries(clients.containerdHosts)) {
    files[`clients/containerd/certs.d/${host}/hosts.toml`] = file(`/etc/containerd/certs.d/${host}/hosts.toml`, toml);
  }
  return {
    files,
    privateEnv: registryEnv(cfg, secrets, 'private'),
    mirrorEnv: registryEnv(cfg, secrets, 'mirror'),
  };
}
