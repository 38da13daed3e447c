// Cloudflare rules for the mirror host, as plain data (the shape of
// cloudflare.Ruleset rules), so tests can read the expressions and TTLs and
// the program only wires them to resources. Only mir.<domain> is proxied;
// dcr.<domain> is DNS-only and never sees these rules.
//
// The SDK's own parameter type keeps a misspelt field (edgeTTL, statusCodeTTLs)
// from reaching Cloudflare, which would ignore or refuse it only at `pulumi up`.
// A type-only import: this module stays plain data, with no Pulumi runtime.
import type * as cloudflare from '@pulumi/cloudflare';
import type { StackConfig } from '../config.ts';

export type ActionParameters = cloudflare.types.input.RulesetRuleActionParameters;

export interface Rule {
  ref: string;
  description: string;
  expression: string;
  action: string;
  actionParameters?: ActionParameters;
  enabled: boolean;
}

const q = (s: string) => JSON.stringify(s);

export function mirrorHostExpr(cfg: StackConfig): string {
  return `http.host eq ${q(cfg.derived.mirHost)}`;
}

/** The registry API, and the health endpoints the monitor job checks through the CDN. */
const onV2 = '(http.request.uri.path in {"/v2" "/healthz" "/readyz"} or starts_with(http.request.uri.path, "/v2/"))';
const readMethods = 'http.request.method in {"GET" "HEAD" "OPTIONS"}';

/**
 * Cache settings: content addressed by digest is immutable and cached long.
 * Manifests by tag are not cached at the edge at all: the answer to a tag
 * depends on the Accept header (an index or a single-platform manifest, OCI or
 * Docker media types), and the free plan's cache key is the URL alone, so a
 * cached answer would be served to clients that asked for another type. A
 * manifest by digest is the same bytes whatever the Accept, so that one stays.
 */
export function cacheRules(cfg: StackConfig): Rule[] {
  const host = mirrorHostExpr(cfg);
  const noErrors = [{ statusCodeRange: { from: 400, to: 599 }, value: -1 }];
  const immutable = (ref: string, description: string, pathTest: string): Rule => ({
    ref,
    description,
    expression: `(${host} and starts_with(http.request.uri.path, "/v2/") and ${pathTest})`,
    action: 'set_cache_settings',
    actionParameters: {
      cache: true,
      edgeTtl: { mode: 'override_origin', default: cfg.cloudflare.immutableTtl, statusCodeTtls: noErrors },
      browserTtl: { mode: 'respect_origin' },
      respectStrongEtags: true,
    },
    enabled: true,
  });
  return [
    immutable('mirror_blobs', 'mirror: blobs by digest are immutable, cache them long (Range requests are served from the cached blob)', 'http.request.uri.path contains "/blobs/sha256:"'),
    immutable('mirror_manifests_by_digest', 'mirror: manifests by digest are immutable, cache them long', 'http.request.uri.path contains "/manifests/sha256:"'),
    {
      ref: 'mirror_manifests_by_tag',
      description: 'mirror: manifests by tag are never cached at the edge (the answer depends on Accept; the cache key is the URL)',
      expression: `(${host} and starts_with(http.request.uri.path, "/v2/") and http.request.uri.path contains "/manifests/" and not http.request.uri.path contains "/manifests/sha256:")`,
      action: 'set_cache_settings',
      actionParameters: { cache: false },
      enabled: true,
    },
  ];
}

/** WAF custom rules: only reads of the registry API reach the mirror, and registry clients are not challenged. */
export function wafRules(cfg: StackConfig): Rule[] {
  const host = mirrorHostExpr(cfg);
  return [
    {
      ref: 'mirror_skip_challenges',
      description: 'mirror: registry clients are not browsers, skip bot and browser checks for API reads',
      expression: `(${host} and ${readMethods} and ${onV2})`,
      action: 'skip',
      actionParameters: { phases: ['http_request_sbfm'], products: ['bic', 'hot', 'securityLevel', 'uaBlock'] },
      enabled: true,
    },
    {
      ref: 'mirror_read_only',
      description: 'mirror: only GET, HEAD and OPTIONS on /v2/ (and /healthz, /readyz), everything else is blocked',
      expression: `(${host} and not (${readMethods} and ${onV2}))`,
      action: 'block',
      enabled: true,
    },
  ];
}

/** What a header rewrite's value may be: the secret itself, or the Output holding it. */
type ActionParametersHeaderValue = cloudflare.types.input.RulesetRuleActionParametersHeaders['value'];

/** Late transform: add the secret origin header Caddy checks, so the mirror cannot be reached around the CDN. */
export function originHeaderRule<T extends ActionParametersHeaderValue>(cfg: StackConfig, secret: T): Omit<Rule, 'actionParameters'> & {
  actionParameters: ActionParameters & { headers: Record<string, { operation: 'set'; value: T }> };
} {
  return {
    ref: 'mirror_origin_header',
    description: 'mirror: prove to the origin that the request came through Cloudflare',
    expression: `(${mirrorHostExpr(cfg)})`,
    action: 'rewrite',
    actionParameters: { headers: { [cfg.cloudflare.originHeader]: { operation: 'set', value: secret } } },
    enabled: true,
  };
}

/** Configuration rule: Full (strict) TLS from Cloudflare to Caddy, for the mirror host only. */
export function strictTlsRule(cfg: StackConfig): Rule {
  return {
    ref: 'mirror_strict_tls',
    description: 'mirror: Cloudflare checks the origin certificate (Full strict)',
    expression: `(${mirrorHostExpr(cfg)})`,
    action: 'set_config',
    actionParameters: { ssl: 'strict' },
    enabled: true,
  };
}

/** One zone ruleset of the mirror: its resource key, Cloudflare phase, description and rules. */
export interface MirrorRuleset<T extends ActionParametersHeaderValue> {
  key: 'cache' | 'waf' | 'origin-header' | 'config';
  phase: 'http_request_cache_settings' | 'http_request_firewall_custom' | 'http_request_late_transform' | 'http_config_settings';
  description: string;
  rules: Array<Rule | ReturnType<typeof originHeaderRule<T>>>;
}

/**
 * Every ruleset the stack puts on the zone, with the conditions that decide
 * which exist: the Pulumi component creates them, the edge twin enforces them
 * and `npm run render` writes them, all from this list.
 */
export function mirrorRulesets<T extends ActionParametersHeaderValue>(cfg: StackConfig, originSecret: T): MirrorRuleset<T>[] {
  const out: MirrorRuleset<T>[] = [];
  // A private mirror's responses must not be cached by a shared CDN.
  if (cfg.cloudflare.cacheRules && !cfg.mirror.requireAuth) {
    out.push({ key: 'cache', phase: 'http_request_cache_settings', description: 'registry-stack: cache the mirror', rules: cacheRules(cfg) });
  }
  if (cfg.cloudflare.waf) {
    out.push({ key: 'waf', phase: 'http_request_firewall_custom', description: 'registry-stack: the mirror is read-only', rules: wafRules(cfg) });
  }
  out.push({
    key: 'origin-header',
    phase: 'http_request_late_transform',
    description: 'registry-stack: origin-check header for the mirror',
    rules: [originHeaderRule(cfg, originSecret)],
  });
  if (cfg.cloudflare.strictTls) {
    out.push({ key: 'config', phase: 'http_config_settings', description: 'registry-stack: Full (strict) TLS to the mirror origin', rules: [strictTlsRule(cfg)] });
  }
  return out;
}
