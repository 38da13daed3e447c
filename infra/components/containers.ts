// The containers on the VPS (through the Docker provider over SSH): the
// server image built from server/Dockerfile, the proxy_net network, named
// volumes, and caddy, registry (private) and registry-cache (mirror), each with
// its rendered config uploaded into it. A config change replaces only the
// container that uses it.
//
// Replicas: registry-1 … registry-N (and registry-cache-1 …) when a registry
// has more than one, all with the same config and environment; a single
// replica keeps the plain name (and resource name), so a stack that never
// scaled out is left as it was. Registries on filesystem storage get their data
// volume; those on R2 get none. With Redis, a `redis` container on the same
// network, with no published port and its password in the uploaded redis.conf.
import * as docker from '@pulumi/docker';
import * as pulumi from '@pulumi/pulumi';
import type { StackConfig } from '../config.ts';
import { CADDY_ADMIN_DIR, CADDY_HEALTH_PORT, CADDYFILE_PATH, CONTAINER_NAMES, HOST_PATHS, IMAGE_PATHS, REDIS_PATHS, VOLUME_NAMES } from '../render/layout.ts';
import { stackContainers } from '../render/ops.ts';

export interface RegistryContainersArgs {
  config: StackConfig;
  /** Repository root (the build context). */
  contextDir: string;
  /** The server image name with its content tag. */
  imageName: string;
  caddyfile: pulumi.Input<string>;
  privateConfig: pulumi.Input<string>;
  mirrorConfig: pulumi.Input<string>;
  privateEnv: pulumi.Input<Record<string, string>>;
  mirrorEnv: pulumi.Input<Record<string, string>>;
  /** redis.conf (secret: it holds the password) and the container's environment, when the stack runs Redis. */
  redisConfig?: pulumi.Input<string>;
  redisEnv?: pulumi.Input<Record<string, string>>;
  /** Host setup steps everything here waits for (daemon.json, firewall). */
  after?: pulumi.Resource[];
}

/** The server's healthcheck: its /healthz on the main listener. */
export const SERVER_HEALTHCHECK = [
  'CMD',
  'node',
  '-e',
  `fetch('http://127.0.0.1:${IMAGE_PATHS.port}/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))`,
];

/** Caddy's healthcheck: the container-local site the Caddyfile serves for it. */
export const CADDY_HEALTHCHECK = ['CMD', 'wget', '-q', '-O', '/dev/null', `http://127.0.0.1:${CADDY_HEALTH_PORT}/`];

/** Redis's healthcheck: PING answered (redis-cli takes the password from REDISCLI_AUTH). */
export const REDIS_HEALTHCHECK = ['CMD-SHELL', 'redis-cli ping | grep -q PONG'];

const toMb = (bytes: number) => Math.max(6, Math.floor(bytes / 1024 ** 2));
const envList = (env: pulumi.Input<Record<string, string>>) =>
  pulumi.output(env).apply((e) => Object.entries(e).map(([k, v]) => `${k}=${v}`));

export class RegistryContainers extends pulumi.ComponentResource {
  readonly image: docker.Image;
  readonly caddyImage: docker.RemoteImage;
  readonly network: docker.Network;
  readonly volumes: Partial<Record<keyof typeof VOLUME_NAMES, docker.Volume>>;
  readonly caddy: docker.Container;
  /** The private registry's replicas (one in most stacks). */
  readonly registries: docker.Container[];
  /** The mirror's replicas. */
  readonly registryCaches: docker.Container[];
  /** The first replica of each (the only one in most stacks). */
  readonly registry: docker.Container;
  readonly registryCache: docker.Container;
  readonly redisImage?: docker.RemoteImage;
  readonly redis?: docker.Container;

  constructor(name: string, args: RegistryContainersArgs, opts?: pulumi.ComponentResourceOptions) {
    super('registry-stack:index:RegistryContainers', name, {}, opts);
    const cfg = args.config;
    const after = args.after ?? [];
    const child = { parent: this, dependsOn: after };

    this.image = new docker.Image(
      `${name}-server-image`,
      {
        imageName: args.imageName,
        build: { context: args.contextDir, dockerfile: `${args.contextDir}/server/Dockerfile` },
        skipPush: true,
        buildOnPreview: false,
      },
      child,
    );
    this.caddyImage = new docker.RemoteImage(`${name}-caddy-image`, { name: cfg.docker.caddyImage, keepLocally: true }, child);
    this.network = new docker.Network(
      `${name}-network`,
      { name: cfg.docker.network, driver: 'bridge', ipamConfigs: [{ subnet: cfg.docker.subnet }] },
      child,
    );
    const volume = (key: keyof typeof VOLUME_NAMES) =>
      new docker.Volume(`${name}-${VOLUME_NAMES[key].replace(/_/g, '-')}`, { name: VOLUME_NAMES[key] }, { ...child, retainOnDelete: true });
    const storage = cfg.derived.storage;
    const caddyVolumes = { caddyData: volume('caddyData'), caddyConfig: volume('caddyConfig'), caddyAdmin: volume('caddyAdmin') };
    this.volumes = {
      ...caddyVolumes,
      ...(storage.private === 'filesystem' ? { privateData: volume('privateData') } : {}),
      ...(storage.mirror === 'filesystem' ? { mirrorData: volume('mirrorData') } : {}),
      ...(cfg.derived.redis && cfg.redis.persistence ? { redisData: volume('redisData') } : {}),
    };
    const names = stackContainers(cfg);

    const common = {
      restart: 'unless-stopped',
      logDriver: 'json-file',
      logOpts: { 'max-size': cfg.docker.logMaxSize, 'max-file': String(cfg.docker.logMaxFile) },
      ulimits: [{ name: 'nofile', soft: 65536, hard: 65536 }],
      init: true,
      mustRun: true,
    };
    const net = (alias: string) => [{ name: this.network.name, aliases: [alias] }];
    const healthcheck = (tests: string[]) => ({ tests, interval: '30s', timeout: '5s', startPeriod: '20s', retries: 3 });

    this.caddy = new docker.Container(
      `${name}-caddy`,
      {
        ...common,
        name: CONTAINER_NAMES.caddy,
        image: this.caddyImage.imageId,
        ports: [
          { internal: 80, external: 80 },
          { internal: 443, external: 443 },
          { internal: 443, external: 443, protocol: 'udp' },
        ],
        volumes: [
          { volumeName: caddyVolumes.caddyData.name, containerPath: '/data' },
          { volumeName: caddyVolumes.caddyConfig.name, containerPath: '/config' },
          { volumeName: caddyVolumes.caddyAdmin.name, containerPath: CADDY_ADMIN_DIR },
        ],
        uploads: [{ file: CADDYFILE_PATH, content: pulumi.secret(args.caddyfile) }],
        networksAdvanced: net(CONTAINER_NAMES.caddy),
        healthcheck: healthcheck(CADDY_HEALTHCHECK),
        memory: toMb(cfg.docker.caddyMemory),
      },
      child,
    );

    if (cfg.derived.redis) {
      if (args.redisConfig === undefined || args.redisEnv === undefined) throw new Error('RegistryContainers: the stack runs Redis: redisConfig and redisEnv are required');
      this.redisImage = new docker.RemoteImage(`${name}-redis-image`, { name: cfg.redis.image, keepLocally: true }, child);
      const data = this.volumes.redisData;
      this.redis = new docker.Container(
        `${name}-${CONTAINER_NAMES.redis}`,
        {
          ...common,
          name: CONTAINER_NAMES.redis,
          image: this.redisImage.imageId,
          command: ['redis-server', REDIS_PATHS.config],
          envs: pulumi.secret(envList(args.redisEnv)),
          // No ports: only the containers on the internal network reach it.
          ...(data ? { volumes: [{ volumeName: data.name, containerPath: REDIS_PATHS.data }] } : {}),
          uploads: [{ file: REDIS_PATHS.config, content: pulumi.secret(args.redisConfig) }],
          networksAdvanced: net(CONTAINER_NAMES.redis),
          healthcheck: { tests: REDIS_HEALTHCHECK, interval: '10s', timeout: '3s', startPeriod: '5s', retries: 3 },
          memory: toMb(cfg.redis.memory),
        },
        child,
      );
    }

    const server = (
      containerName: string,
      configText: pulumi.Input<string>,
      env: pulumi.Input<Record<string, string>>,
      volumeKey: 'privateData' | 'mirrorData',
      memory: number,
      withHtpasswd: boolean,
    ) => {
      const data = this.volumes[volumeKey];
      return new docker.Container(
        `${name}-${containerName}`,
        {
          ...common,
          name: containerName,
          image: this.image.imageName,
          envs: pulumi.secret(envList(env)),
          volumes: [
            ...(data ? [{ volumeName: data.name, containerPath: IMAGE_PATHS.data }] : []),
            ...(withHtpasswd ? [{ hostPath: HOST_PATHS.authDir, containerPath: IMAGE_PATHS.authDir, readOnly: true }] : []),
          ],
          uploads: [{ file: IMAGE_PATHS.config, content: configText }],
          networksAdvanced: net(containerName),
          healthcheck: healthcheck(SERVER_HEALTHCHECK),
          memory: toMb(memory),
        },
        { ...child, dependsOn: [...after, this.image, ...(this.redis ? [this.redis] : [])] },
      );
    };
    this.registries = names.private.map((n) => server(n, args.privateConfig, args.privateEnv, 'privateData', cfg.private.memory, true));
    this.registryCaches = names.mirror.map((n) =>
      server(n, args.mirrorConfig, args.mirrorEnv, 'mirrorData', cfg.mirror.memory, cfg.mirror.requireAuth),
    );
    this.registry = this.registries[0];
    this.registryCache = this.registryCaches[0];
    this.registerOutputs({});
  }
}
