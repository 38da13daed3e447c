// The containers on the VPS (through the Docker provider over SSH), made from
// the one description in render/containers.ts: the server image built from
// server/Dockerfile, the stack's network, named volumes, and each container
// with its rendered files uploaded into it. The VPS twin makes the same
// containers from the same description (twin/containers.ts).
//
// A config change replaces only the container that uses it. Volumes are kept
// when the stack is destroyed (retainOnDelete): they hold the registries' data.
import * as docker from '@pulumi/docker';
import * as pulumi from '@pulumi/pulumi';
import type { StackConfig } from '../config.ts';
import { type ContainerSpec, memoryMiB, stackContainerSpecs, specVolumes } from '../render/containers.ts';
import type { RenderedStack } from '../render/index.ts';

export interface RegistryContainersArgs {
  config: StackConfig;
  /** Repository root (the build context). */
  contextDir: string;
  /** The server image name with its content tag. */
  imageName: string;
  /** Build arguments of server/Dockerfile (the Node base image). */
  buildArgs?: Record<string, string>;
  /** The stack rendered with placeholder secrets: the containers' shape, and the files that hold no secret (shown in previews). */
  plain: RenderedStack;
  /** The stack rendered with the real secrets. */
  rendered: pulumi.Output<RenderedStack>;
  /** Namespaced sysctls for Caddy and the registries. */
  sysctls?: Record<string, string>;
  /** Host setup steps everything here waits for (daemon.json, firewall). */
  after?: pulumi.Resource[];
}

export class RegistryContainers extends pulumi.ComponentResource {
  readonly image: docker.Image;
  readonly pulledImages: Record<string, docker.RemoteImage> = {};
  readonly network: docker.Network;
  readonly volumes: Record<string, docker.Volume> = {};
  /** Every container, by container name. */
  readonly containers: Record<string, docker.Container> = {};

  constructor(name: string, args: RegistryContainersArgs, opts?: pulumi.ComponentResourceOptions) {
    super('registry-stack:index:RegistryContainers', name, {}, opts);
    const cfg = args.config;
    const after = args.after ?? [];
    const child = { parent: this, dependsOn: after };
    const specs = stackContainerSpecs(cfg, args.plain, { sysctls: args.sysctls });

    this.image = new docker.Image(
      `${name}-server-image`,
      {
        imageName: args.imageName,
        build: { context: args.contextDir, dockerfile: `${args.contextDir}/server/Dockerfile`, args: args.buildArgs ?? {} },
        skipPush: true,
        buildOnPreview: false,
      },
      child,
    );
    for (const s of specs) {
      if (s.image.kind !== 'pulled' || this.pulledImages[s.image.ref]) continue;
      const resourceName = s.role === 'caddy' ? `${name}-caddy-image` : `${name}-${s.role}-image`;
      this.pulledImages[s.image.ref] = new docker.RemoteImage(resourceName, { name: s.image.ref, keepLocally: true }, child);
    }
    this.network = new docker.Network(
      `${name}-network`,
      { name: cfg.docker.network, driver: 'bridge', ipamConfigs: [{ subnet: cfg.docker.subnet }] },
      child,
    );
    for (const v of specVolumes(specs)) {
      this.volumes[v] = new docker.Volume(`${name}-${v.replace(/_/g, '-')}`, { name: v }, { ...child, retainOnDelete: true });
    }

    const create = (s: ContainerSpec, deps: pulumi.Resource[]) => {
      // Files holding a secret come from the real render, as secret outputs; the others are
      // plain strings, so a preview shows their diffs.
      const uploads = s.uploads.map((u) => ({
        file: u.path,
        permissions: u.mode,
        content: args.plain.files[u.file].secret ? pulumi.secret(args.rendered.apply((r) => r.files[u.file].content)) : args.plain.files[u.file].content,
      }));
      const envs = s.env ? pulumi.secret(args.rendered.apply((r) => Object.entries(r[s.env!] ?? {}).map(([k, v]) => `${k}=${v}`))) : undefined;
      const image = s.image.kind === 'server' ? this.image.imageName : this.pulledImages[s.image.ref].imageId;
      const volumes = s.mounts.map((m) =>
        m.type === 'volume'
          ? { volumeName: this.volumes[m.source].name, containerPath: m.target, ...(m.readOnly ? { readOnly: true } : {}) }
          : { hostPath: m.source, containerPath: m.target, ...(m.readOnly ? { readOnly: true } : {}) },
      );
      return new docker.Container(
        `${name}-${s.name}`,
        {
          name: s.name,
          image,
          ...(s.command ? { command: s.command } : {}),
          ...(envs ? { envs } : {}),
          // As before the one description: Redis without a volume has no `volumes` key (the registries always had one), so existing stacks see no diff.
          ...(s.mounts.length || s.role !== 'redis' ? { volumes } : {}),
          uploads,
          networksAdvanced: [{ name: this.network.name, aliases: s.network.aliases }],
          ...(s.ports.length ? { ports: s.ports.map((p) => ({ internal: p.internal, external: p.external, ...(p.protocol === 'udp' ? { protocol: 'udp' } : {}) })) } : {}),
          restart: s.restart,
          healthcheck: { tests: s.healthcheck.test, interval: s.healthcheck.interval, timeout: s.healthcheck.timeout, startPeriod: s.healthcheck.startPeriod, retries: s.healthcheck.retries },
          ...(Object.keys(s.sysctls).length ? { sysctls: s.sysctls } : {}),
          ...(s.user ? { user: s.user } : {}),
          memory: memoryMiB(s.memoryBytes),
          ulimits: [{ name: 'nofile', soft: s.nofile, hard: s.nofile }],
          init: s.init,
          logDriver: s.log.driver,
          logOpts: { 'max-size': s.log.maxSize, 'max-file': String(s.log.maxFile) },
          mustRun: true,
        },
        { ...child, dependsOn: [...after, ...deps] },
      );
    };
    // Specs come in creation order: the registries after Redis, whose state they share.
    const redis = specs.find((x) => x.role === 'redis');
    for (const s of specs) {
      const deps: pulumi.Resource[] = s.image.kind === 'server' ? [this.image] : [];
      if (redis && s.image.kind === 'server') deps.push(this.containers[redis.name]);
      this.containers[s.name] = create(s, deps);
    }
    this.registerOutputs({});
  }
}
