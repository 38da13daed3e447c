// Client configurations for pulling through the mirror, exactly as the mirror
// tests write them (docs/mirror.md's "Point clients at it" snippets come from here).

/** containerd hosts.toml: pull and resolve through `mirrorUrl`, falling back to `server`. */
export function hostsToml(server: string, mirrorUrl: string): string {
  return [`server = "${server}"`, '', `[host."${mirrorUrl}"]`, '  capabilities = ["pull", "resolve"]', ''].join('\n');
}

/** containers-registries.conf(5): docker.io and ghcr.io pulled through the mirror at `mirrorHost`. */
export function registriesConf(mirrorHost: string): string {
  return [
    'unqualified-search-registries = ["docker.io"]',
    '',
    '[[registry]]',
    'prefix = "docker.io"',
    'location = "docker.io"',
    '',
    '[[registry.mirror]]',
    `location = "${mirrorHost}"`,
    'insecure = true',
    '',
    '[[registry]]',
    'prefix = "ghcr.io"',
    'location = "ghcr.io"',
    '',
    '[[registry.mirror]]',
    `location = "${mirrorHost}/ghcr.io"`,
    'insecure = true',
    '',
    // The mirror itself, addressed directly (podman pull <mirror>/alpine:3.20).
    '[[registry]]',
    `location = "${mirrorHost}"`,
    'insecure = true',
    '',
  ].join('\n');
}
