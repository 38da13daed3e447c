// The Pulumi program: reads the stack config, renders every file with the
// pure renderers in render/, and wires them to resources. Nothing here
// decides what a file says.
import * as docker from '@pulumi/docker';
import * as pulumi from '@pulumi/pulumi';
import { CloudflareEdge } from './components/cloudflare.ts';
import { RegistryContainers } from './components/containers.ts';
import { HostSetup, OpsSetup } from './components/host.ts';
import { RobotAccounts } from './components/robots.ts';
import { StackSecrets } from './components/secrets.ts';
import { CONFIG_KEYS, imageRefs, PROJECT, parseStackConfig, type StackConfig, StackConfigError } from './config.ts';
import { serverImageName } from './image.ts';
import { renderClientSnippets } from './render/clients.ts';
import { containerSysctls } from './render/host.ts';
import { renderStack, type RenderedStack, type StackSecrets as RenderSecrets } from './render/index.ts';
import { IMAGE_PATHS } from './render/layout.ts';
import { allContainerNames } from './render/ops.ts';
import { robotCommands } from './render/robots.ts';
import { dockerSsh, resolveHostKey } from './ssh.ts';

/**
 * The stack config from the Pulumi config (`registry-stack:*` keys), validated.
 * Read through the runtime's raw getter: the schema decides what is secret and
 * the program wraps those values with pulumi.secret itself.
 */
export function readStackConfig(): StackConfig {
  const raw: Record<string, unknown> = {};
  // Every key of our namespace, so that a misspelt one is reported rather than ignored.
  const keys = new Set<string>(CONFIG_KEYS);
  for (const full of Object.keys(pulumi.runtime.allConfig())) {
    if (full.startsWith(`${PROJECT}:`)) keys.add(full.slice(PROJECT.length + 1));
  }
  for (const key of keys) {
    const value = pulumi.runtime.getConfig(`${PROJECT}:${key}`);
    if (value === undefined) continue;
    const t = value.trim();
    if (t.startsWith('{') || t.startsWith('[')) {
      try {
        raw[key] = JSON.parse(t);
        continue;
      } catch {
        // not JSON after all: keep the string and let the schema say what is wrong
      }
    }
    raw[key] = value;
  }
  return parseStackConfig(raw, `stack config (Pulumi.${pulumi.getStack()}.yaml)`);
}

export interface DeployOptions {
  /** Repository root: the image's build context and where scripts/ lives. */
  root: string;
  /** The server image name (default: registry-stack/server:<hash of the build context>). */
  imageName?: string;
}

export interface StackOutputs {
  dcrUrl: string;
  mirUrl: string;
  publicIp: string;
  zoneId: pulumi.Output<string>;
  serverImage: string;
  containers: string[];
  dnsRecords: Array<{ name: string; type: string; proxied: boolean }>;
  clientSnippets: ReturnType<typeof renderClientSnippets>;
  r2Bucket?: pulumi.Output<string>;
  /** The R2 bucket's S3 endpoint, when a registry stores in R2. */
  r2Endpoint?: string;
  /** Replicas behind Caddy, per registry. */
  replicas: { private: number; mirror: number };
  /** Robot name → secret (log in as robot$<name>), when the stack config has robots. */
  robotSecrets?: pulumi.Output<Record<string, string>>;
}

/** SSH options for the Docker provider (it runs the local `ssh` binary): the host key checked, a private key in a temp file removed at exit. */
export function dockerSshOpts(cfg: StackConfig, key: string | undefined): string[] {
  return dockerSsh({ host: cfg.vps.host, port: cfg.vps.port, hostKey: cfg.vps.hostKey, privateKey: key }).sshOpts;
}

/**
 * The VPS's host key: vps.hostKey, or the one ~/.ssh/known_hosts has. Without
 * either, the deploy stops: remote commands would otherwise talk to whatever
 * answers on that address.
 */
function remoteHostKey(cfg: StackConfig): string {
  try {
    return resolveHostKey({ host: cfg.vps.host, port: cfg.vps.port, hostKey: cfg.vps.hostKey });
  } catch (err) {
    throw new StackConfigError(`registry-stack:vps.hostKey: ${(err as Error).message}`);
  }
}

export function deployStack(cfg: StackConfig, o: DeployOptions): StackOutputs {
  const imageName = o.imageName ?? serverImageName(o.root);
  // Render once with placeholder secrets before creating anything, so a bad
  // config (e.g. an extraConfig the server refuses) fails here, at preview.
  // Files that hold no secret come from this render as plain strings, so a
  // preview shows their diffs.
  const plain = renderStack(
    cfg,
    {
      originSecret: 'placeholder',
      adminToken: 'placeholder',
      htpasswdSeed: 'placeholder',
      redisPassword: 'placeholder-redis-password',
      r2AccessKeyId: 'placeholder',
      r2SecretAccessKey: 'placeholder',
      mirOriginCert: 'placeholder: issued by Cloudflare\'s Origin CA at deploy',
      mirOriginKey: 'placeholder',
    },
    { image: imageName },
  );
  // Also before creating anything: without a host key, nothing is deployed.
  const hostKey = remoteHostKey(cfg);
  const secrets = new StackSecrets('secrets', { originSecret: cfg.originSecret, adminToken: cfg.adminToken, redis: cfg.derived.redis });
  const edge = new CloudflareEdge('edge', { config: cfg, originSecret: secrets.originSecret });
  const usesR2 = cfg.derived.storage.private === 'r2' || cfg.derived.storage.mirror === 'r2';
  if (usesR2 && !edge.r2Credentials) throw new Error('R2 storage without R2 credentials'); // the config schema prevents this

  // The files holding secrets, rendered with the real ones: secret outputs,
  // never in plain text in the state.
  const none = pulumi.output(undefined as string | undefined);
  const rendered: pulumi.Output<RenderedStack> = pulumi
    .all([
      secrets.originSecret,
      secrets.adminToken,
      secrets.htpasswdSeed,
      secrets.redisPassword ?? none,
      edge.r2Credentials?.accessKeyId ?? none,
      edge.r2Credentials?.secretAccessKey ?? none,
      edge.mirOriginCert.certificate,
      edge.mirOriginCert.privateKey,
    ])
    .apply(([originSecret, adminToken, htpasswdSeed, redisPassword, r2AccessKeyId, r2SecretAccessKey, mirOriginCert, mirOriginKey]) => {
      const s: RenderSecrets = { originSecret, adminToken, htpasswdSeed, redisPassword, r2AccessKeyId, r2SecretAccessKey, mirOriginCert, mirOriginKey };
      return renderStack(cfg, s, { image: imageName });
    });
  const file = (name: string): string => {
    if (plain.files[name].secret) throw new Error(`${name} holds a secret: use secretFile`);
    return plain.files[name].content;
  };
  const secretFile = (name: string) => pulumi.secret(rendered.apply((r) => r.files[name].content));

  const connection: pulumi.Input<import('@pulumi/command').types.input.remote.ConnectionArgs> = {
    host: cfg.vps.host,
    port: cfg.vps.port,
    user: cfg.vps.user,
    ...(cfg.sshPrivateKey ? { privateKey: pulumi.secret(cfg.sshPrivateKey) } : {}),
    hostKey,
  };
  const host = new HostSetup('host', {
    connection,
    sshUser: cfg.vps.user,
    firewallScript: { content: file('host/firewall.sh'), mode: '0755' },
    sysctl: { content: file('host/99-registry-stack.conf'), mode: '0644' },
    daemonJson: { content: file('host/daemon.json'), mode: '0644' },
    htpasswd: { content: secretFile('htpasswd'), mode: '0640' },
    ...(plain.files['auth/access.yaml'] ? { accessPolicy: { content: file('auth/access.yaml'), mode: plain.files['auth/access.yaml'].mode } } : {}),
    containerGid: IMAGE_PATHS.gid,
  });

  const sshOpts = cfg.sshPrivateKey
    ? pulumi.secret(pulumi.output(cfg.sshPrivateKey).apply((k) => dockerSshOpts(cfg, k)))
    : dockerSshOpts(cfg, undefined);
  const provider = new docker.Provider('vps-docker', { host: `ssh://${cfg.vps.user}@${cfg.vps.host}:${cfg.vps.port}`, sshOpts });

  const containers = new RegistryContainers(
    'vps',
    {
      config: cfg,
      contextDir: o.root,
      imageName,
      buildArgs: { NODE_IMAGE: imageRefs(cfg).node },
      plain,
      rendered,
      sysctls: containerSysctls(),
      after: host.steps,
    },
    { provider },
  );
  // The ops files name the new image: they go on the host once it and the containers exist.
  new OpsSetup('host', {
    host,
    serverImage: imageName,
    opsWrapper: { content: file('host/registry-stack-ops'), mode: '0755' },
    opsEnv: { content: secretFile('host/ops.env'), mode: '0600' },
    crontab: { content: file('host/registry-stack.cron'), mode: '0644' },
    logrotate: { content: file('host/logrotate'), mode: '0644' },
    after: [containers],
  });
  const robots = Object.keys(cfg.robots).length
    ? new RobotAccounts('robots', { connection, commands: robotCommands(cfg), after: [containers] })
    : undefined;

  return {
    dcrUrl: `https://${cfg.derived.dcrHost}`,
    mirUrl: `https://${cfg.derived.mirHost}`,
    publicIp: cfg.derived.publicIp,
    zoneId: edge.zoneId,
    serverImage: imageName,
    containers: allContainerNames(cfg),
    dnsRecords: [
      { name: cfg.derived.dcrHost, type: 'A', proxied: false },
      { name: cfg.derived.mirHost, type: 'A', proxied: true },
      ...(cfg.vps.publicIpv6
        ? [
            { name: cfg.derived.dcrHost, type: 'AAAA', proxied: false },
            { name: cfg.derived.mirHost, type: 'AAAA', proxied: true },
          ]
        : []),
    ],
    clientSnippets: renderClientSnippets(cfg),
    ...(edge.r2Bucket ? { r2Bucket: edge.r2Bucket.name } : {}),
    ...(usesR2 && cfg.derived.r2Endpoint ? { r2Endpoint: cfg.derived.r2Endpoint } : {}),
    replicas: { private: cfg.replicas.private, mirror: cfg.replicas.mirror },
    ...(robots ? { robotSecrets: robots.secrets } : {}),
  };
}

/**
 * The program: reads and validates the config and deploys it. A bad config
 * stops `pulumi preview` with the message alone (no stack trace), before any
 * resource is registered.
 */
export function program(o: DeployOptions): StackOutputs {
  try {
    return deployStack(readStackConfig(), o);
  } catch (err) {
    if (err instanceof StackConfigError) throw new pulumi.RunError(err.message);
    throw err;
  }
}
