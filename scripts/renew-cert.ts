// renew-cert: are the certificates Caddy serves far enough from expiry?
//
// For each --host, connect over TLS (SNI = the name), read the leaf
// certificate, and check: days left ≥ --days, chain trusted, name matches.
// When a certificate fails, ask Caddy to reload its config through its admin
// API (GET /config/, then POST /load with the same config and
// Cache-Control: must-revalidate so Caddy does not skip an unchanged config):
// on load Caddy re-reads its certificates and renews the ones due. Then
// re-check (polling up to --wait seconds, ACME takes a moment) and alert if
// a certificate is still bad.
//
// In the deployed stack Caddy's admin API listens on localhost inside its
// container, out of reach of the ops job; there --caddy-container (or
// OPS_CADDY_CONTAINER) makes the reload a `docker exec <container> caddy
// reload --config <Caddyfile> --force` through the Docker socket, which
// POSTs /load with the same must-revalidate header.
import { Option } from 'commander';
import {
  addExitCodeHelp,
  type CommonOptions,
  createProgram,
  envList,
  envValue,
  listOption,
  nonNegativeNumber,
  type Outcome,
  positiveNumber,
  runScript,
  UsageError,
  readCaFile,
} from './lib/cli.ts';
import { DEFAULT_DOCKER_SOCKET, DockerClient } from './lib/docker.ts';
import { describeError, httpRequest } from './lib/http.ts';
import type { Logger } from './lib/log.ts';
import { redactUrl } from './lib/redact.ts';
import { type CertInfo, fetchCert } from './lib/tls.ts';

const DEFAULT_CADDY_ADMIN = 'http://127.0.0.1:2019';
const DEFAULT_CADDYFILE = '/etc/caddy/Caddyfile';

interface RenewOptions extends CommonOptions {
  host?: string[];
  connectTo?: string;
  days: number;
  caddyAdmin: string;
  caddyContainer?: string;
  caddyConfig: string;
  dockerSocket: string;
  caFile?: string;
  wait: number;
}

interface HostTarget {
  name: string;
  port: number;
}

interface HostCheck {
  host: string;
  ok: boolean;
  /** Reloading Caddy may fix it (a certificate problem, not a connection problem). */
  certProblem: boolean;
  message: string;
  cert?: CertInfo;
  error?: string;
}

const program = createProgram(
  'renew-cert',
  "Check the TLS certificates of the registry hostnames; when one is close to expiry (or invalid), make Caddy reload and renew it, then check again.",
  'RENEW_CERT',
  10,
);
program
  .addOption(listOption('--host <name[:port]>', 'a hostname to check (port 443 by default); repeatable', 'RENEW_CERT_HOSTS'))
  .addOption(
    new Option('--connect-to <host:port>', 'connect here instead of resolving each name (SNI and the name check still use the name)').env(
      'RENEW_CERT_CONNECT_TO',
    ),
  )
  .addOption(
    new Option('--days <n>', 'renew when fewer than this many days are left (fractions allowed)')
      .env('RENEW_CERT_DAYS')
      .default(14)
      .argParser(positiveNumber('--days')),
  )
  .addOption(
    new Option('--caddy-admin <address>', "Caddy's admin API: http://host:port, host:port, or unix//path/to/socket")
      .env('CADDY_ADMIN')
      .default(DEFAULT_CADDY_ADMIN),
  )
  .addOption(
    new Option('--caddy-container <name>', 'reload through `docker exec <name> caddy reload --force` instead of the admin API').env(
      'RENEW_CERT_CADDY_CONTAINER',
    ),
  )
  .addOption(
    new Option('--caddy-config <path>', 'the Caddyfile inside that container').env('RENEW_CERT_CADDY_CONFIG').default(DEFAULT_CADDYFILE),
  )
  .addOption(
    new Option('--docker-socket <path>', 'Docker Engine API socket, for --caddy-container')
      .env('RENEW_CERT_DOCKER_SOCKET')
      .default(DEFAULT_DOCKER_SOCKET),
  )
  .addOption(new Option('--ca-file <path>', 'PEM CA certificate to trust in addition to the system roots').env('RENEW_CERT_CA_FILE'))
  .addOption(
    new Option('--wait <seconds>', 'after the reload, keep re-checking this long for the new certificate')
      .env('RENEW_CERT_WAIT')
      .default(120)
      .argParser(nonNegativeNumber('--wait')),
  );
program.addHelpText(
  'after',
  `
Environment (fallbacks for the flags above; then the stack's shared OPS_* variables):
  RENEW_CERT_HOSTS, then OPS_PRIVATE_URL + OPS_MIRROR_URL (their hosts)   --host
  RENEW_CERT_CONNECT_TO                                                   --connect-to
  RENEW_CERT_DAYS, then OPS_CERT_MIN_DAYS                                 --days (default 14)
  CADDY_ADMIN (the variable Caddy itself reads)                           --caddy-admin
  RENEW_CERT_CADDY_CONTAINER, then OPS_CADDY_CONTAINER                    --caddy-container
  RENEW_CERT_CADDY_CONFIG                                                 --caddy-config (default ${DEFAULT_CADDYFILE})
  RENEW_CERT_DOCKER_SOCKET, then OPS_DOCKER_SOCKET, DOCKER_HOST=unix://…  --docker-socket
  RENEW_CERT_CA_FILE                                                      --ca-file
  RENEW_CERT_WAIT                                                         --wait (seconds, default 120)
  RENEW_CERT_TIMEOUT                                                      --timeout (seconds per connection, default 10)
  ALERT_WEBHOOK, then OPS_ALERT_WEBHOOK                                   --alert-webhook
An explicit --caddy-admin (flag or CADDY_ADMIN) wins over OPS_CADDY_CONTAINER.

A certificate fails when it has fewer than --days left, is expired, does not chain to a
trusted root, or is not valid for the name. Then Caddy is reloaded (once) and the failing
hosts re-checked until they pass or --wait runs out.
  renewed by the reload      exit 0, warning alert (Caddy's own renewal should have done it)
  still failing              exit 1, error alert
  host unreachable           exit 1, error alert (no reload: that is the monitor's business)
--dry-run checks and reports "would reload", and does not touch Caddy.`,
);
addExitCodeHelp(program, 'a certificate is still close to expiry or invalid, a host is unreachable, or Caddy refused the reload');

function parseHost(value: string): HostTarget {
  const m = /^([A-Za-z0-9.-]+)(?::(\d+))?$/.exec(value);
  if (!m) throw new UsageError(`--host ${value}: expected name[:port]`);
  const port = m[2] ? Number(m[2]) : 443;
  if (port < 1 || port > 65535) throw new UsageError(`--host ${value}: bad port`);
  return { name: m[1].toLowerCase(), port };
}

function parseConnectTo(value: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(value);
  if (!m) throw new UsageError(`--connect-to ${value}: expected host:port`);
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

interface CaddyAdmin {
  url: string;
  socketPath?: string;
  /** Host header to send, when not the URL's. */
  host?: string;
  shown: string;
}

/** "http://127.0.0.1:2019" | "127.0.0.1:2019" | "unix//run/caddy.sock" → base URL (+ socket). */
function parseCaddyAdmin(value: string): CaddyAdmin {
  const unix = /^unix\/(\/.+)$/.exec(value) ?? /^unix:(\/.+)$/.exec(value);
  // Over a unix socket Caddy only accepts an empty Host header (as its own CLI sends).
  if (unix) return { url: 'http://localhost', socketPath: unix[1], shown: `unix/${unix[1]}`, host: '' };
  const withScheme = /^[a-z]+:\/\//i.test(value) ? value : `http://${value}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new UsageError(`--caddy-admin ${value}: expected http://host:port, host:port or unix//path`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--caddy-admin ${value}: must be http(s)`);
  return { url: `${u.origin}`, shown: redactUrl(u.origin).replace(/\/$/, '') };
}

async function checkHost(
  t: HostTarget,
  connectTo: { host: string; port: number } | undefined,
  ca: Buffer[] | undefined,
  days: number,
  timeoutMs: number,
): Promise<HostCheck> {
  const host = `${t.name}:${t.port}`;
  let cert: CertInfo;
  try {
    cert = await fetchCert({
      servername: t.name,
      host: connectTo?.host ?? t.name,
      port: connectTo?.port ?? t.port,
      ca,
      timeoutMs,
    });
  } catch (err) {
    const error = describeError(err);
    return { host, ok: false, certProblem: false, message: `TLS connection failed: ${error}`, error };
  }
  const problems: string[] = [];
  const left = Math.round(cert.daysLeft * 10) / 10;
  if (cert.daysLeft <= 0) problems.push(`expired ${-left} days ago`);
  else if (cert.daysLeft < days) problems.push(`${left} days left < ${days}`);
  if (!cert.nameMatches) problems.push(cert.nameError ?? 'name mismatch');
  else if (!cert.trusted) problems.push(`not trusted: ${cert.trustError}`);
  if (problems.length > 0) return { host, ok: false, certProblem: true, message: problems.join(', '), cert };
  return { host, ok: true, certProblem: false, message: `${left} days left (until ${cert.validTo})`, cert };
}

function certFields(c: HostCheck): Record<string, unknown> {
  return {
    host: c.host,
    ok: c.ok,
    ...(c.cert
      ? {
          daysLeft: Math.round(c.cert.daysLeft * 100) / 100,
          validTo: c.cert.validTo,
          issuer: c.cert.issuer,
          subjectAltName: c.cert.subjectAltName,
          serialNumber: c.cert.serialNumber,
          trusted: c.cert.trusted,
          nameMatches: c.cert.nameMatches,
        }
      : {}),
    ...(c.error ? { error: c.error } : {}),
  };
}

async function reloadCaddy(admin: CaddyAdmin, timeoutMs: number): Promise<void> {
  const host: Record<string, string> = admin.host !== undefined ? { host: admin.host } : {};
  const get = await httpRequest({
    url: `${admin.url}/config/`,
    socketPath: admin.socketPath,
    headers: { accept: 'application/json', ...host },
    timeoutMs,
    maxBodyBytes: 64 * 1024 * 1024,
  });
  if (get.status !== 200) throw new Error(`GET /config/: HTTP ${get.status} ${get.text().slice(0, 200).trim()}`);
  const config = get.text().trim();
  if (config === '' || config === 'null') throw new Error('Caddy has no config loaded');
  const load = await httpRequest({
    url: `${admin.url}/load`,
    socketPath: admin.socketPath,
    method: 'POST',
    // must-revalidate: reload even though the config did not change.
    headers: { 'content-type': 'application/json', 'cache-control': 'must-revalidate', ...host },
    body: config,
    timeoutMs: Math.max(timeoutMs, 60_000),
  });
  if (load.status !== 200) throw new Error(`POST /load: HTTP ${load.status} ${load.text().slice(0, 300).trim()}`);
}

/** `caddy reload --force` inside Caddy's container: the admin API is only reachable from there. */
async function reloadCaddyInContainer(docker: DockerClient, container: string, caddyfile: string): Promise<void> {
  const cmd = ['caddy', 'reload', '--config', caddyfile, '--adapter', 'caddyfile', '--force'];
  const { exitCode, output } = await docker.exec(container, cmd);
  if (exitCode !== 0) {
    const last = output.trim().split('\n').slice(-3).join(' | ').slice(0, 400);
    throw new Error(`docker exec ${container} ${cmd.join(' ')}: exit ${exitCode ?? '?'}${last ? `: ${last}` : ''}`);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(opts: RenewOptions, log: Logger): Promise<Outcome> {
  const targets = (opts.host ?? []).map(parseHost);
  if (targets.length === 0) throw new UsageError('give at least one --host (or RENEW_CERT_HOSTS, or OPS_PRIVATE_URL / OPS_MIRROR_URL)');
  const connectTo = opts.connectTo ? parseConnectTo(opts.connectTo) : undefined;
  const admin = parseCaddyAdmin(opts.caddyAdmin);
  const adminExplicit = ['cli', 'env'].includes(program.getOptionValueSource('caddyAdmin') ?? '');
  const containerSource = program.getOptionValueSource('caddyContainer');
  let container: string | undefined;
  if (opts.caddyContainer) {
    const fromOps = containerSource === 'fallback';
    if (adminExplicit && !fromOps) throw new UsageError('give either --caddy-admin or --caddy-container, not both');
    if (!adminExplicit) container = opts.caddyContainer;
  }
  const via = container ? { caddyContainer: container, caddyConfig: opts.caddyConfig } : { caddyAdmin: admin.shown };
  const ca = readCaFile(opts.caFile);
  const timeoutMs = opts.timeout * 1000;
  const check = (t: HostTarget) => checkHost(t, connectTo, ca, opts.days, timeoutMs);
  const logCheck = (c: HostCheck, phase: string) => {
    const fields = { phase, ...certFields(c) };
    if (c.ok) log.info(`${c.host}: ${c.message}`, fields);
    else log.error(`${c.host}: ${c.message}`, fields);
  };

  const first = await Promise.all(targets.map(check));
  for (const c of first) logCheck(c, 'check');
  const bad = first.filter((c) => !c.ok);
  if (bad.length === 0) {
    return {
      ok: true,
      summary: `all ${first.length} certificates have ≥ ${opts.days} days left: ${first.map((c) => `${c.host} ${c.message}`).join('; ')}`,
      details: { days: opts.days, hosts: first.map(certFields) },
    };
  }

  const unreachable = bad.filter((c) => !c.certProblem);
  const toRenew = bad.filter((c) => c.certProblem);
  const describeAll = (list: HostCheck[]) => list.map((c) => `${c.host}: ${c.message}`).join('; ');
  if (toRenew.length === 0) {
    return {
      ok: false,
      summary: `certificate check failed: ${describeAll(unreachable)}`,
      details: { days: opts.days, hosts: first.map(certFields) },
    };
  }

  if (opts.dryRun) {
    log.warn('dry run: would ask Caddy to reload and renew', { ...via, hosts: toRenew.map((c) => c.host) });
    return {
      ok: false,
      summary: `certificate check failed (dry run, Caddy not reloaded): ${describeAll(bad)}`,
      details: { days: opts.days, hosts: first.map(certFields), reload: 'skipped (dry run)' },
    };
  }

  log.info('asking Caddy to reload and renew', { ...via, hosts: toRenew.map((c) => c.host) });
  try {
    if (container) await reloadCaddyInContainer(new DockerClient(opts.dockerSocket, timeoutMs), container, opts.caddyConfig);
    else await reloadCaddy(admin, timeoutMs);
  } catch (err) {
    const error = describeError(err);
    log.error('Caddy reload failed', { ...via, error });
    return {
      ok: false,
      summary: `certificate check failed and Caddy reload failed (${error}): ${describeAll(bad)}`,
      details: { days: opts.days, hosts: first.map(certFields), reload: { ok: false, error } },
    };
  }
  log.info('Caddy reloaded', via);

  // Re-check the hosts that failed on their certificate until they pass or --wait runs out.
  const deadline = Date.now() + opts.wait * 1000;
  let pending = toRenew.map((c) => targets.find((t) => `${t.name}:${t.port}` === c.host) as HostTarget);
  const after = new Map<string, HostCheck>();
  for (;;) {
    const round = await Promise.all(pending.map(check));
    for (const c of round) after.set(c.host, c);
    pending = pending.filter((t) => !after.get(`${t.name}:${t.port}`)?.ok);
    if (pending.length === 0 || Date.now() >= deadline) break;
    await sleep(Math.min(5000, Math.max(0, deadline - Date.now())));
  }
  for (const c of after.values()) logCheck(c, 'recheck');

  const final = first.map((c) => after.get(c.host) ?? c);
  const stillBad = final.filter((c) => !c.ok);
  const renewed = toRenew.filter((c) => after.get(c.host)?.ok).map((c) => after.get(c.host) as HostCheck);
  const details = {
    days: opts.days,
    hosts: final.map(certFields),
    before: toRenew.map(certFields),
    reload: { ok: true },
    renewed: renewed.map((c) => c.host),
  };
  if (stillBad.length > 0) {
    return {
      ok: false,
      summary: `certificate still failing after the Caddy reload: ${describeAll(stillBad)}${renewed.length ? ` (renewed: ${renewed.map((c) => c.host).join(', ')})` : ''}`,
      details,
    };
  }
  return {
    ok: true,
    alert: true,
    level: 'warning',
    summary: `certificates renewed after a Caddy reload: ${describeAll(renewed)}`,
    details,
  };
}

function hostOfUrl(value: string): string {
  try {
    return new URL(value).host;
  } catch {
    throw new UsageError(`${value}: not a URL`);
  }
}

await runScript<RenewOptions>(program, run, {
  host: () => envList('OPS_PRIVATE_URL', 'OPS_MIRROR_URL')?.map(hostOfUrl),
  days: () => envValue('OPS_CERT_MIN_DAYS', positiveNumber('OPS_CERT_MIN_DAYS')),
  caddyContainer: () => process.env.OPS_CADDY_CONTAINER?.trim() || undefined,
  dockerSocket: () =>
    envValue('OPS_DOCKER_SOCKET', (v) => v) ??
    (process.env.DOCKER_HOST?.startsWith('unix://') ? process.env.DOCKER_HOST.slice('unix://'.length) : undefined),
});
