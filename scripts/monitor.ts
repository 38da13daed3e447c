// monitor: is the stack up? Run from cron every few minutes.
//
//   containers  each expected container exists, is running, and is not unhealthy
//               (Docker Engine API over its unix socket); a stopped, dead or
//               unhealthy one is restarted (POST /containers/<id>/restart), a
//               paused one unpaused — unless --dry-run
//   memory      working-set memory of the registry containers under --memory-threshold MB
//   disk        used space and inodes of each data volume (statfs) under --disk-threshold %
//   http        <url>/v2/ answers 200 or 401 from the registry, <url>/readyz answers 200,
//               over HTTPS with normal certificate checks
//
// Any failed check: error log line, alert (when a webhook is set), exit 1.
import { statfs } from 'node:fs/promises';
import * as path from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import {
  addExitCodeHelp,
  type CommonOptions,
  createProgram,
  envList,
  envValue,
  formatBytes,
  listOption,
  type Outcome,
  percent,
  positiveNumber,
  runScript,
  UsageError,
  readCaFile,
} from './lib/cli.ts';
import {
  type ContainerSummary,
  DEFAULT_DOCKER_SOCKET,
  DockerClient,
  findContainer,
  healthFromStatus,
} from './lib/docker.ts';
import { describeError, httpRequest, parseResolve } from './lib/http.ts';
import type { Logger } from './lib/log.ts';
import { redactUrl } from './lib/redact.ts';

const CHECKS = ['containers', 'memory', 'disk', 'http'] as const;
type CheckKind = (typeof CHECKS)[number];

const DEFAULT_CONTAINERS = ['caddy', 'registry', 'registry-cache'];
const DEFAULT_MEMORY_CONTAINERS = ['registry', 'registry-cache'];
const DEFAULT_PATHS = ['/var/lib/docker'];

interface MonitorOptions extends CommonOptions {
  dockerSocket: string;
  container?: string[];
  memoryContainer?: string[];
  memoryThreshold: number;
  path?: string[];
  diskThreshold: number;
  url?: string[];
  caFile?: string;
  resolve?: string[];
  skip?: string[];
}

interface CheckResult {
  check: CheckKind;
  target: string;
  ok: boolean;
  /** One line for the summary, e.g. "unhealthy (restarted)". */
  message: string;
  /** ok but worth a look (e.g. health check still starting). */
  warning?: boolean;
  [field: string]: unknown;
}

const program = createProgram(
  'monitor',
  'Check the registry stack on this host: containers, memory, disk, and the public endpoints. Restarts a stopped or unhealthy container.',
  'MONITOR',
  10,
);
program
  .addOption(
    new Option('--docker-socket <path>', "Docker Engine API socket (also read from DOCKER_HOST=unix://…)")
      .env('MONITOR_DOCKER_SOCKET')
      .default(DEFAULT_DOCKER_SOCKET),
  )
  .addOption(
    listOption(
      '--container <name>',
      `a container that must be running and healthy; repeatable (default: ${DEFAULT_CONTAINERS.join(', ')})`,
      'MONITOR_CONTAINERS',
    ),
  )
  .addOption(
    listOption(
      '--memory-container <name>',
      `a container whose memory is checked; repeatable (default: ${DEFAULT_MEMORY_CONTAINERS.join(', ')})`,
      'MONITOR_MEMORY_CONTAINERS',
    ),
  )
  .addOption(
    new Option('--memory-threshold <MB>', 'alert when a memory container uses this many MiB or more')
      .env('MONITOR_MEMORY_THRESHOLD')
      .default(1024)
      .argParser(positiveNumber('--memory-threshold')),
  )
  .addOption(
    listOption('--path <dir>', `a data volume whose disk usage is checked; repeatable (default: ${DEFAULT_PATHS.join(', ')})`, 'MONITOR_PATHS'),
  )
  .addOption(
    new Option('--disk-threshold <percent>', 'alert when space or inodes used reach this percentage')
      .env('MONITOR_DISK_THRESHOLD')
      .default(85)
      .argParser(percent('--disk-threshold')),
  )
  .addOption(
    listOption('--url <url>', 'public base URL of a registry host, e.g. https://dcr.example.com; repeatable', 'MONITOR_URLS'),
  )
  .addOption(new Option('--ca-file <path>', 'PEM CA certificate to trust in addition to the system roots').env('MONITOR_CA_FILE'))
  .addOption(
    listOption('--resolve <host:port:addr>', 'connect to addr for host:port, as curl --resolve (e.g. check the origin, not the CDN); repeatable', 'MONITOR_RESOLVE'),
  )
  .addOption(
    listOption('--skip <check>', `skip a group of checks: ${CHECKS.join(', ')}; repeatable`, 'MONITOR_SKIP').argParser(
      (value: string, previous: string[] | undefined) => {
        const items = value.split(',').map((s) => s.trim()).filter(Boolean);
        for (const i of items) {
          if (!(CHECKS as readonly string[]).includes(i)) throw new InvalidArgumentError(`--skip: unknown check ${i} (${CHECKS.join(', ')})`);
        }
        return [...(previous ?? []), ...items];
      },
    ),
  );
program.addHelpText(
  'after',
  `
Environment (fallbacks for the flags above, then the stack's shared OPS_* variables;
lists are comma-separated):
  MONITOR_DOCKER_SOCKET, then OPS_DOCKER_SOCKET, DOCKER_HOST=unix://…   --docker-socket
  MONITOR_CONTAINERS, then OPS_CONTAINERS                              --container
  MONITOR_MEMORY_CONTAINERS                                            --memory-container
  MONITOR_MEMORY_THRESHOLD                                             --memory-threshold (MiB, default 1024)
  MONITOR_PATHS, then OPS_DATA_DIRS                                    --path
  MONITOR_DISK_THRESHOLD, then OPS_DISK_THRESHOLD_PERCENT              --disk-threshold (percent, default 85)
  MONITOR_URLS, then OPS_PRIVATE_URL + OPS_MIRROR_URL                  --url
  MONITOR_CA_FILE                                                      --ca-file
  MONITOR_RESOLVE                                                      --resolve
  MONITOR_SKIP                                                         --skip
  MONITOR_TIMEOUT                                                      --timeout (seconds per request, default 10)
  ALERT_WEBHOOK, then OPS_ALERT_WEBHOOK                                --alert-webhook

What happens on failure:
  a container that is missing          alert (nothing to restart)
  a container exited/created/dead      restart (docker restart starts it), alert
  a container running but unhealthy    restart, alert
  a container paused                   unpause, alert
  a container restarting (crash loop)  alert (Docker is already restarting it)
  health check still starting          warning line only
  memory, disk, /v2/, /readyz          alert
--dry-run reports "would restart" and changes nothing.`,
);
addExitCodeHelp(program, 'a check failed');

// ---- containers and memory ------------------------------------------------

async function checkContainers(docker: DockerClient, names: string[], dryRun: boolean, list: ContainerSummary[]): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const name of names) {
    const c = findContainer(list, name);
    if (!c) {
      results.push({ check: 'containers', target: name, ok: false, message: 'not found', state: 'missing' });
      continue;
    }
    let state = c.State;
    let health = healthFromStatus(c.Status);
    let restartCount: number | undefined;
    try {
      const info = await docker.inspect(c.Id);
      state = info.State.Status || state;
      health = info.State.Health?.Status ?? health;
      restartCount = info.RestartCount;
    } catch {
      // The list's State/Status are enough to decide.
    }
    const base = { check: 'containers' as const, target: name, id: c.Id.slice(0, 12), state, health, restartCount };
    let action: 'restart' | 'unpause' | undefined;
    let problem: string | undefined;
    if (state === 'running') {
      if (health === 'unhealthy') {
        problem = 'unhealthy';
        action = 'restart';
      }
    } else if (state === 'paused') {
      problem = 'paused';
      action = 'unpause';
    } else if (state === 'restarting') {
      problem = 'restarting (crash loop?)';
    } else if (state === 'removing') {
      problem = 'being removed';
    } else {
      problem = `${state || 'not running'}${c.Status ? ` (${c.Status})` : ''}`;
      action = 'restart';
    }
    if (!problem) {
      const warning = health === 'starting';
      results.push({ ...base, ok: true, warning, message: health ? `running, ${health}` : 'running' });
      continue;
    }
    if (!action) {
      results.push({ ...base, ok: false, message: problem });
      continue;
    }
    if (dryRun) {
      results.push({ ...base, ok: false, message: `${problem} (dry run: would ${action})`, action: `would ${action}` });
      continue;
    }
    try {
      if (action === 'restart') await docker.restart(c.Id);
      else await docker.unpause(c.Id);
      let after: string | undefined;
      try {
        after = (await docker.inspect(c.Id)).State.Status;
      } catch {
        after = undefined;
      }
      const done = action === 'restart' ? 'restarted' : 'unpaused';
      results.push({
        ...base,
        ok: false,
        message: `${problem} (${done}${after ? `, now ${after}` : ''})`,
        action: done,
        stateAfter: after,
      });
    } catch (err) {
      results.push({ ...base, ok: false, message: `${problem} (${action} failed: ${describeError(err)})`, action: `${action} failed` });
    }
  }
  return results;
}

async function checkMemory(docker: DockerClient, names: string[], thresholdMiB: number, list: ContainerSummary[], log: Logger): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const name of names) {
    const c = findContainer(list, name);
    if (!c || c.State !== 'running') {
      // The container check reports a missing or stopped container.
      log.warn(`memory of ${name} not checked: ${c ? c.State : 'not found'}`, { check: 'memory', target: name });
      continue;
    }
    try {
      const mem = await docker.memory(c.Id);
      if (!mem) {
        results.push({ check: 'memory', target: name, ok: false, message: 'no memory statistics' });
        continue;
      }
      const usedMiB = mem.workingSetBytes / (1024 * 1024);
      const fields = {
        usedMiB: round1(usedMiB),
        usageBytes: mem.usageBytes,
        workingSetBytes: mem.workingSetBytes,
        limitBytes: mem.limitBytes,
        thresholdMiB,
      };
      if (usedMiB >= thresholdMiB) {
        results.push({ check: 'memory', target: name, ok: false, message: `${round1(usedMiB)} MiB ≥ ${thresholdMiB} MiB`, ...fields });
      } else {
        results.push({ check: 'memory', target: name, ok: true, message: `${round1(usedMiB)} MiB`, ...fields });
      }
    } catch (err) {
      results.push({ check: 'memory', target: name, ok: false, message: `stats failed: ${describeError(err)}` });
    }
  }
  return results;
}

// ---- disk ----------------------------------------------------------------

async function checkDisk(paths: string[], threshold: number): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const p of paths) {
    const target = path.resolve(p);
    try {
      const s = await statfs(target);
      // As df computes Use%: used / (used + available to unprivileged users).
      const used = (s.blocks - s.bfree) * s.bsize;
      const avail = s.bavail * s.bsize;
      const usedPct = used + avail > 0 ? (used / (used + avail)) * 100 : 0;
      const inodesPct = s.files > 0 ? ((s.files - s.ffree) / s.files) * 100 : 0;
      const fields = {
        usedPercent: round1(usedPct),
        inodesUsedPercent: round1(inodesPct),
        usedBytes: used,
        availableBytes: avail,
        thresholdPercent: threshold,
      };
      const problems: string[] = [];
      if (usedPct >= threshold) problems.push(`${round1(usedPct)}% used ≥ ${threshold}% (${formatBytes(avail)} free)`);
      if (inodesPct >= threshold) problems.push(`${round1(inodesPct)}% of inodes used ≥ ${threshold}%`);
      results.push({
        check: 'disk',
        target,
        ok: problems.length === 0,
        message: problems.length ? problems.join(', ') : `${round1(usedPct)}% used, ${formatBytes(avail)} free`,
        ...fields,
      });
    } catch (err) {
      results.push({ check: 'disk', target, ok: false, message: `statfs failed: ${describeError(err)}` });
    }
  }
  return results;
}

// ---- http ----------------------------------------------------------------

async function checkUrl(base: string, ca: Buffer[] | undefined, resolve: Map<string, string>, timeoutMs: number): Promise<CheckResult[]> {
  const root = base.replace(/\/+$/, '');
  const shown = redactUrl(root).replace(/\/+$/, '');
  const get = (p: string) => httpRequest({ url: `${root}${p}`, ca, resolve, timeoutMs, headers: { 'user-agent': 'registry-stack-monitor' } });
  const results: CheckResult[] = [];

  try {
    const res = await get('/v2/');
    const api = res.headers['docker-distribution-api-version'];
    const isRegistry = typeof api === 'string' && api.includes('registry/2.0');
    const ok = (res.status === 200 || res.status === 401) && isRegistry;
    results.push({
      check: 'http',
      target: `${shown}/v2/`,
      ok,
      status: res.status,
      message:
        res.status !== 200 && res.status !== 401
          ? `HTTP ${res.status}, expected 200 or 401`
          : isRegistry
            ? `HTTP ${res.status}`
            : `HTTP ${res.status} without Docker-Distribution-API-Version: not the registry answering`,
    });
  } catch (err) {
    results.push({ check: 'http', target: `${shown}/v2/`, ok: false, message: describeError(err) });
  }

  try {
    const res = await get('/readyz');
    let body: unknown;
    try {
      body = res.json();
    } catch {
      body = undefined;
    }
    const checks = body && typeof body === 'object' ? (body as { checks?: unknown }).checks : undefined;
    if (res.status === 200) {
      results.push({ check: 'http', target: `${shown}/readyz`, ok: true, status: 200, message: 'ready', checks });
    } else {
      results.push({
        check: 'http',
        target: `${shown}/readyz`,
        ok: false,
        status: res.status,
        message: `HTTP ${res.status}${checks ? `: ${failingChecks(checks)}` : ''}`,
        checks,
      });
    }
  } catch (err) {
    results.push({ check: 'http', target: `${shown}/readyz`, ok: false, message: describeError(err) });
  }
  return results;
}

const GOOD_CHECK = /^(ok|ready|pass|passing|up|healthy|writable|readable|reachable)$/i;

/**
 * The failing entries of /readyz's checks, e.g. "upstream:ghcr.io (unreachable)".
 * Our server answers {"storage":"writable","upstream:docker.io":"unreachable"};
 * {"x":{"ok":false,"error":"…"}} and booleans are understood too.
 */
function failingChecks(checks: unknown): string {
  if (!checks || typeof checks !== 'object') return 'not ready';
  const bad: string[] = [];
  for (const [k, v] of Object.entries(checks as Record<string, unknown>)) {
    if (v === true || (typeof v === 'string' && GOOD_CHECK.test(v.trim()))) continue;
    if (v && typeof v === 'object') {
      const o = v as { ok?: unknown; status?: unknown; error?: unknown; message?: unknown };
      if (o.ok === true || (typeof o.status === 'string' && GOOD_CHECK.test(o.status))) continue;
      const detail = o.error ?? o.message ?? o.status;
      bad.push(detail !== undefined ? `${k} (${String(detail).slice(0, 200)})` : k);
      continue;
    }
    bad.push(typeof v === 'string' ? `${k} (${v.slice(0, 200)})` : k);
  }
  return bad.length ? `failing: ${bad.join(', ')}` : 'not ready';
}

// ---- main ----------------------------------------------------------------

async function run(opts: MonitorOptions, log: Logger): Promise<Outcome> {
  const skip = new Set(opts.skip ?? []);
  const timeoutMs = opts.timeout * 1000;
  const socket = opts.dockerSocket;
  const ca = readCaFile(opts.caFile);
  let resolve: Map<string, string>;
  try {
    resolve = parseResolve(opts.resolve ?? []);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const urls = opts.url ?? [];
  for (const u of urls) {
    try {
      const parsed = new URL(u);
      if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw new Error();
    } catch {
      throw new UsageError(`--url ${redactUrl(u)}: must be an http(s) URL`);
    }
  }

  const results: CheckResult[] = [];
  const record = (r: CheckResult[]) => {
    for (const x of r) {
      const { check, target, ok, message, warning, ...rest } = x;
      const fields = { check, target, ok, ...rest };
      if (!ok) log.error(`${check} ${target}: ${message}`, fields);
      else if (warning) log.warn(`${check} ${target}: ${message}`, fields);
      else log.info(`${check} ${target}: ${message}`, fields);
      results.push(x);
    }
  };

  if (!skip.has('containers') || !skip.has('memory')) {
    const docker = new DockerClient(socket, timeoutMs);
    let list: ContainerSummary[] | undefined;
    try {
      list = await docker.list();
    } catch (err) {
      record([{ check: 'containers', target: `docker (${socket})`, ok: false, message: `Docker API unreachable: ${describeError(err)}` }]);
    }
    if (list) {
      if (!skip.has('containers')) record(await checkContainers(docker, opts.container ?? DEFAULT_CONTAINERS, opts.dryRun, list));
      if (!skip.has('memory')) record(await checkMemory(docker, opts.memoryContainer ?? DEFAULT_MEMORY_CONTAINERS, opts.memoryThreshold, list, log));
    }
  }
  if (!skip.has('disk')) record(await checkDisk(opts.path ?? DEFAULT_PATHS, opts.diskThreshold));
  if (!skip.has('http')) {
    if (urls.length === 0) log.warn('no --url given: HTTPS checks skipped', { check: 'http' });
    const all = await Promise.all(urls.map((u) => checkUrl(u, ca, resolve, timeoutMs)));
    for (const r of all) record(r);
  }

  const failed = results.filter((r) => !r.ok);
  const detail = (r: CheckResult) => ({ check: r.check, target: r.target, ok: r.ok, message: r.message, ...(r.action ? { action: r.action } : {}) });
  if (failed.length > 0) {
    return {
      ok: false,
      summary: `${failed.length} of ${results.length} checks failed: ${failed.map((r) => `${r.check} ${r.target}: ${r.message}`).join('; ')}`,
      details: { failures: failed.map(detail), checks: results.map(detail) },
    };
  }
  const warnings = results.filter((r) => r.warning).length;
  return {
    ok: true,
    summary: `all ${results.length} checks passed${warnings ? ` (${warnings} warning${warnings > 1 ? 's' : ''})` : ''}`,
    details: { checks: results.map(detail) },
  };
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

await runScript<MonitorOptions>(program, run, {
  url: () => envList('OPS_PRIVATE_URL', 'OPS_MIRROR_URL'),
  container: () => envList('OPS_CONTAINERS'),
  path: () => envList('OPS_DATA_DIRS'),
  diskThreshold: () => envValue('OPS_DISK_THRESHOLD_PERCENT', percent('OPS_DISK_THRESHOLD_PERCENT')),
  dockerSocket: () =>
    envValue('OPS_DOCKER_SOCKET', (v) => v) ??
    (process.env.DOCKER_HOST?.startsWith('unix://') ? process.env.DOCKER_HOST.slice('unix://'.length) : undefined),
});
