// The Caddyfile: Caddy terminates TLS for both hosts.
//   dcr.<domain> → the private registry. The DNS record is DNS-only, so pushes
//     reach Caddy directly (Cloudflare's proxy caps request bodies); no
//     request_body limit is set, so Caddy streams bodies of any size.
//   mir.<domain> → the mirror, reachable only through Cloudflare: its transform
//     rule adds a secret origin header, and anything arriving without it gets a
//     403. The mirror is read-only: only GET, HEAD and OPTIONS pass.
// The local twin renders the same sites with `tls internal` on high ports.

export interface CaddyfileOptions {
  dcrHost: string;
  mirHost: string;
  /** Where the private registry listens (registry:5000 on the VPS, 127.0.0.1:PORT locally). */
  privateUpstream: string;
  mirrorUpstream: string;
  originHeader: string;
  originSecret: string;
  acmeEmail?: string;
  /** The mirror sits behind Cloudflare: take the client address from CF-Connecting-IP. */
  behindCloudflare: boolean;
  /** Caddy's admin endpoint: undefined keeps Caddy's default (localhost:2019), "off" disables it, or an address (unix//path). */
  admin?: string;
  /** Serve "ok" on http://127.0.0.1:<port> for the container's healthcheck. */
  healthPort?: number;
  /** Local twin: high ports, certificates from Caddy's own CA, no system trust store changes. */
  local?: { httpPort: number; httpsPort: number };
  /** JSON access logs to stdout (on the VPS; docker's log limits apply). */
  accessLog: boolean;
}

const TOKEN = /^[A-Za-z0-9._~:@+/-]+$/;

function token(name: string, value: string): string {
  if (!TOKEN.test(value)) throw new Error(`caddyfile: ${name} "${value}" has characters Caddyfile tokens cannot carry`);
  return value;
}

/** The JSON error body of the distribution spec, for answers Caddy gives itself. */
function specError(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message, detail: null }] });
}

export function renderCaddyfile(o: CaddyfileOptions): string {
  const dcr = token('dcrHost', o.dcrHost);
  const mir = token('mirHost', o.mirHost);
  const header = token('originHeader', o.originHeader);
  const secret = token('originSecret', o.originSecret);
  const privateUp = token('privateUpstream', o.privateUpstream);
  const mirrorUp = token('mirrorUpstream', o.mirrorUpstream);

  const global: string[] = [];
  if (o.acmeEmail) global.push(`email ${token('acmeEmail', o.acmeEmail)}`);
  if (o.admin !== undefined) global.push(`admin ${o.admin === 'off' ? 'off' : token('admin', o.admin)}`);
  if (o.local) {
    global.push(`http_port ${o.local.httpPort}`, `https_port ${o.local.httpsPort}`, 'skip_install_trust', 'local_certs');
  }

  const tls = o.local ? ['\ttls internal'] : [];
  const log = o.accessLog ? ['\tlog {', '\t\toutput stdout', '\t\tformat json', '\t}'] : [];
  const proxyOpts = ['\t\tflush_interval -1'];

  const lines: string[] = [
    '# Rendered by registry-stack (infra/render/caddyfile.ts). Do not edit: `pulumi up` overwrites it.',
    '{',
    ...global.map((g) => `\t${g}`),
    '}',
    '',
    `# The private registry. DNS only: pushes reach Caddy directly and no request body limit applies.`,
    `${dcr} {`,
    ...tls,
    ...log,
    '\theader {',
    '\t\tStrict-Transport-Security "max-age=31536000"',
    '\t\t-Server',
    '\t}',
    `\treverse_proxy ${privateUp} {`,
    ...proxyOpts,
    '\t}',
    '}',
    '',
    `# The pull-through mirror, behind Cloudflare. Requests must carry the origin header that`,
    `# Cloudflare's transform rule adds; only reads pass.`,
    `${mir} {`,
    ...tls,
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
