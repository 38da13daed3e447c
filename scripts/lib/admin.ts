// Client for the registry server's admin listener (POST /admin/gc,
// POST /admin/prune), shared by gc.ts and prune.ts.
import { readFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import type { z } from 'zod';
import { describeError, httpRequest } from './http.ts';
import type { Logger } from './log.ts';
import { redactUrl, scrub } from './redact.ts';
import { type Fallbacks, UsageError } from './cli.ts';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:5001';

export interface AdminTarget {
  /** "private", "mirror", … or the URL's host:port when no name was given. */
  name: string;
  /** Base URL of the admin listener, no trailing slash. */
  url: string;
}

export interface AdminOptions {
  adminUrl?: string[];
  token?: string;
  tokenFile?: string;
}

/** `example` is a --admin-url value the help shows: one the script can work on (prune only works on a mirror). */
export function adminOptions(envPrefix: string, what: string, example: string): Option[] {
  return [
    new Option(
      '--admin-url <[name=]url>',
      `admin listener of ${what} (repeatable, or comma-separated), e.g. ${example} (default: ${DEFAULT_ADMIN_URL})`,
    )
      .env(`${envPrefix}_ADMIN_URLS`)
      .argParser((value: string, previous: string[] | undefined) => [
        ...(previous ?? []),
        ...value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean),
      ]),
    new Option('--token <token>', "bearer token for /admin/* (the server's admin.token)").env('REGISTRY_ADMIN_TOKEN'),
    new Option('--token-file <path>', 'read the bearer token from this file (keeps it out of ps and crontab)').env(
      'REGISTRY_ADMIN_TOKEN_FILE',
    ),
  ];
}

export function parseTargets(values: string[] | undefined): AdminTarget[] {
  const list = values && values.length > 0 ? values : [DEFAULT_ADMIN_URL];
  const targets = list.map((value) => {
    const m = /^([A-Za-z0-9_.-]+)=(.*)$/.exec(value);
    const raw = m ? m[2] : value;
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new UsageError(`--admin-url ${value.includes("@") ? "(value not shown)" : value}: not a URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--admin-url ${value}: must be http(s)`);
    if (u.username || u.password) throw new UsageError(`--admin-url: put credentials in --token, not in the URL`);
    return { name: m ? m[1] : u.host, url: `${u.origin}${u.pathname.replace(/\/+$/, '')}` };
  });
  const names = new Set<string>();
  for (const t of targets) {
    if (names.has(t.name)) throw new UsageError(`--admin-url: instance ${t.name} given twice`);
    names.add(t.name);
  }
  return targets;
}

/**
 * The bearer token. The more explicit source wins: --token, then --token-file
 * (flags), then REGISTRY_ADMIN_TOKEN, REGISTRY_ADMIN_TOKEN_FILE, OPS_ADMIN_TOKEN.
 */
export function resolveToken(program: Command): string | undefined {
  const opts = program.opts<AdminOptions>();
  const rank = (key: 'token' | 'tokenFile') => {
    const src = program.getOptionValueSource(key);
    return src === 'cli' ? 0 : src === 'env' ? 1 : 2;
  };
  const fromFile = () => {
    if (!opts.tokenFile) return undefined;
    try {
      return readFileSync(opts.tokenFile, 'utf8').trim() || undefined;
    } catch (err) {
      throw new UsageError(`--token-file ${opts.tokenFile}: ${describeError(err)}`);
    }
  };
  if (opts.tokenFile && (!opts.token || rank('tokenFile') < rank('token'))) return fromFile();
  if (opts.token) return opts.token.trim() || undefined;
  return process.env.OPS_ADMIN_TOKEN?.trim() || undefined;
}

/** OPS_* fallbacks (infra's env file) for --admin-url: gc collects both instances, prune the mirror. */
export function adminFallbacks(kind: 'gc' | 'prune'): Fallbacks {
  return {
    adminUrl: () => {
      const list: string[] = [];
      const priv = process.env.OPS_PRIVATE_ADMIN_URL?.trim();
      const mirror = process.env.OPS_MIRROR_ADMIN_URL?.trim();
      if (priv && kind === 'gc') list.push(`private=${priv}`);
      if (mirror) list.push(`mirror=${mirror}`);
      return list.length > 0 ? list : undefined;
    },
  };
}

export type AdminCallResult<T> =
  | { ok: true; status: number; result: T }
  | { ok: false; status?: number; error: string };

/** POST <target>/<path>?<query>; validates a 200 body with `schema`. */
export async function postAdmin<T>(
  target: AdminTarget,
  path: string,
  query: Record<string, string>,
  schema: z.ZodType<T>,
  token: string | undefined,
  timeoutMs: number,
  explain: Record<number, string> = {},
): Promise<AdminCallResult<T>> {
  const url = `${target.url}${path}?${new URLSearchParams(query)}`;
  const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'registry-stack-scripts' };
  if (token) headers.authorization = `Bearer ${token}`;
  let res;
  try {
    res = await httpRequest({ url, method: 'POST', headers, timeoutMs, body: '' });
  } catch (err) {
    return { ok: false, error: `unreachable: ${scrub(describeError(err), [token])}` };
  }
  if (res.status !== 200) {
    const known: Record<number, string> = {
      401: token ? 'unauthorized: the token was refused' : 'unauthorized: set --token or REGISTRY_ADMIN_TOKEN',
      403: 'forbidden',
      404: 'no such endpoint (is this the admin listener of a current server?)',
      ...explain,
    };
    const snippet = scrub(res.text().slice(0, 300), [token]).trim();
    return {
      ok: false,
      status: res.status,
      error: `${known[res.status] ?? `HTTP ${res.status}`}${snippet ? ` (${oneLine(snippet)})` : ''}`,
    };
  }
  let body: unknown;
  try {
    body = res.json();
  } catch {
    return { ok: false, status: res.status, error: 'response is not JSON' };
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      ok: false,
      status: res.status,
      error: `unexpected response: ${issue ? `${issue.path.join('.') || '(body)'}: ${issue.message}` : 'invalid'}`,
    };
  }
  return { ok: true, status: res.status, result: parsed.data };
}

/** For log lines: the target without anything secret. */
export function describeTarget(t: AdminTarget): Record<string, string> {
  return { instance: t.name, adminUrl: redactUrl(t.url) };
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ');
}

export type { Logger };
