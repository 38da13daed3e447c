// The stack's containers on the twin's engine, from the same description the
// Pulumi component uses (render/containers.ts). Each container carries a label
// with the hash of everything it was made from (settings, uploaded files,
// image ID); a second `up` keeps a container whose hash is unchanged and
// replaces one whose hash changed, as `pulumi up` replaces a container whose
// inputs changed.
//
// Where the twin differs from the VPS, and only there:
//   - published ports are bound to 127.0.0.1 on ports the engine picks (the
//     twin shares this machine: 80 and 443 are not ours to take);
//   - Caddy also joins the twin's "internet" network at a fixed address: that
//     address is the VPS's public IP, where the edge twin and pebble reach it;
//   - the open-files limit is capped at this machine's hard limit: raising it
//     needs CAP_SYS_RESOURCE, which the twin's sandbox may not have.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseDuration } from '../../server/src/config/units.ts';
import type { StackConfig } from '../config.ts';
import { type ContainerSpec, memoryMiB } from '../render/containers.ts';
import type { RenderedStack } from '../render/index.ts';
import type { DockerCli } from './docker.ts';
import { type EngineApi, EngineApiError } from './engine-api.ts';

export const SPEC_LABEL = 'registry-stack.twin.spec';

export interface PublicAttachment {
  network: string;
  ip: string;
  aliases: string[];
}

export interface ApplyOptions {
  /** The server image (name:tag) built from server/Dockerfile. */
  serverImage: string;
  /** Extra networks a container joins, by container name (Caddy: the twin's internet). */
  publicAttachments?: Record<string, PublicAttachment>;
  /**
   * More names for a container on the stack's network, by container name: the twin's stand-in for
   * public DNS (on the VPS, the ops jobs reach https://dcr.<domain> through the public address).
   */
  extraAliases?: Record<string, string[]>;
  log?: (line: string) => void;
}

export interface ApplyResult {
  created: string[];
  kept: string[];
  started: string[];
}

const ns = (d: string) => {
  const ms = parseDuration(d);
  if (ms === undefined) throw new Error(`bad duration ${d}`);
  return Math.round(ms * 1e6);
};

/** The Engine API's create body for a spec: the twin's mapping of the one description. */
/** This process's hard limit of open files: a container cannot be given more without CAP_SYS_RESOURCE. */
export function hardNofileLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const hard = line?.trim().split(/\s+/)[4];
  return hard && /^\d+$/.test(hard) ? Number(hard) : Number.MAX_SAFE_INTEGER;
}

export function createBody(spec: ContainerSpec, env: Record<string, string>, image: string, nofileCap = hardNofileLimit()) {
  const nofile = Math.min(spec.nofile, nofileCap);
  const exposed: Record<string, object> = {};
  const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
  for (const p of spec.ports) {
    const key = `${p.internal}/${p.protocol}`;
    exposed[key] = {};
    bindings[key] = [{ HostIp: '127.0.0.1', HostPort: '' }];
  }
  return {
    Image: image,
    ...(spec.command ? { Cmd: spec.command } : {}),
    Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    ...(spec.user ? { User: spec.user } : {}),
    ExposedPorts: exposed,
    Healthcheck: {
      Test: spec.healthcheck.test,
      Interval: ns(spec.healthcheck.interval),
      Timeout: ns(spec.healthcheck.timeout),
      StartPeriod: ns(spec.healthcheck.startPeriod),
      Retries: spec.healthcheck.retries,
    },
    HostConfig: {
      Mounts: spec.mounts.map((m) => ({ Type: m.type, Source: m.source, Target: m.target, ReadOnly: Boolean(m.readOnly) })),
      RestartPolicy: { Name: spec.restart },
      Init: spec.init,
      Sysctls: spec.sysctls,
      Memory: memoryMiB(spec.memoryBytes) * 1024 ** 2,
      Ulimits: [{ Name: 'nofile', Soft: nofile, Hard: nofile }],
      LogConfig: { Type: spec.log.driver, Config: { 'max-size': spec.log.maxSize, 'max-file': String(spec.log.maxFile) } },
      PortBindings: bindings,
    },
    NetworkingConfig: { EndpointsConfig: { [spec.network.name]: { Aliases: spec.network.aliases } } },
  };
}

/** A tar of the uploads (paths from /, with their modes), made with tar(1). */
function uploadsTar(spec: ContainerSpec, rendered: RenderedStack): Buffer | undefined {
  if (spec.uploads.length === 0) return undefined;
  const stage = mkdtempSync(path.join(tmpdir(), 'twin-upload-'));
  try {
    for (const u of spec.uploads) {
      const file = path.join(stage, u.path);
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, rendered.files[u.file].content);
      chmodSync(file, Number.parseInt(u.mode, 8));
    }
    // Only the files, not their parent directories: the image's directories keep their owners and modes.
    const rel = spec.uploads.map((u) => `.${u.path}`);
    return execFileSync('tar', ['-C', stage, '--owner=0', '--group=0', '-cf', '-', ...rel], { maxBuffer: 64 * 1024 ** 2 });
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

interface Inspect {
  Id: string;
  Config: { Labels: Record<string, string> | null };
  State: { Running: boolean; Status: string };
}

async function inspect(api: EngineApi, name: string): Promise<Inspect | undefined> {
  try {
    return await api.call<Inspect>('GET', `/containers/${name}/json`);
  } catch (err) {
    if (err instanceof EngineApiError && err.status === 404) return undefined;
    throw err;
  }
}

/** The stack's network (with the config's subnet) and named volumes, made when missing. */
export async function ensureNetworkAndVolumes(docker: DockerCli, cfg: StackConfig, volumes: string[]): Promise<void> {
  const nets = (await docker.out(['network', 'ls', '--format', '{{.Name}}'])).split('\n');
  if (!nets.includes(cfg.docker.network)) {
    await docker.run(['network', 'create', '--driver', 'bridge', '--subnet', cfg.docker.subnet, cfg.docker.network]);
  }
  for (const v of volumes) await docker.run(['volume', 'create', v]);
}

export async function applyContainers(
  api: EngineApi,
  docker: DockerCli,
  specs: ContainerSpec[],
  rendered: RenderedStack,
  o: ApplyOptions,
): Promise<ApplyResult> {
  const result: ApplyResult = { created: [], kept: [], started: [] };
  for (const spec of specs) {
    const image = spec.image.kind === 'server' ? o.serverImage : spec.image.ref;
    const imageId = await docker.out(['image', 'inspect', '--format', '{{.Id}}', image]);
    const env = spec.env ? (rendered[spec.env] ?? {}) : {};
    const aliases = o.extraAliases?.[spec.name];
    const body = createBody(aliases ? { ...spec, network: { ...spec.network, aliases: [...spec.network.aliases, ...aliases] } } : spec, env, image);
    const tar = uploadsTar(spec, rendered);
    const attach = o.publicAttachments?.[spec.name];
    const hash = createHash('sha256')
      .update(JSON.stringify({ body, imageId, attach, uploads: spec.uploads.map((u) => [u.path, u.mode, rendered.files[u.file].content]) }))
      .digest('hex');

    const existing = await inspect(api, spec.name);
    if (existing && existing.Config.Labels?.[SPEC_LABEL] === hash) {
      if (existing.State.Running) {
        result.kept.push(spec.name);
      } else {
        await api.call('POST', `/containers/${existing.Id}/start`);
        result.started.push(spec.name);
      }
      continue;
    }
    if (existing) {
      o.log?.(`replacing ${spec.name} (its description changed)`);
      await api.call('DELETE', `/containers/${existing.Id}?force=true&v=false`);
    } else {
      o.log?.(`creating ${spec.name}`);
    }
    const created = await api.call<{ Id: string }>('POST', `/containers/create?name=${encodeURIComponent(spec.name)}`, {
      ...body,
      Labels: { [SPEC_LABEL]: hash },
    });
    if (tar) await api.call('PUT', `/containers/${created.Id}/archive?path=/`, undefined, { raw: tar, contentType: 'application/x-tar' });
    if (attach) {
      await api.call('POST', `/networks/${attach.network}/connect`, {
        Container: created.Id,
        EndpointConfig: { IPAMConfig: { IPv4Address: attach.ip }, Aliases: attach.aliases },
      });
    }
    await api.call('POST', `/containers/${created.Id}/start`);
    result.created.push(spec.name);
  }
  return result;
}
