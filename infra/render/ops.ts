// The ops jobs on the VPS: a crontab (/etc/cron.d format) that runs
// `node --enable-source-maps /opt/registry-stack/dist/scripts/<job>.js` for each job on its schedule.
// The host needs no Node.js: the wrapper runs the command inside the server
// image (which has Node and the compiled server and scripts/ itself, so the
// jobs always run the scripts of the image that is deployed), with the Docker
// socket, the data volumes (read-only) and the containers' network, so the
// scripts can check containers, disk usage and the admin endpoints.
//
// With replicas, GC and prune call one replica's admin endpoint (the first):
// the server coordinates them through Redis (one GC at a time across the
// replicas, pins of blobs being pushed), so asking every replica would only
// queue the same work. The monitor knows every container.
import type { StackConfig } from '../config.ts';
import { CADDY_ADMIN_DIR, CADDY_ADMIN_SOCKET, CONTAINER_NAMES, HOST_PATHS, IMAGE_PATHS, OPS_JOBS, replicaNames, VOLUME_NAMES } from './layout.ts';

export interface OpsMount {
  volume: string;
  path: string;
}

/** The data volumes of a default (filesystem) stack, as the ops container sees them. */
export const OPS_DATA_MOUNTS: OpsMount[] = [
  { volume: VOLUME_NAMES.privateData, path: `/data/${CONTAINER_NAMES.private}` },
  { volume: VOLUME_NAMES.mirrorData, path: `/data/${CONTAINER_NAMES.mirror}` },
];

/**
 * The volumes the ops container sees (read-only), for the monitor's disk checks:
 * the registries' data volumes (filesystem storage only), Redis's when it keeps
 * data. A stack with everything in R2 still watches the disk Docker's volumes
 * live on (images, logs), through the caddy_data volume.
 */
export function opsDataMounts(cfg: StackConfig): OpsMount[] {
  const mounts: OpsMount[] = [];
  if (cfg.derived.storage.private === 'filesystem') mounts.push(OPS_DATA_MOUNTS[0]);
  if (cfg.derived.storage.mirror === 'filesystem') mounts.push(OPS_DATA_MOUNTS[1]);
  if (cfg.derived.redis && cfg.redis.persistence) mounts.push({ volume: VOLUME_NAMES.redisData, path: `/data/${CONTAINER_NAMES.redis}` });
  if (mounts.length === 0) mounts.push({ volume: VOLUME_NAMES.caddyData, path: `/data/${CONTAINER_NAMES.caddy}` });
  return mounts;
}

/** Every container of the stack, by role. */
export function stackContainers(cfg: StackConfig): { caddy: string; private: string[]; mirror: string[]; redis?: string } {
  return {
    caddy: CONTAINER_NAMES.caddy,
    private: replicaNames(CONTAINER_NAMES.private, cfg.replicas.private),
    mirror: replicaNames(CONTAINER_NAMES.mirror, cfg.replicas.mirror),
    ...(cfg.derived.redis ? { redis: CONTAINER_NAMES.redis } : {}),
  };
}

/** The container names in a flat list: caddy, the private replicas, the mirror replicas, redis. */
export function allContainerNames(cfg: StackConfig): string[] {
  const c = stackContainers(cfg);
  return [c.caddy, ...c.private, ...c.mirror, ...(c.redis ? [c.redis] : [])];
}

export interface OpsJob {
  name: string;
  schedule: string;
}

/** The enabled jobs with their schedules, from the stack config. */
export function opsJobs(cfg: StackConfig): OpsJob[] {
  return OPS_JOBS.map((j) => ({ name: j.name, schedule: cfg.cron[j.schedule] })).filter((j) => j.schedule !== 'off');
}

/** Where the image holds the ops scripts, compiled (server/Dockerfile builds scripts/<job>.ts to dist/scripts/<job>.js). */
const IMAGE_SCRIPTS = `${IMAGE_PATHS.app}/dist/scripts`;

/** The command a job runs (inside the server image); stack traces name the TypeScript sources. */
export function jobCommand(job: string): string {
  return `node --enable-source-maps ${IMAGE_SCRIPTS}/${job}.js`;
}

export function renderCrontab(jobs: OpsJob[]): string {
  const lines = [
    '# Rendered by registry-stack (infra/render/ops.ts): the ops jobs. Do not edit: `pulumi up` overwrites it.',
    '# Each job runs `node --enable-source-maps /opt/registry-stack/dist/scripts/<job>.js` inside the server image (registry-stack-ops);',
    '# flock keeps a slow run from overlapping the next one.',
    'SHELL=/bin/sh',
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    'MAILTO=""',
    '',
  ];
  for (const job of jobs) {
    if (!/^[a-z0-9-]+$/.test(job.name)) throw new Error(`bad job name ${job.name}`);
    lines.push(
      `${job.schedule} root flock -n /run/lock/registry-stack-${job.name}.lock ${HOST_PATHS.opsWrapper} ${jobCommand(job.name)} >>${HOST_PATHS.logDir}/${job.name}.log 2>&1`,
    );
  }
  return `${lines.join('\n')}\n`;
}

export interface OpsWrapperOptions {
  /** The server image (name:tag) the jobs run in. */
  image: string;
  network: string;
  /** Volumes mounted read-only for the disk checks (default: both registries' data volumes). */
  mounts?: OpsMount[];
  /**
   * A PEM bundle on the host the jobs trust besides the public roots (NODE_EXTRA_CA_CERTS), for
   * certificates from a private CA: the twin's ACME CA and web PKI, or a company's own.
   */
  extraCaFile?: string;
}

/** Where the wrapper mounts OpsWrapperOptions.extraCaFile in the jobs' container. */
export const OPS_EXTRA_CA = '/etc/ssl/registry-stack-extra-ca.pem';

export function renderOpsWrapper(o: OpsWrapperOptions): string {
  if (!/^[a-zA-Z0-9._/:@-]+$/.test(o.image)) throw new Error(`bad image name ${o.image}`);
  const mounts = o.mounts ?? OPS_DATA_MOUNTS;
  if (o.extraCaFile !== undefined && !/^\/[a-zA-Z0-9_./-]+$/.test(o.extraCaFile)) throw new Error(`bad CA file path ${o.extraCaFile}`);
  const trust = o.extraCaFile ? [`  -v ${o.extraCaFile}:${OPS_EXTRA_CA}:ro \\`, `  -e NODE_EXTRA_CA_CERTS=${OPS_EXTRA_CA} \\`] : [];
  for (const m of mounts) {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(m.volume) || !/^\/[a-zA-Z0-9_./-]+$/.test(m.path)) throw new Error(`bad mount ${m.volume}:${m.path}`);
  }
  return `#!/bin/sh
# Rendered by registry-stack (infra/render/ops.ts).
# Runs one ops command inside the registry server image, so the host needs no Node.js:
#   registry-stack-ops node --enable-source-maps ${IMAGE_SCRIPTS}/monitor.js [--dry-run]
set -eu

if [ "$#" -eq 0 ]; then
  echo "usage: $(basename "$0") COMMAND [ARGS...]" >&2
  exit 64
fi

# root in the container: the jobs use the Docker socket (root-equivalent anyway)
# and Caddy's admin socket.
sock=${HOST_PATHS.dockerSocket}

# --pull never: the image is built on this host; if it is gone, fail rather
# than fetch something of that name from elsewhere.
exec docker run --rm --pull never \\
  --user root \\
  --network ${o.network} \\
  --env-file ${HOST_PATHS.opsEnv} \\
  --memory 256m \\
  --log-driver none \\
  -v "$sock:$sock" \\
${mounts.map((m) => `  -v ${m.volume}:${m.path}:ro \\`).join('\n')}
  -v ${VOLUME_NAMES.caddyAdmin}:${CADDY_ADMIN_DIR} \\
${trust.map((t) => `${t}\n`).join('')}  -w ${IMAGE_PATHS.app} \\
  ${o.image} "$@"
`;
}

/**
 * The environment of the ops scripts (docker --env-file format), in the
 * variables scripts/*.ts read as fallbacks for their flags.
 */
export function opsEnv(cfg: StackConfig, secrets: { adminToken: string }): Record<string, string> {
  const c = stackContainers(cfg);
  // One replica of each: GC and prune are coordinated through Redis on the server side.
  const privateAdmin = `http://${c.private[0]}:${IMAGE_PATHS.adminPort}`;
  const mirrorAdmin = `http://${c.mirror[0]}:${IMAGE_PATHS.adminPort}`;
  const memoryMiB = Math.floor((Math.min(cfg.private.memory, cfg.mirror.memory) / 1024 ** 2) * 0.9);
  const env: Record<string, string> = {
    REGISTRY_ADMIN_TOKEN: secrets.adminToken,
    GC_ADMIN_URLS: `private=${privateAdmin},mirror=${mirrorAdmin}`,
    GC_DELETE_UNTAGGED: String(cfg.private.gcDeleteUntagged),
    PRUNE_ADMIN_URLS: `mirror=${mirrorAdmin}`,
    MONITOR_DOCKER_SOCKET: HOST_PATHS.dockerSocket,
    MONITOR_CONTAINERS: allContainerNames(cfg).join(','),
    MONITOR_MEMORY_CONTAINERS: [...c.private, ...c.mirror].join(','),
    MONITOR_MEMORY_THRESHOLD: String(memoryMiB),
    MONITOR_PATHS: opsDataMounts(cfg).map((m) => m.path).join(','),
    MONITOR_DISK_THRESHOLD: String(cfg.alerts.diskPercent),
    MONITOR_URLS: `https://${cfg.derived.dcrHost},https://${cfg.derived.mirHost}`,
    // Caddy's certificates, reached on the containers' network: dcr's comes from ACME (Caddy renews it,
    // the job reloads Caddy when it lags); mir's is the Cloudflare Origin CA certificate the program
    // requested (checked for days left only: `pulumi up` with a new originCertGeneration replaces it).
    RENEW_CERT_HOSTS: cfg.derived.dcrHost,
    RENEW_CERT_ORIGIN_CA_HOSTS: cfg.derived.mirHost,
    RENEW_CERT_CONNECT_TO: `${CONTAINER_NAMES.caddy}:443`,
    RENEW_CERT_DAYS: String(cfg.alerts.certMinDays),
    CADDY_ADMIN: `unix/${CADDY_ADMIN_SOCKET}`,
  };
  if (cfg.alertWebhook) env.ALERT_WEBHOOK = cfg.alertWebhook;
  return env;
}

export function renderEnvFile(env: Record<string, string>, comment: string): string {
  const lines = [`# ${comment}`];
  for (const [k, v] of Object.entries(env)) {
    if (/[\r\n]/.test(v)) throw new Error(`${k}: env-file values cannot span lines`);
    lines.push(`${k}=${v}`);
  }
  return `${lines.join('\n')}\n`;
}

export function renderLogrotate(): string {
  return `# Rendered by registry-stack (infra/render/ops.ts): the ops jobs' logs.
${HOST_PATHS.logDir}/*.log {
	weekly
	rotate 8
	compress
	delaycompress
	missingok
	notifempty
	copytruncate
}
`;
}
