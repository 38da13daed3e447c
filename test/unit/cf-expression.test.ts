// The twin's Cloudflare Rules language (infra/twin/edge/expression.ts): every
// expression our renderers produce parses and means what its rule says, on a
// table of requests; the language's precedence, literals and sets; errors that
// name a position; and properties of the logic over random requests.
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseStackConfig, rawFromStackFile, type StackConfig } from '../../infra/config.ts';
import { cacheRules, originHeaderRule, strictTlsRule, wafRules } from '../../infra/render/cloudflare.ts';
import { compile, ExpressionError, parse, type RequestFields } from '../../infra/twin/edge/expression.ts';
import { normalizePath, requestFields } from '../../infra/twin/edge/rules.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const EXAMPLES = readdirSync(path.join(ROOT, 'infra/examples')).filter((f) => f.endsWith('.yaml'));

function example(file: string): StackConfig {
  const { raw } = rawFromStackFile(parseYaml(readFileSync(path.join(ROOT, 'infra/examples', file), 'utf8')));
  return parseStackConfig(raw);
}

/** A request as the edge shows it to the rules. */
function request(method: string, url: string, o: { host?: string; scheme?: 'http' | 'https'; ua?: string; ip?: string } = {}): RequestFields {
  return requestFields({ scheme: o.scheme ?? 'https', host: o.host ?? 'mir.example.com', method, url, userAgent: o.ua ?? 'docker/27.0', clientIp: o.ip ?? '198.51.100.7' });
}

const DIGEST = `sha256:${'a1'.repeat(32)}`;
const MANIFEST_BY_TAG = '/v2/library/alpine/manifests/latest';
const MANIFEST_BY_DIGEST = `/v2/library/alpine/manifests/${DIGEST}`;
const BLOB = `/v2/library/alpine/blobs/${DIGEST}`;

// What each rule of infra/render/cloudflare.ts is meant to match, by its ref.
// `host` in a row is relative to the stack's mirror host: 'mir' or 'other'.
type Row = [method: string, url: string, expected: boolean, host?: 'mir' | 'other'];
const INTENT: Record<string, Row[]> = {
  mirror_read_only: [
    ['GET', MANIFEST_BY_TAG, false],
    ['HEAD', MANIFEST_BY_TAG, false],
    ['OPTIONS', '/v2/', false],
    ['GET', BLOB, false],
    ['GET', '/v2', false],
    ['GET', '/v2/', false],
    ['GET', '/healthz', false],
    ['GET', '/readyz', false],
    ['GET', '/v2/_catalog?n=10', false],
    ['PUT', MANIFEST_BY_TAG, true],
    ['POST', '/v2/library/alpine/blobs/uploads/', true],
    ['PATCH', '/v2/library/alpine/blobs/uploads/123', true],
    ['DELETE', BLOB, true],
    ['GET', '/foo', true],
    ['GET', '/', true],
    ['GET', '/v2x/library', true],
    ['GET', '/healthz/extra', true],
    // normalised before the rules see it: a dot segment cannot climb out of /v2/
    ['GET', '/v2/../admin', true],
    ['TRACE', '/v2/', true],
    ['PUT', MANIFEST_BY_TAG, false, 'other'],
    ['GET', '/foo', false, 'other'],
  ],
  mirror_skip_challenges: [
    ['GET', MANIFEST_BY_TAG, true],
    ['HEAD', BLOB, true],
    ['OPTIONS', '/v2/', true],
    ['GET', '/healthz', true],
    ['PUT', MANIFEST_BY_TAG, false],
    ['GET', '/foo', false],
    ['GET', MANIFEST_BY_TAG, false, 'other'],
  ],
  mirror_blobs: [
    ['GET', BLOB, true],
    ['HEAD', BLOB, true],
    ['GET', '/v2/some/deep/repo/blobs/' + DIGEST, true],
    ['GET', MANIFEST_BY_DIGEST, false],
    ['GET', MANIFEST_BY_TAG, false],
    ['GET', '/v2/library/alpine/blobs/uploads/', false],
    ['GET', '/x/library/alpine/blobs/' + DIGEST, false],
    ['GET', BLOB, false, 'other'],
  ],
  mirror_manifests_by_digest: [
    ['GET', MANIFEST_BY_DIGEST, true],
    ['GET', MANIFEST_BY_TAG, false],
    ['GET', BLOB, false],
    ['GET', MANIFEST_BY_DIGEST, false, 'other'],
  ],
  mirror_manifests_by_tag: [
    ['GET', MANIFEST_BY_TAG, true],
    ['GET', '/v2/library/alpine/manifests/3.20', true],
    ['GET', MANIFEST_BY_DIGEST, false],
    ['GET', BLOB, false],
    ['GET', '/v2/', false],
    ['GET', MANIFEST_BY_TAG, false, 'other'],
  ],
  mirror_origin_header: [
    ['GET', MANIFEST_BY_TAG, true],
    ['PUT', '/anything', true],
    ['GET', MANIFEST_BY_TAG, false, 'other'],
  ],
  mirror_strict_tls: [
    ['GET', '/', true],
    ['GET', '/', false, 'other'],
  ],
};

describe.each(EXAMPLES)('rules rendered for infra/examples/%s', (file) => {
  const cfg = example(file);
  const rules = [...wafRules(cfg), ...cacheRules(cfg), originHeaderRule(cfg, 'the-secret'), strictTlsRule(cfg)];

  it('every expression parses', () => {
    for (const rule of rules) expect(() => parse(rule.expression), `${rule.ref}: ${rule.expression}`).not.toThrow();
  });

  it('each rule matches the requests it is meant for, and no others', () => {
    let checked = 0;
    for (const rule of rules) {
      const rows = INTENT[rule.ref];
      if (!rows) continue; // a rule added since this table was written: it parses (above)
      const matches = compile(rule.expression);
      for (const [method, url, expected, host = 'mir'] of rows) {
        const fields = request(method, url, { host: host === 'mir' ? cfg.derived.mirHost : `other.${cfg.domain}` });
        expect(matches(fields), `${rule.ref}: ${method} ${url} on ${fields['http.host']}`).toBe(expected);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(0);
  });
});

// Two expressions with known values, to test the logic with.
const T = 'http.host eq "mir.example.com"';
const F = 'http.host eq "nope"';
const on = (expr: string, fields = request('GET', '/v2/')) => compile(expr)(fields);

describe('logic', () => {
  it('binds not, then and, then xor, then or (Cloudflare\'s order)', () => {
    expect(on(`${T} or ${F} and ${F}`)).toBe(true); // or (F and F), not (T or F) and F
    expect(on(`not ${T} or ${T}`)).toBe(true); // (not T) or T, not not (T or T)
    expect(on(`not ${F} and ${F}`)).toBe(false); // (not F) and F
    expect(on(`${T} xor ${T} or ${T}`)).toBe(true); // (T xor T) or T, not T xor (T or T)
    expect(on(`${T} xor ${T} and ${F}`)).toBe(true); // T xor (T and F), not (T xor T) and F
    expect(on(`${T} or ${T} xor ${T}`)).toBe(true); // T or (T xor T)
    expect(on(`(${T} or ${T}) xor ${T}`)).toBe(false);
    expect(on(`not (${T} and ${F})`)).toBe(true);
    expect(on(`not not ${T}`)).toBe(true);
  });

  it('accepts the C-like spellings', () => {
    expect(on(`${T} && !${F}`)).toBe(true);
    expect(on(`${F} || ${T} ^^ ${T}`)).toBe(false);
    expect(on('http.request.method == "GET" && http.request.method != "PUT"')).toBe(true);
    expect(on('http.request.uri.path ~ "^/v2/$"')).toBe(true);
  });

  it('a Bool field stands alone', () => {
    expect(on('ssl')).toBe(true);
    expect(on('not ssl', request('GET', '/', { scheme: 'http' }))).toBe(true);
    expect(on('ssl and http.request.method eq "GET"')).toBe(true);
  });
});

describe('values', () => {
  it('quoted strings take \\" and \\\\, as JSON.stringify writes them', () => {
    // (http.request.uri: the path field is normalised, and a backslash becomes a slash there)
    const path = '/a"b\\c';
    expect(on(`http.request.uri eq ${JSON.stringify(path)}`, request('GET', path))).toBe(true);
    expect(on('http.request.uri.path eq "/a\\"b"', request('GET', '/a"b'))).toBe(true);
  });

  it('raw strings take nothing as an escape', () => {
    expect(on('http.request.uri.path matches r"^/v2/\\w+$"', request('GET', '/v2/abc'))).toBe(true);
    expect(on('http.request.uri.path eq r#"/a"b"#', request('GET', '/a"b'))).toBe(true);
  });

  it('in takes a space-separated set', () => {
    expect(on('http.request.method in {"GET" "HEAD"}')).toBe(true);
    expect(on('http.request.method in {"PUT" "POST"}')).toBe(false);
    expect(on('http.request.method in {}')).toBe(false);
    expect(on('ip.src in {198.51.100.0/24 2001:db8::/32}')).toBe(true);
    expect(on('ip.src in {10.0.0.0/8}')).toBe(false);
    expect(on('ip.src in {2001:db8::/32}', request('GET', '/', { ip: '2001:db8::5' }))).toBe(true);
    expect(on('ip.src eq 198.51.100.7 and ip.src ne 198.51.100.8')).toBe(true);
  });

  it('functions: lower, upper, starts_with, ends_with', () => {
    const shouting = request('GET', '/V2/', { host: 'MIR.example.com' });
    // (the edge lower-cases the Host header before the rules see it; this table does not)
    expect(on('lower(http.request.uri.path) eq "/v2/"', shouting)).toBe(true);
    expect(on('upper(http.host) eq "MIR.EXAMPLE.COM"', shouting)).toBe(true);
    expect(on('starts_with(http.request.uri.path, "/V2")', shouting)).toBe(true);
    expect(on('ends_with(lower(http.request.uri.path), "2/")', shouting)).toBe(true);
    expect(on('not starts_with(http.request.uri.path, "/v3")')).toBe(true);
  });

  it('the other string fields', () => {
    const r = request('GET', '/v2/_catalog?n=10&last=b', { ua: 'containerd/2.0' });
    expect(on('http.request.uri.query eq "n=10&last=b"', r)).toBe(true);
    expect(on('http.request.uri eq "/v2/_catalog?n=10&last=b"', r)).toBe(true);
    expect(on('http.request.full_uri eq "https://mir.example.com/v2/_catalog?n=10&last=b"', r)).toBe(true);
    expect(on('http.user_agent contains "containerd"', r)).toBe(true);
  });

  it('paths are normalised for the rules', () => {
    expect(normalizePath('/v2/../admin')).toBe('/admin');
    expect(normalizePath('//v2//library/./alpine/')).toBe('/v2/library/alpine/');
    expect(normalizePath('/v2/%61lpine/%2f')).toBe('/v2/alpine/%2F');
    expect(normalizePath('\\v2\\x')).toBe('/v2/x');
    expect(normalizePath('/a/b/..')).toBe('/a/');
    expect(normalizePath('/..')).toBe('/');
  });
});

describe('errors name the position', () => {
  const cases: [expr: string, position: number, message: RegExp][] = [
    ['http.hots eq "x"', 0, /unknown field "http.hots"/],
    ['http.host eq "x" and http.request.verb eq "GET"', 21, /unknown field "http.request.verb"/],
    ['http.host equals "x"', 10, /unknown operator "equals"/],
    ['http.host wildcard "*.example.com"', 10, /"wildcard" is not supported/],
    ['http.host eq "x', 13, /unterminated string/],
    ['(http.host eq "x"', 17, /expected "\)"/],
    ['http.host eq "x")', 16, /unexpected "\)"/],
    ['http.host eq "a\\nb"', 15, /invalid escape \\n/],
    ['http.host', 9, /not a Bool/],
    ['ssl eq "on"', 4, /ssl is a Bool/],
    ['lower(ssl) eq "x"', 6, /lower\(\) takes a String/],
    ['reverse(http.host) eq "x"', 0, /unknown function "reverse"/],
    ['starts_with(http.host, http.host)', 23, /string literal as argument 2/],
    ['http.host in {"a", "b"}', 17, /separated by spaces/],
    ['http.host in {"a" 1}', 18, /expected a string literal/],
    ['ip.src eq 10.0.0.0/8', 10, /needs "in/],
    ['ip.src eq "10.0.0.1"', 10, /expected an IP address/],
    ['http.request.uri.path matches "("', 30, /invalid regular expression/],
    ['"GET" eq http.request.method', 0, /starts with a field/],
    ['http.host eq "a" and', 20, /expected a field or function, found end of expression/],
    ['', 0, /expected a field or function/],
    ['http.host eq "a" $', 17, /unexpected character "\$"/],
  ];
  it.each(cases)('%s', (expr, position, message) => {
    let error: unknown;
    try {
      parse(expr);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ExpressionError);
    const err = error as ExpressionError;
    expect(err.message).toMatch(message);
    expect(err.message).toContain(`at position ${position}`);
    expect(err.position).toBe(position);
  });
});

// ---- properties over random requests -----------------------------------------

const arbFields: fc.Arbitrary<RequestFields> = fc
  .record({
    method: fc.constantFrom('GET', 'HEAD', 'OPTIONS', 'PUT', 'POST', 'PATCH', 'DELETE'),
    host: fc.constantFrom('mir.example.com', 'dcr.example.com', 'example.com', 'mir.example.org'),
    segments: fc.array(fc.constantFrom('v2', 'library', 'alpine', 'manifests', 'blobs', 'latest', DIGEST, 'healthz', 'x"y', 'a\\b', 'V2', ''), { maxLength: 6 }),
    query: fc.option(fc.constantFrom('n=1', 'last=a&n=2', ''), { nil: undefined }),
    ua: fc.constantFrom('docker/27.0', 'containerd/2.0', 'curl/8.0', ''),
    ip: fc.constantFrom('198.51.100.7', '10.1.2.3', '2001:db8::5', '::1'),
    scheme: fc.constantFrom('http' as const, 'https' as const),
  })
  .map((r) => request(r.method, `/${r.segments.join('/')}${r.query === undefined ? '' : `?${r.query}`}`, { host: r.host, ua: r.ua, ip: r.ip, scheme: r.scheme }));

/** An atom: an expression and what it should evaluate to, in plain JS. */
type Atom = { text: string; js: (f: RequestFields) => boolean };

const text = fc.constantFrom('/v2/', 'GET', 'mir.example.com', 'library', 'x"y', 'a\\b', DIGEST, '', 'docker', 'n=1');
const stringField = fc.constantFrom('http.host', 'http.request.method', 'http.request.uri.path', 'http.request.uri.query', 'http.user_agent', 'http.request.full_uri') as fc.Arbitrary<
  'http.host' | 'http.request.method' | 'http.request.uri.path' | 'http.request.uri.query' | 'http.user_agent' | 'http.request.full_uri'
>;
const q = (s: string) => JSON.stringify(s);

const arbAtom: fc.Arbitrary<Atom> = fc.oneof(
  fc.record({ f: stringField, v: text, op: fc.constantFrom('eq', 'ne', 'contains', '==', '!=') }).map(({ f, v, op }) => ({
    text: `${f} ${op} ${q(v)}`,
    js: (r: RequestFields) => (op === 'eq' || op === '==' ? r[f] === v : op === 'ne' || op === '!=' ? r[f] !== v : r[f].includes(v)),
  })),
  fc.record({ f: stringField, vs: fc.array(text, { maxLength: 3 }) }).map(({ f, vs }) => ({
    text: `${f} in {${vs.map(q).join(' ')}}`,
    js: (r: RequestFields) => vs.includes(r[f]),
  })),
  fc.record({ f: stringField, v: text, fn: fc.constantFrom('starts_with', 'ends_with') }).map(({ f, v, fn }) => ({
    text: `${fn}(lower(${f}), ${q(v)})`,
    js: (r: RequestFields) => (fn === 'starts_with' ? r[f].toLowerCase().startsWith(v) : r[f].toLowerCase().endsWith(v)),
  })),
  fc.constant({ text: 'ssl', js: (r: RequestFields) => r.ssl }),
  fc.constant({ text: 'ip.src in {10.0.0.0/8 2001:db8::/32}', js: (r: RequestFields) => r['ip.src'].startsWith('10.') || r['ip.src'].startsWith('2001:db8:') }),
);

/** Random trees of atoms, written with explicit parentheses, with their JS meaning. */
const arbExpr: fc.Arbitrary<Atom> = fc.letrec<{ expr: Atom }>((tie) => ({
  expr: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    arbAtom,
    tie('expr').map((a) => ({ text: `not (${a.text})`, js: (r: RequestFields) => !a.js(r) })),
    fc.record({ a: tie('expr'), b: tie('expr'), op: fc.constantFrom('and', 'or', 'xor', '&&', '||', '^^') }).map(({ a, b, op }) => ({
      text: `(${a.text}) ${op} (${b.text})`,
      js: (r: RequestFields) =>
        op === 'and' || op === '&&' ? a.js(r) && b.js(r) : op === 'or' || op === '||' ? a.js(r) || b.js(r) : a.js(r) !== b.js(r),
    })),
  ),
})).expr;

describe('properties', () => {
  it('an expression evaluates as its JS meaning', () => {
    fc.assert(fc.property(arbExpr, arbFields, (e, f) => compile(e.text)(f) === e.js(f)));
  });

  it('not X is the negation of X', () => {
    fc.assert(fc.property(arbExpr, arbFields, (e, f) => compile(`not (${e.text})`)(f) === !compile(e.text)(f)));
  });

  it('A and B is A && B, A or B is A || B, without parentheses around atoms', () => {
    fc.assert(
      fc.property(arbAtom, arbAtom, arbFields, (a, b, f) => {
        expect(compile(`${a.text} and ${b.text}`)(f)).toBe(compile(a.text)(f) && compile(b.text)(f));
        expect(compile(`${a.text} or ${b.text}`)(f)).toBe(compile(a.text)(f) || compile(b.text)(f));
      }),
    );
  });

  it('a string written with JSON.stringify reads back as itself', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', '/', '"', '\\', ' ', 'é', '{', '}', ')') }), (s) => {
        expect(compile(`http.user_agent eq ${JSON.stringify(s)}`)({ ...request('GET', '/'), 'http.user_agent': s })).toBe(true);
      }),
    );
  });
});
