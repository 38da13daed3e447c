// WWW-Authenticate parsing (RFC 7235 auth-params), enough for registries:
// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`
// and `Basic realm="Registry Realm"`.

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (!header) return [];
  const headers = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const h of headers) {
    let rest = h.trim();
    while (rest.length > 0) {
      const scheme = /^([A-Za-z][A-Za-z0-9._~+/-]*)/.exec(rest);
      if (!scheme) break;
      rest = rest.slice(scheme[0].length);
      const params: Record<string, string> = {};
      // key=value or key="quoted value", comma separated, until the next scheme.
      for (;;) {
        const m = /^\s*,?\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/.exec(rest);
        if (!m) break;
        params[m[1].toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3];
        rest = rest.slice(m[0].length);
      }
      rest = rest.replace(/^\s*,\s*/, '');
      out.push({ scheme: scheme[1].toLowerCase(), params });
    }
  }
  return out;
}
