// The containers of the stack, described once as plain data: image, command,
// environment, mounts, uploaded files, networks, published ports, restart
// policy, healthcheck, sysctls, user and limits. The Pulumi component
// (components/containers.ts) and the VPS twin (twin/containers.ts) both turn
// this description into containers, so what the twin proves is what
// `pulumi up` deploys.
import { imageRefs, type StackConfig } from '../config.ts';
import type { RenderedStack } from './index.ts';
import { CADDY_ADMIN_DIR, CADDY_HEALTH_PORT, CONTAINER_NAMES, HOST_PATHS, IMAGE_PATHS, REDIS_PATHS, VOLUME_NAMES } from './layout.ts';
import { stackContainers } from './ops.ts';

export type ContainerRole = 'caddy' | 'private' | 'mirror' | 'redis';

export interface VolumeMount {
  type: 'volume';
  /** A named volume (VOLUME_NAMES). */
  source: string;
  target: string;
  readOnly?: boolean;
}

export interface BindMount {
  type: 'bind';
  /** A path on the VPS. */
  source: string;
  target: string;
  readOnly?: boolean;
}

export interface Upload {
  /** Path inside the container. */
  path: string;
  /** The rendered file (a key of RenderedStack.files) whose content goes there. */
  file: string;
  /** Octal mode. */
  mode: string;
}

export interface Healthcheck {
  test: string[];
  interval: string;
  timeout: string;
  startPeriod: string;
  retries: number;
}

export interface PublishedPort {
  internal: number;
  external: number;
  protocol: 'tcp' | 'udp';
}

export interface ContainerSpec {
  name: string;
  role: ContainerRole;
  /** Which image: the server image built from server/Dockerfile, or a pulled one by reference. */
  image: { kind: 'server' } | { kind: 'pulled'; ref: string };
  command?: string[];
  /** Which rendered environment the container gets (secrets): RenderedStack's privateEnv, mirrorEnv or redisEnv. */
  env?: 'privateEnv' | 'mirrorEnv' | 'redisEnv';
  mounts: Array<VolumeMount | BindMount>;
  uploads: Upload[];
  /** The stack's network, with the container's own name as its alias. */
  network: { name: string; aliases: string[] };
  ports: PublishedPort[];
  restart: 'unless-stopped';
  healthcheck: Healthcheck;
  /** Network-namespaced kernel settings: connections to clients and upstreams end in the container's namespace, not the host's. */
  sysctls: Record<string, string>;
  /** Run as (default: the image's user). */
  user?: string;
  memoryBytes: number;
  nofile: number;
  /** An init process reaps the children of the server's ops commands. */
  init: boolean;
  log: { driver: 'json-file'; maxSize: string; maxFile: number };
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

export interface ContainerSpecOptions {
  /** Namespaced sysctls for the containers that hold client and upstream connections (Caddy and the registries). */
  sysctls?: Record<string, string>;
}

/** The rendered files each role's container gets, in the order they are uploaded. */
export function uploadsFor(role: ContainerRole, rendered: Pick<RenderedStack, 'files'>): Upload[] {
  const pick = (names: string[]) =>
    names
      .filter((n) => rendered.files[n])
      .map((n) => {
        const f = rendered.files[n];
        const colon = f.target.indexOf(':');
        return { path: f.target.slice(colon + 1), file: n, mode: f.mode };
      });
  switch (role) {
    case 'caddy':
      return pick(['Caddyfile', 'caddy/mir-origin.crt', 'caddy/mir-origin.key', 'caddy/acme-root.crt']);
    case 'private':
      return pick(['registry/config.yml']);
    case 'mirror':
      return pick(['registry-cache/config.yml']);
    case 'redis':
      return pick(['redis/redis.conf']);
  }
}

/** Every container of the stack, in the order they are created. */
export function stackContainerSpecs(cfg: StackConfig, rendered: Pick<RenderedStack, 'files'>, o: ContainerSpecOptions = {}): ContainerSpec[] {
  const names = stackContainers(cfg);
  const sysctls = o.sysctls ?? {};
  const common = {
    restart: 'unless-stopped' as const,
    nofile: 65536,
    init: true,
    log: { driver: 'json-file' as const, maxSize: cfg.docker.logMaxSize, maxFile: cfg.docker.logMaxFile },
    ports: [] as PublishedPort[],
  };
  const net = (alias: string) => ({ name: cfg.docker.network, aliases: [alias] });
  const health = (test: string[]): Healthcheck => ({ test, interval: '30s', timeout: '5s', startPeriod: '20s', retries: 3 });
  const specs: ContainerSpec[] = [];

  specs.push({
    ...common,
    name: names.caddy,
    role: 'caddy',
    image: { kind: 'pulled', ref: imageRefs(cfg).caddy },
    mounts: [
      { type: 'volume', source: VOLUME_NAMES.caddyData, target: '/data' },
      { type: 'volume', source: VOLUME_NAMES.caddyConfig, target: '/config' },
      { type: 'volume', source: VOLUME_NAMES.caddyAdmin, target: CADDY_ADMIN_DIR },
    ],
    uploads: uploadsFor('caddy', rendered),
    network: net(names.caddy),
    ports: [
      { internal: 80, external: 80, protocol: 'tcp' },
      { internal: 443, external: 443, protocol: 'tcp' },
      { internal: 443, external: 443, protocol: 'udp' },
    ],
    healthcheck: health(CADDY_HEALTHCHECK),
    sysctls,
    memoryBytes: cfg.docker.caddyMemory,
  });

  if (names.redis) {
    specs.push({
      ...common,
      name: names.redis,
      role: 'redis',
      image: { kind: 'pulled', ref: cfg.redis.image },
      command: ['redis-server', REDIS_PATHS.config],
      env: 'redisEnv',
      // No ports: only the containers on the internal network reach it.
      mounts: cfg.redis.persistence ? [{ type: 'volume', source: VOLUME_NAMES.redisData, target: REDIS_PATHS.data }] : [],
      uploads: uploadsFor('redis', rendered),
      network: net(names.redis),
      healthcheck: { test: REDIS_HEALTHCHECK, interval: '10s', timeout: '3s', startPeriod: '5s', retries: 3 },
      sysctls: {},
      memoryBytes: cfg.redis.memory,
    });
  }

  const server = (name: string, role: 'private' | 'mirror'): ContainerSpec => {
    const filesystem = cfg.derived.storage[role] === 'filesystem';
    const withHtpasswd = role === 'private' || cfg.mirror.requireAuth;
    return {
      ...common,
      name,
      role,
      image: { kind: 'server' },
      env: role === 'private' ? 'privateEnv' : 'mirrorEnv',
      mounts: [
        ...(filesystem
          ? [{ type: 'volume' as const, source: role === 'private' ? VOLUME_NAMES.privateData : VOLUME_NAMES.mirrorData, target: IMAGE_PATHS.data }]
          : role === 'private' && cfg.access
            ? // The token signing keys (render/registry-config.ts): shared by the replicas, kept across deploys.
              [{ type: 'volume' as const, source: VOLUME_NAMES.privateAuth, target: IMAGE_PATHS.data }]
            : []),
        // The directory, not the file: a replaced htpasswd shows up inside, and the server reloads it.
        ...(withHtpasswd ? [{ type: 'bind' as const, source: HOST_PATHS.authDir, target: IMAGE_PATHS.authDir, readOnly: true }] : []),
      ],
      uploads: uploadsFor(role, rendered),
      network: net(name),
      healthcheck: health(SERVER_HEALTHCHECK),
      sysctls,
      user: `${IMAGE_PATHS.uid}:${IMAGE_PATHS.gid}`,
      memoryBytes: role === 'private' ? cfg.private.memory : cfg.mirror.memory,
    };
  };
  for (const n of names.private) specs.push(server(n, 'private'));
  for (const n of names.mirror) specs.push(server(n, 'mirror'));
  return specs;
}

/** The named volumes the containers use, each once. */
export function specVolumes(specs: ContainerSpec[]): string[] {
  const out = new Set<string>();
  for (const s of specs) for (const m of s.mounts) if (m.type === 'volume') out.add(m.source);
  return [...out];
}

/** Docker's memory limit in MiB as the provider takes it (at least 6, Docker's floor). */
export const memoryMiB = (bytes: number) => Math.max(6, Math.floor(bytes / 1024 ** 2));

/** A container's CONTAINER_NAMES entry for a role (the first replica). */
export const ROLE_BASE_NAME: Record<ContainerRole, string> = {
  caddy: CONTAINER_NAMES.caddy,
  private: CONTAINER_NAMES.private,
  mirror: CONTAINER_NAMES.mirror,
  redis: CONTAINER_NAMES.redis,
};
