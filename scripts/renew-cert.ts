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
// Where Caddy's admin API is out of the job's reach (localhost inside its
// container), --caddy-container (or OPS_CADDY_CONTAINER) makes the reload a
// `docker exec <container> caddy reload --config <Caddyfile> --force` through
// the Docker socket, which POSTs /load with the same must-revalidate header.
//
// Hosts have one of two roles. A --host has a certificate Caddy obtains and
// renews (ACME: dcr), so reloading Caddy is the fix. An --origin-ca-host
// serves a Cloudflare Origin CA certificate the Pulumi program issued (mir):
// Caddy only reads it from a file, so a reload changes nothing; only
// `pulumi up` issues a new one. Those are checked for days left and name (not
// the chain: the Origin CA's root is Cloudflare's private one, which Cloudflare
// checks itself), and when one fails the job alerts and says so.
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
  originCaHost?: string[];
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

/** Who renews a host's certificate: Caddy (ACME, on reload) or `pulumi up` (a Cloudflare Origin CA certificate). */
type Role = 'caddy' | 'origin-ca';

/** What an operator does when an Origin CA certificate is due. */
const ORIGIN_CA_RENEWAL =
  'Caddy cannot renew a Cloudflare Origin CA certificate: raise registry-stack:cloudflare.originCertGeneration and run `pulumi up`, which issues a new one';

interface HostCheck {
  host: string;
  role: Role;
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
    listOption(
      '--origin-ca-host <name[:port]>',
      'a hostname serving a Cloudflare Origin CA certificate (renewed by `pulumi up`, not by Caddy): alert when it is due; repeatable',
      'RENEW_CERT_ORIGIN_CA_HOSTS',
    ),
  )
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
  RENEW_CERT_ORIGIN_CA_HOSTS                                              --origin-ca-host
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
--dry-run checks and reports "would reload", and does not touch Caddy.

An --origin-ca-host (mir in the deployed stack) is checked for days left and name only (its chain
is Cloudflare's private Origin CA, which Cloudflare checks). Caddy is never reloaded for it: when it
fails, the job exits 1 with an error alert saying that \`pulumi up\` issues a new one (after raising
registry-stack:cloudflare.originCertGeneration). A host given both ways is an Origin CA host.`,
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
  role: Role,
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
    return { host, role, ok: false, certProblem: false, message: `TLS connection failed: ${error}`, error };
  }
  const problems: string[] = [];
  const left = Math.round(cert.daysLeft * 10) / 10;
  if (cert.daysLeft <= 0) problems.push(`expired ${-left} days ago`);
  else if (cert.daysLeft < days) problems.push(`${left} days left < ${days}`);
  if (!cert.nameMatches) problems.push(cert.nameError ?? 'name mismatch');
  else if (!cert.trusted && role === 'caddy') problems.push(`not trusted: ${cert.trustError}`);
  if (problems.length > 0) return { host, role, ok: false, certProblem: true, message: problems.join(', '), cert };
  return { host, role, ok: true, certProblem: false, message: `${left} days left (until ${cert.validTo})`, cert };
}

function certFields(c: HostCheck): Record<string, unknown> {
  return {
    host: c.host,
    ...(c.role === 'origin-ca' ? { role: c.role } : {}),
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

const targetKey = (t: HostTarget) => `${t.name}:${t.port}`;

function logCheck(log: Logger, c: HostCheck, phase: string): void {
  const fields = { phase, ...certFields(c) };
  if (c.ok) log.info(`${c.host}: ${c.message}`, fields);
  else log.error(`${c.host}: ${c.message}`, fields);
}

async function run(opts: RenewOptions, log: Logger): Promise<Outcome> {
  const originTargets = (opts.originCaHost ?? []).map(parseHost);
  const originKeys = new Set(originTargets.map(targetKey));
  // A host listed both ways is an Origin CA host: reloading Caddy would not help it.
  const targets = (opts.host ?? []).map(parseHost).filter((t) => !originKeys.has(targetKey(t)));
  if (targets.length === 0 && originTargets.length === 0) {
    throw new UsageError('give at least one --host or --origin-ca-host (or RENEW_CERT_HOSTS, RENEW_CERT_ORIGIN_CA_HOSTS, or OPS_PRIVATE_URL / OPS_MIRROR_URL)');
  }
  const connectTo = opts.connectTo ? parseConnectTo(opts.connectTo) : undefined;
  const ca = readCaFile(opts.caFile);
  const timeoutMs = opts.timeout * 1000;
  const origin = await Promise.all(originTargets.map((t) => checkHost(t, 'origin-ca', connectTo, ca, opts.days, timeoutMs)));
  for (const c of origin) logCheck(log, c, 'check');
  const caddy = targets.length > 0 ? await renewThroughCaddy(opts, log, targets, connectTo, ca, timeoutMs) : undefined;
  return withOriginCa(caddy, origin, opts.days);
}

/** Adds the Origin CA hosts' findings to the outcome of the Caddy hosts (if any). */
function withOriginCa(caddy: Outcome | undefined, origin: HostCheck[], days: number): Outcome {
  if (caddy && origin.length === 0) return caddy;
  const bad = origin.filter((c) => !c.ok);
  const hosts = [...((caddy?.details.hosts as unknown[] | undefined) ?? []), ...origin.map(certFields)];
  const details = { ...(caddy?.details ?? { days }), hosts, ...(bad.length > 0 ? { originCa: { failing: bad.map((c) => c.host), renewal: 'pulumi up' } } : {}) };
  if (bad.length === 0) {
    const fine = `Origin CA certificates have ≥ ${days} days left: ${origin.map((c) => `${c.host} ${c.message}`).join('; ')}`;
    return caddy ? { ...caddy, summary: `${caddy.summary}; ${fine}`, details } : { ok: true, summary: fine, details };
  }
  const due = bad.some((c) => c.certProblem);
  const summary = `Origin CA certificate failing: ${bad.map((c) => `${c.host}: ${c.message}`).join('; ')}${due ? ` (${ORIGIN_CA_RENEWAL})` : ''}`;
  return { ok: false, level: 'error', summary: caddy ? `${summary}; ${caddy.summary}` : summary, details };
}

async function renewThroughCaddy(
  opts: RenewOptions,
  log: Logger,
  targets: HostTarget[],
  connectTo: { host: string; port: number } | undefined,
  ca: Buffer[] | undefined,
  timeoutMs: number,
): Promise<Outcome> {
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
  const check = (t: HostTarget) => checkHost(t, 'caddy', connectTo, ca, opts.days, timeoutMs);

  const first = await Promise.all(targets.map(check));
  for (const c of first) logCheck(log, c, 'check');
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
  for (const c of after.values()) logCheck(log, c, 'recheck');

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
