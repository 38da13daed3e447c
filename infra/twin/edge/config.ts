// The edge's configuration: one JSON file the twin writes (main.ts reads it),
// or the same object handed to startEdge() by a test. Checked by hand because
// the edge runs where only Node's own modules exist.
import * as path from 'node:path';
import { PHASES, type Rulesets } from './rules.ts';

export interface EdgeConfig {
  /** The proxied host names (e.g. mir.example.test); any other Host gets 403, error 1003. */
  hosts: string[];
  /** Ports for visitors (0 = any free port) and the address to bind (default 0.0.0.0). */
  listen: { http: number; https: number; address?: string };
  /** PEM files of the certificate the edge presents to visitors (Cloudflare's edge certificate). */
  tls: { cert: string; key: string };
  /** Where the proxied records point: the VPS. Ports default to 80 and 443. */
  origin: { host: string; httpPort?: number; httpsPort?: number };
  /** PEM file(s) of the CAs that "Cloudflare trusts" for origin certificates in Full (strict). */
  originCa?: string | string[];
  /** The rulesets, by phase, in the shape of infra/render/cloudflare.ts. */
  rulesets: Rulesets;
  /** The zone's SSL mode where no configuration rule sets one (default full). */
  zoneSsl?: 'off' | 'flexible' | 'full' | 'strict';
  /** Directory of the edge cache. */
  cacheDir: string;
  /** Larger responses stream through uncached (default 512 MiB, the free plan's limit). */
  maxCacheableBytes?: number;
  /** Larger request bodies get 413 (default 100 MB, the free plan's limit). */
  maxRequestBodyBytes?: number;
  /** Origin timeouts: connect (522, default 15 s) and waiting for response headers (524, default 100 s). */
  timeouts?: { connectMs?: number; responseMs?: number };
  /** The data-centre code at the end of CF-Ray (default TWN). */
  colo?: string;
}

export class EdgeConfigError extends Error {
  constructor(message: string) {
    super(`edge config: ${message}`);
    this.name = 'EdgeConfigError';
  }
}

/**
 * Checks a parsed config file. Relative file paths are taken relative to
 * `baseDir` (the config file's directory), so the file can sit next to its certificates.
 */
export function parseEdgeConfig(raw: unknown, baseDir = process.cwd()): EdgeConfig {
  const fail = (message: string): never => {
    throw new EdgeConfigError(message);
  };
  const obj = (v: unknown, name: string): Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : fail(`${name} must be an object`);
  const str = (v: unknown, name: string): string => (typeof v === 'string' && v !== '' ? v : fail(`${name} must be a non-empty string`));
  const port = (v: unknown, name: string): number => (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535 ? (v as number) : fail(`${name} must be a port number`));
  const positive = (v: unknown, name: string): number => (Number.isInteger(v) && (v as number) > 0 ? (v as number) : fail(`${name} must be a positive integer`));
  const file = (v: unknown, name: string) => path.resolve(baseDir, str(v, name));

  const c = obj(raw, 'the config');
  const known = ['hosts', 'listen', 'tls', 'origin', 'originCa', 'rulesets', 'zoneSsl', 'cacheDir', 'maxCacheableBytes', 'maxRequestBodyBytes', 'timeouts', 'colo'];
  const unknown = Object.keys(c).filter((k) => !known.includes(k));
  if (unknown.length) fail(`unknown key(s) ${unknown.join(', ')}`);

  if (!Array.isArray(c.hosts) || c.hosts.length === 0) fail('hosts must be a non-empty list of host names');
  const hosts = (c.hosts as unknown[]).map((h, i) => str(h, `hosts[${i}]`).toLowerCase());
  const listen = obj(c.listen, 'listen');
  const tls = obj(c.tls, 'tls');
  const origin = obj(c.origin, 'origin');
  const rulesets = obj(c.rulesets ?? {}, 'rulesets');
  for (const phase of Object.keys(rulesets)) {
    if (!(PHASES as readonly string[]).includes(phase)) fail(`rulesets.${phase} is not a phase the twin runs (${PHASES.join(', ')})`);
  }
  const zoneSsl = c.zoneSsl ?? 'full';
  if (!['off', 'flexible', 'full', 'strict'].includes(zoneSsl as string)) fail('zoneSsl must be off, flexible, full or strict');
  const cas = c.originCa === undefined ? [] : Array.isArray(c.originCa) ? c.originCa : [c.originCa];
  const timeouts = obj(c.timeouts ?? {}, 'timeouts');

  return {
    hosts,
    listen: { http: port(listen.http, 'listen.http'), https: port(listen.https, 'listen.https'), address: listen.address === undefined ? '0.0.0.0' : str(listen.address, 'listen.address') },
    tls: { cert: file(tls.cert, 'tls.cert'), key: file(tls.key, 'tls.key') },
    origin: {
      host: str(origin.host, 'origin.host'),
      httpPort: origin.httpPort === undefined ? 80 : port(origin.httpPort, 'origin.httpPort'),
      httpsPort: origin.httpsPort === undefined ? 443 : port(origin.httpsPort, 'origin.httpsPort'),
    },
    originCa: cas.map((f, i) => file(f, `originCa[${i}]`)),
    rulesets: rulesets as Rulesets,
    zoneSsl: zoneSsl as EdgeConfig['zoneSsl'],
    cacheDir: file(c.cacheDir, 'cacheDir'),
    maxCacheableBytes: c.maxCacheableBytes === undefined ? 512 * 1024 * 1024 : positive(c.maxCacheableBytes, 'maxCacheableBytes'),
    maxRequestBodyBytes: c.maxRequestBodyBytes === undefined ? 100 * 1000 * 1000 : positive(c.maxRequestBodyBytes, 'maxRequestBodyBytes'),
    timeouts: {
      connectMs: timeouts.connectMs === undefined ? 15_000 : positive(timeouts.connectMs, 'timeouts.connectMs'),
      responseMs: timeouts.responseMs === undefined ? 100_000 : positive(timeouts.responseMs, 'timeouts.responseMs'),
    },
    colo: c.colo === undefined ? 'TWN' : str(c.colo, 'colo'),
  };
}
