// The four rulesets the stack deploys, read the way Cloudflare runs them.
//
// Rules arrive in the shape of infra/render/cloudflare.ts (ref, description,
// expression, action, actionParameters, enabled), written out with
// JSON.stringify. Everything is checked when the edge starts: an expression
// that does not parse, an action or a parameter the twin does not model, is an
// error naming the rule, so a ruleset the twin cannot honour never runs with a
// piece of it quietly ignored.
import { compile, type Predicate, type RequestFields } from './expression.ts';

export interface Rule {
  ref?: string;
  description?: string;
  expression: string;
  action: string;
  actionParameters?: Record<string, unknown>;
  enabled?: boolean;
}

export const PHASES = ['http_config_settings', 'http_request_firewall_custom', 'http_request_cache_settings', 'http_request_late_transform'] as const;
export type Phase = (typeof PHASES)[number];
export type Rulesets = Partial<Record<Phase, Rule[]>>;

/** Cloudflare's SSL modes for the connection to the origin. */
export type SslMode = 'off' | 'flexible' | 'full' | 'strict';
const SSL_MODES: readonly string[] = ['off', 'flexible', 'full', 'strict'];

export interface StatusCodeTtl {
  statusCode?: number;
  statusCodeRange?: { from?: number; to?: number };
  /** Seconds; -1 = do not cache this status, 0 = cache but revalidate every time (the twin: do not cache). */
  value: number;
}

export interface EdgeTtl {
  mode: 'respect_origin' | 'override_origin' | 'bypass_by_default';
  default?: number;
  statusCodeTtls?: StatusCodeTtl[];
}

export interface BrowserTtl {
  mode: 'respect_origin' | 'override_origin';
  default?: number;
}

/** The cache settings of the matching cache rules, merged. */
export interface CacheSettings {
  cache?: boolean;
  edgeTtl?: EdgeTtl;
  browserTtl?: BrowserTtl;
  respectStrongEtags?: boolean;
  /** The refs of the rules that matched, in order (for the log). */
  matched: string[];
}

export type FirewallVerdict =
  | { action: 'allow'; matched: string[] }
  | { action: 'block'; ref: string; matched: string[]; response?: { statusCode: number; content: string; contentType: string } };

export type HeaderOp = { name: string; operation: 'set' | 'add'; value: string } | { name: string; operation: 'remove' };

export interface CompiledRules {
  /** The SSL mode a configuration rule sets for this request, if any. */
  sslMode(fields: RequestFields): SslMode | undefined;
  firewall(fields: RequestFields): FirewallVerdict;
  /** undefined when no cache rule matched (Cloudflare's default caching applies). */
  cacheSettings(fields: RequestFields): CacheSettings | undefined;
  /** Header changes for the request to the origin. */
  requestHeaders(fields: RequestFields): HeaderOp[];
}

export class RuleError extends Error {
  constructor(phase: string, index: number, rule: Partial<Rule> | undefined, message: string) {
    super(`${phase}[${index}]${rule?.ref ? ` (${rule.ref})` : ''}: ${message}`);
    this.name = 'RuleError';
  }
}

interface Compiled<P> {
  ref: string;
  matches: Predicate;
  params: P;
}

/** Checks and compiles every enabled rule; throws a RuleError on the first one the twin cannot honour. */
export function compileRulesets(rulesets: Rulesets): CompiledRules {
  for (const phase of Object.keys(rulesets)) {
    if (!(PHASES as readonly string[]).includes(phase)) {
      throw new RuleError(phase, 0, undefined, `unknown phase (the twin runs ${PHASES.join(', ')})`);
    }
  }
  const config = compilePhase(rulesets, 'http_config_settings', checkConfigRule);
  const firewall = compilePhase(rulesets, 'http_request_firewall_custom', checkFirewallRule);
  const cache = compilePhase(rulesets, 'http_request_cache_settings', checkCacheRule);
  const transform = compilePhase(rulesets, 'http_request_late_transform', checkTransformRule);

  return {
    sslMode(fields) {
      // Configuration rules stack: the last matching rule that sets a value wins.
      let mode: SslMode | undefined;
      for (const r of config) if (r.matches(fields)) mode = r.params.ssl ?? mode;
      return mode;
    },

    firewall(fields) {
      const matched: string[] = [];
      for (const r of firewall) {
        if (!r.matches(fields)) continue;
        matched.push(r.ref);
        const p = r.params;
        if (p.action === 'block') return { action: 'block', ref: r.ref, matched, ...(p.response ? { response: p.response } : {}) };
        // Skipping the rest of the current ruleset ends the custom phase; skipping
        // later phases or products (bot fight mode, browser integrity check...)
        // skips things the twin does not run, so evaluation simply goes on.
        if (p.action === 'skip' && p.skipRestOfRuleset) break;
      }
      return { action: 'allow', matched };
    },

    cacheSettings(fields) {
      // Cache rules stack too: every matching rule applies in order, and a
      // setting a later rule also sets is overwritten (Cloudflare's "last
      // matching rule wins" per setting, not per rule).
      let merged: CacheSettings | undefined;
      for (const r of cache) {
        if (!r.matches(fields)) continue;
        merged = { ...merged, ...r.params, matched: [...(merged?.matched ?? []), r.ref] };
      }
      return merged;
    },

    requestHeaders(fields) {
      return transform.filter((r) => r.matches(fields)).flatMap((r) => r.params);
    },
  };
}

function compilePhase<P>(rulesets: Rulesets, phase: Phase, check: (params: Record<string, unknown>, rule: Rule) => P): Compiled<P>[] {
  const rules = rulesets[phase] ?? [];
  if (!Array.isArray(rules)) throw new RuleError(phase, 0, undefined, 'must be a list of rules');
  const out: Compiled<P>[] = [];
  rules.forEach((rule, index) => {
    const fail = (message: string): never => {
      throw new RuleError(phase, index, rule, message);
    };
    if (typeof rule !== 'object' || rule === null) fail('must be an object');
    if (rule.enabled === false) return;
    if (typeof rule.expression !== 'string') fail('expression must be a string');
    if (typeof rule.action !== 'string') fail('action must be a string');
    let matches: Predicate;
    try {
      matches = compile(rule.expression);
    } catch (e) {
      return fail((e as Error).message);
    }
    let params: P;
    try {
      params = check(withoutNulls(rule.actionParameters ?? {}), rule);
    } catch (e) {
      return fail((e as Error).message);
    }
    out.push({ ref: rule.ref ?? `${phase}[${index}]`, matches, params });
  });
  return out;
}

// The Pulumi SDK's input types make every parameter optional; a serialised
// rule may carry `null` for one it does not set. Null means "not set" here.
function withoutNulls(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined));
}

function onlyKeys(params: Record<string, unknown>, allowed: string[], what: string): void {
  const extra = Object.keys(params).filter((k) => !allowed.includes(k));
  if (extra.length) throw new Error(`${what}: ${extra.join(', ')} not modelled by the twin (it knows ${allowed.join(', ')})`);
}

function checkConfigRule(p: Record<string, unknown>, rule: Rule): { ssl?: SslMode } {
  if (rule.action !== 'set_config') throw new Error(`action "${rule.action}" is not a configuration rule action (set_config)`);
  onlyKeys(p, ['ssl'], 'set_config parameters');
  if (p.ssl !== undefined && !SSL_MODES.includes(p.ssl as string)) throw new Error(`ssl must be one of ${SSL_MODES.join(', ')}, not ${JSON.stringify(p.ssl)}`);
  return p.ssl === undefined ? {} : { ssl: p.ssl as SslMode };
}

type FirewallParams =
  | { action: 'block'; response?: { statusCode: number; content: string; contentType: string } }
  | { action: 'skip'; skipRestOfRuleset: boolean }
  | { action: 'log' };

function checkFirewallRule(p: Record<string, unknown>, rule: Rule): FirewallParams {
  switch (rule.action) {
    case 'block': {
      onlyKeys(p, ['response'], 'block parameters');
      if (p.response === undefined) return { action: 'block' };
      const r = withoutNulls(p.response as Record<string, unknown>);
      const statusCode = Number(r.statusCode ?? 403);
      if (!Number.isInteger(statusCode) || statusCode < 400 || statusCode > 499) throw new Error('block response statusCode must be 400-499');
      return { action: 'block', response: { statusCode, content: String(r.content ?? ''), contentType: String(r.contentType ?? 'text/plain') } };
    }
    // Challenges cannot be solved by a registry client: to the clients the twin
    // serves they are a block, so the twin treats them as one.
    case 'challenge':
    case 'js_challenge':
    case 'managed_challenge':
      return { action: 'block' };
    case 'skip': {
      onlyKeys(p, ['ruleset', 'phases', 'products', 'rules'], 'skip parameters');
      if (p.ruleset !== undefined && p.ruleset !== 'current') throw new Error('skip ruleset must be "current"');
      return { action: 'skip', skipRestOfRuleset: p.ruleset === 'current' };
    }
    case 'log':
      return { action: 'log' };
    default:
      throw new Error(`action "${rule.action}" is not modelled in the custom firewall phase (block, challenge, js_challenge, managed_challenge, skip, log)`);
  }
}

function checkCacheRule(p: Record<string, unknown>, rule: Rule): Omit<CacheSettings, 'matched'> {
  if (rule.action !== 'set_cache_settings') throw new Error(`action "${rule.action}" is not a cache rule action (set_cache_settings)`);
  // respectStrongEtags is accepted and has nothing to do here: it keeps a
  // strong ETag when Cloudflare transforms a body, and the twin never does.
  onlyKeys(p, ['cache', 'edgeTtl', 'browserTtl', 'respectStrongEtags'], 'set_cache_settings parameters');
  const out: Omit<CacheSettings, 'matched'> = {};
  if (p.cache !== undefined) {
    if (typeof p.cache !== 'boolean') throw new Error('cache must be true or false');
    out.cache = p.cache;
  }
  if (p.respectStrongEtags !== undefined) out.respectStrongEtags = Boolean(p.respectStrongEtags);
  if (p.edgeTtl !== undefined) out.edgeTtl = checkEdgeTtl(withoutNulls(p.edgeTtl as Record<string, unknown>));
  if (p.browserTtl !== undefined) {
    const b = withoutNulls(p.browserTtl as Record<string, unknown>);
    onlyKeys(b, ['mode', 'default'], 'browserTtl');
    if (b.mode !== 'respect_origin' && b.mode !== 'override_origin') throw new Error(`browserTtl.mode ${JSON.stringify(b.mode)} is not modelled (respect_origin, override_origin)`);
    if (b.mode === 'override_origin' && !isSeconds(b.default)) throw new Error('browserTtl override_origin needs default (seconds)');
    out.browserTtl = { mode: b.mode, ...(b.default !== undefined ? { default: Number(b.default) } : {}) };
  }
  return out;
}

function checkEdgeTtl(e: Record<string, unknown>): EdgeTtl {
  onlyKeys(e, ['mode', 'default', 'statusCodeTtls'], 'edgeTtl');
  const modes = ['respect_origin', 'override_origin', 'bypass_by_default'];
  if (!modes.includes(e.mode as string)) throw new Error(`edgeTtl.mode must be one of ${modes.join(', ')}, not ${JSON.stringify(e.mode)}`);
  if (e.mode === 'override_origin' && !isSeconds(e.default)) throw new Error('edgeTtl override_origin needs default (seconds)');
  const out: EdgeTtl = { mode: e.mode as EdgeTtl['mode'] };
  if (e.default !== undefined) out.default = Number(e.default);
  if (e.statusCodeTtls !== undefined) {
    if (!Array.isArray(e.statusCodeTtls)) throw new Error('edgeTtl.statusCodeTtls must be a list');
    out.statusCodeTtls = e.statusCodeTtls.map((raw, i) => {
      const s = withoutNulls(raw as Record<string, unknown>);
      onlyKeys(s, ['statusCode', 'statusCodeRange', 'value'], `statusCodeTtls[${i}]`);
      if (!Number.isInteger(s.value) || (s.value as number) < -1) throw new Error(`statusCodeTtls[${i}].value must be seconds, or -1 (no-store)`);
      if ((s.statusCode === undefined) === (s.statusCodeRange === undefined)) throw new Error(`statusCodeTtls[${i}] needs one of statusCode, statusCodeRange`);
      const range = s.statusCodeRange === undefined ? undefined : withoutNulls(s.statusCodeRange as Record<string, unknown>);
      return {
        value: s.value as number,
        ...(s.statusCode !== undefined ? { statusCode: Number(s.statusCode) } : {}),
        ...(range ? { statusCodeRange: { ...(range.from !== undefined ? { from: Number(range.from) } : {}), ...(range.to !== undefined ? { to: Number(range.to) } : {}) } } : {}),
      };
    });
  }
  return out;
}

function isSeconds(v: unknown): boolean {
  return Number.isInteger(v) && (v as number) >= 0;
}

function checkTransformRule(p: Record<string, unknown>, rule: Rule): HeaderOp[] {
  if (rule.action !== 'rewrite') throw new Error(`action "${rule.action}" is not a transform rule action (rewrite)`);
  onlyKeys(p, ['headers'], 'rewrite parameters (URI rewrites are not modelled)');
  const headers = (p.headers ?? {}) as Record<string, Record<string, unknown>>;
  return Object.entries(headers).map(([name, raw]) => {
    const h = withoutNulls(raw ?? {});
    if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) throw new Error(`header name ${JSON.stringify(name)} is not a token`);
    if (h.expression !== undefined) throw new Error(`header ${name}: dynamic values (expression) are not modelled by the twin`);
    if (h.operation === 'remove') return { name: name.toLowerCase(), operation: 'remove' as const };
    if (h.operation !== 'set' && h.operation !== 'add') throw new Error(`header ${name}: operation must be set, add or remove`);
    if (typeof h.value !== 'string') throw new Error(`header ${name}: value must be a string (a secret written out by the twin is a plain string)`);
    return { name: name.toLowerCase(), operation: h.operation, value: h.value };
  });
}

// ---- the fields a request shows to the rules ---------------------------------

export interface VisitorRequest {
  scheme: 'http' | 'https';
  /** The host name, lower case, without a port. */
  host: string;
  method: string;
  /** The request target as received: path and query. */
  url: string;
  userAgent: string;
  clientIp: string;
}

export function requestFields(r: VisitorRequest): RequestFields {
  const q = r.url.indexOf('?');
  const rawPath = q < 0 ? r.url : r.url.slice(0, q);
  return {
    'http.host': r.host,
    'http.request.method': r.method,
    'http.request.uri': r.url,
    // Rules see the normalised path (Cloudflare normalises incoming URLs by
    // default), so /v2/../admin cannot slip past a rule on /admin; the origin
    // still gets the URL as sent ("normalize URLs to origin" is off by default).
    'http.request.uri.path': normalizePath(rawPath),
    'http.request.uri.query': q < 0 ? '' : r.url.slice(q + 1),
    'http.request.full_uri': `${r.scheme}://${r.host}${r.url}`,
    'http.user_agent': r.userAgent,
    'ip.src': r.clientIp,
    ssl: r.scheme === 'https',
  };
}

/**
 * Cloudflare's URL normalisation: backslashes become slashes, percent-encoded
 * unreserved characters are decoded (the rest upper-cased), repeated slashes
 * merged, and "." and ".." segments resolved (RFC 3986, 5.2.4).
 */
export function normalizePath(path: string): string {
  let p = path.replace(/\\/g, '/');
  p = p.replace(/%([0-9a-fA-F]{2})/g, (_m, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16));
    return /[A-Za-z0-9\-._~]/.test(c) ? c : `%${hex.toUpperCase()}`;
  });
  p = p.replace(/\/{2,}/g, '/');
  const out: string[] = [];
  const segments = p.split('/');
  segments.forEach((seg, i) => {
    const last = i === segments.length - 1;
    if (seg === '.') {
      if (last) out.push('');
    } else if (seg === '..') {
      if (out.length > 1) out.pop();
      if (last) out.push('');
    } else {
      out.push(seg);
    }
  });
  const joined = out.join('/');
  return joined.startsWith('/') ? joined : `/${joined}`;
}
