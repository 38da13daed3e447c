// The Caddyfile: Caddy terminates TLS for both hosts.
//   dcr.<domain> → the private registry. The DNS record is DNS-only, so pushes
//     reach Caddy directly (Cloudflare's proxy caps request bodies); no
//     request_body limit is set, so Caddy streams bodies of any size.
//   mir.<domain> → the mirror, reachable only through Cloudflare: its transform
//     rule adds a secret origin header, and anything arriving without it gets a
//     403. The mirror is read-only: only GET, HEAD and OPTIONS pass.
// The local twin renders the same sites with `tls internal` on high ports.
//
// Certificates. dcr gets one from ACME (Let's Encrypt, or the directory in
// `acme`). mir cannot: it is proxied, so TLS-ALPN-01 never reaches Caddy, and
// HTTP-01 is blocked by the WAF's read-only rule. mir serves a Cloudflare
// Origin CA certificate instead (`mirTls`, files the program uploads): the
// only client mir has is Cloudflare, and an Origin CA certificate is exactly
// what Full (strict) trusts. It exists before Caddy starts, so the first
// deploy works, and no ACME challenge has to pass the proxy.
//
// Logs. Caddy redacts Authorization and Cookie, nothing else, and it logs the
// request's headers both in the access log and with every handler error (a
// 502 when a registry is down goes to the default logger). The origin header
// is the key to mir: every logger filters it out.
//
// A host with several replicas gets one reverse_proxy to all of them, with a
// load-balancing policy, active health checks (GET /healthz on each replica),
// passive ones (a replica that failed a request sits out fail_duration) and
// retries on another replica (lb_try_duration). With one replica the block is
// exactly what it always was.

/** How Caddy balances a host over its replicas (all durations are Caddy/Go durations such as 10s). */
export interface LoadBalancing {
  policy: string;
  /** Active health checks: this URI on each upstream, this often, failing after healthTimeout. */
  healthUri: string;
  healthInterval: string;
  healthTimeout: string;
  /** Passive health checks: how long a failed upstream is skipped. */
  failDuration: string;
  /** Retry an unreachable upstream's request on another for up to tryDuration, every tryInterval. */
  tryDuration: string;
  tryInterval: string;
}

export interface CaddyfileOptions {
  dcrHost: string;
  mirHost: string;
  /** Where the private registry listens (registry:5000 on the VPS, 127.0.0.1:PORT locally): one address, or one per replica. */
  privateUpstream: string | string[];
  mirrorUpstream: string | string[];
  /** Applied to a host with more than one upstream. */
  loadBalancing?: LoadBalancing;
  originHeader: string;
  originSecret: string;
  acmeEmail?: string;
  /** The mirror sits behind Cloudflare: take the client address from CF-Connecting-IP. */
  behindCloudflare: boolean;
  /** Caddy's admin endpoint: undefined keeps Caddy's default (localhost:2019), "off" disables it, or an address (unix//path). */
  admin?: string;
  /** Serve "ok" on http://127.0.0.1:<port> for the container's healthcheck. */
  healthPort?: number;
  /** Local twin: high ports, certificates from Caddy's own CA (unless `acme`), no system trust store changes. */
  local?: { httpPort: number; httpsPort: number };
  /** mir's certificate and key, as paths inside Caddy's container (a Cloudflare Origin CA certificate on the VPS). */
  mirTls?: { certFile: string; keyFile: string };
  /**
   * The ACME directory the sites without their own certificate use instead of
   * Let's Encrypt (the twin's pebble), and a root CA to trust it with. With
   * `local`, it replaces Caddy's own CA for those sites.
   */
  acme?: { directory: string; rootCaFile?: string };
  /** JSON access logs to stdout (on the VPS; docker's log limits apply). */
  accessLog: boolean;
}

const TOKEN = /^[A-Za-z0-9._~:@+/-]+$/;

/**
 * How long Caddy keeps an idle connection to a registry. The server closes
 * idle connections after its keepAliveTimeout (75 s, http.timeout.idle):
 * Caddy must let go first, or it may send a request down a connection Node is
 * closing at that instant and answer 502.
 */
export const UPSTREAM_KEEPALIVE = '60s';

/** Go's canonical form of a header name (textproto.CanonicalMIMEHeaderKey): the key Caddy's logs use. */
export function canonicalHeaderName(name: string): string {
  return name
    .split('-')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase())
    .join('-');
}

/** A `format filter` that deletes these request headers (2.6's syntax, which current Caddy still reads), as indented lines. */
export function logFilterLines(headers: string[], indent: string): string[] {
  return [
    `${indent}format filter {`,
    `${indent}\twrap json`,
    `${indent}\tfields {`,
    ...headers.map((h) => `${indent}\t\trequest>headers>${canonicalHeaderName(h)} delete`),
    `${indent}\t}`,
    `${indent}}`,
  ];
}

function token(name: string, value: string): string {
  if (!TOKEN.test(value)) throw new Error(`caddyfile: ${name} "${value}" has characters Caddyfile tokens cannot carry`);
  return value;
}

/** The JSON error body of the distribution spec, for answers Caddy gives itself. */
function specError(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message, detail: null }] });
}

const DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+$|^0$/;

/** The lines a reverse_proxy block gets to balance over several upstreams (none for one). */
export function loadBalancingLines(lb: LoadBalancing | undefined, upstreams: number): string[] {
  if (upstreams < 2) return [];
  if (!lb) throw new Error('caddyfile: several upstreams need loadBalancing options');
  const d = (name: keyof LoadBalancing) => {
    if (!DURATION.test(lb[name])) throw new Error(`caddyfile: loadBalancing.${name} "${lb[name]}" is not a duration`);
    return lb[name];
  };
  if (!/^[a-z_]+$/.test(lb.policy)) throw new Error(`caddyfile: bad lb_policy ${lb.policy}`);
  if (!/^\/[A-Za-z0-9._~/-]*$/.test(lb.healthUri)) throw new Error(`caddyfile: bad health URI ${lb.healthUri}`);
  return [
    `lb_policy ${lb.policy}`,
    `lb_try_duration ${d('tryDuration')}`,
    `lb_try_interval ${d('tryInterval')}`,
    `health_uri ${lb.healthUri}`,
    `health_interval ${d('healthInterval')}`,
    `health_timeout ${d('healthTimeout')}`,
    'health_status 2xx',
    // Passive checks count failed connections only: a 5xx may be the upstream registry's
    // or the bucket's trouble, the same on every replica, and must not empty the pool.
    `fail_duration ${d('failDuration')}`,
    'max_fails 1',
  ];
}

const list = (v: string | string[]) => (Array.isArray(v) ? v : [v]);

export function renderCaddyfile(o: CaddyfileOptions): string {
  const dcr = token('dcrHost', o.dcrHost);
  const mir = token('mirHost', o.mirHost);
  const header = token('originHeader', o.originHeader);
  const secret = token('originSecret', o.originSecret);
  const privateUps = list(o.privateUpstream).map((u) => token('privateUpstream', u));
  const mirrorUps = list(o.mirrorUpstream).map((u) => token('mirrorUpstream', u));
  if (privateUps.length === 0 || mirrorUps.length === 0) throw new Error('caddyfile: each host needs at least one upstream');
  const privateUp = privateUps.join(' ');
  const mirrorUp = mirrorUps.join(' ');
  const privateLb = loadBalancingLines(o.loadBalancing, privateUps.length).map((l) => `\t\t${l}`);
  const mirrorLb = loadBalancingLines(o.loadBalancing, mirrorUps.length).map((l) => `\t\t\t${l}`);

  const global: string[] = [];
  if (o.acmeEmail) global.push(`\temail ${token('acmeEmail', o.acmeEmail)}`);
  if (o.acme) {
    global.push(`\tacme_ca ${token('acme.directory', o.acme.directory)}`);
    if (o.acme.rootCaFile) global.push(`\tacme_ca_root ${token('acme.rootCaFile', o.acme.rootCaFile)}`);
  }
  if (o.admin !== undefined) global.push(`\tadmin ${o.admin === 'off' ? 'off' : token('admin', o.admin)}`);
  const internalCa = o.local !== undefined && o.acme === undefined;
  if (o.local) {
    global.push(`\thttp_port ${o.local.httpPort}`, `\thttps_port ${o.local.httpsPort}`, '\tskip_install_trust');
    if (internalCa) global.push('\tlocal_certs');
  }
  const filtered = logFilterLines([header], '\t\t');
  // The default logger carries the handler errors, each with its request's headers.
  global.push('\tlog default {', '\t\toutput stderr', ...filtered, '\t}');

  const dcrTls = internalCa ? ['\ttls internal'] : [];
  const mirTls = o.mirTls
    ? [`\ttls ${token('mirTls.certFile', o.mirTls.certFile)} ${token('mirTls.keyFile', o.mirTls.keyFile)}`]
    : internalCa
      ? ['\ttls internal']
      : [];
  const log = o.accessLog ? ['\tlog {', '\t\toutput stdout', ...filtered, '\t}'] : [];
  const proxyOpts = ['\t\tflush_interval -1', '\t\ttransport http {', `\t\t\tkeepalive ${UPSTREAM_KEEPALIVE}`, '\t\t}'];

  const lines: string[] = [
    '# Rendered by registry-stack (infra/render/caddyfile.ts). Do not edit: `pulumi up` overwrites it.',
    '{',
    ...global,
    '}',
    '',
    `# The private registry. DNS only: pushes reach Caddy directly and no request body limit applies.`,
    `${dcr} {`,
    ...dcrTls,
    ...log,
    '\theader {',
    '\t\tStrict-Transport-Security "max-age=31536000"',
    '\t\t-Server',
    '\t}',
    `\treverse_proxy ${privateUp} {`,
    ...proxyOpts,
    ...privateLb,
    '\t}',
    '}',
    '',
    `# The pull-through mirror, behind Cloudflare. Requests must carry the origin header that`,
    `# Cloudflare's transform rule adds; only reads pass.`,
    `${mir} {`,
    ...mirTls,
    ...log,
    `\t@direct not header ${header} "${secret}"`,
    '\thandle @direct {',
    '\t\trespond "direct access to the mirror origin is not allowed" 403',
    '\t}',
    '\t@read method GET HEAD OPTIONS',
    '\thandle @read {',
    `\t\treverse_proxy ${mirrorUp} {`,
    `\t\t\theader_up -${header}`,
    ...(o.behindCloudflare ? ['\t\t\theader_up X-Forwarded-For {http.request.header.CF-Connecting-IP}'] : []),
    ...proxyOpts.map((l) => `\t${l}`),
    ...mirrorLb,
    '\t\t}',
    '\t}',
    '\thandle {',
    '\t\theader Content-Type application/json',
    '\t\theader Allow "GET, HEAD, OPTIONS"',
    `\t\trespond \`${specError('UNSUPPORTED', 'the mirror is read-only: push to the private registry instead')}\` 405`,
    '\t}',
    '}',
    '',
    ...(o.healthPort
      ? [
          `# Container-local liveness for the healthcheck (not published).`,
          `http://127.0.0.1:${o.healthPort} {`,
          '\tbind 127.0.0.1',
          '\trespond "ok" 200',
          '}',
          '',
        ]
      : []),
  ];
  return lines.join('\n');
}
