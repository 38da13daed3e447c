// The config loader: distribution's config.yml shape, REGISTRY_* environment
// overrides, and errors that name the offending key.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfigFile, loadConfigObject, loadConfigText } from '../../server/src/config/load.ts';

const H = 3_600_000;

/** registry:2's own /etc/docker/registry/config.yml. */
const DISTRIBUTION_DEFAULT = `
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`;

/** A fuller private-registry config in distribution's shape. */
const PRIVATE = `
version: 0.1
log:
  level: debug
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: /srv/registry
    maxthreads: 100
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
      dryrun: false
    readonly:
      enabled: false
  redirect:
    disable: true
http:
  addr: 127.0.0.1:5000
  secret: asecretforlocaldevelopment
  relativeurls: false
  draintimeout: 60s
  headers:
    X-Content-Type-Options: [nosniff]
    Strict-Transport-Security: max-age=63072000
auth:
  htpasswd:
    realm: basic-realm
    path: /auth/htpasswd
notifications:
  endpoints:
    - name: alistener
      url: https://my.listener.com/event
      timeout: 1s
redis:
  addr: localhost:6379
middleware:
  registry:
    - name: redirect
`;

/** distribution's pull-through cache config. */
const MIRROR = `
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
proxy:
  remoteurl: https://registry-1.docker.io
  username: someone
  password: a-token
  ttl: 168h
http:
  addr: :5000
`;

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('distribution-style configs load unchanged', () => {
  it("registry:2's default config", () => {
    const { config, ignoredEnv } = loadConfigText(DISTRIBUTION_DEFAULT, {});
    expect(ignoredEnv).toEqual([]);
    expect(config.version).toBe('0.1');
    expect(config.storage.filesystem?.rootdirectory).toBe('/var/lib/registry');
    expect(config.storage.cache?.blobdescriptor).toBe('inmemory');
    expect(config.http.addr).toBe(':5000');
    expect(config.http.headers).toEqual({ 'X-Content-Type-Options': ['nosniff'] });
    expect(config.health?.storagedriver).toEqual({ enabled: true, interval: 10_000, threshold: 3 });
    expect(config.log.fields).toEqual({ service: 'registry' });
    // Defaults, as distribution has them.
    expect(config.storage.delete.enabled).toBe(false);
    expect(config.log.level).toBe('info');
    expect(config.log.accesslog.disabled).toBe(false);
    expect(config.http.net).toBe('tcp');
    expect(config.auth).toBeUndefined();
    expect(config.proxy).toBeUndefined();
  });

  it('a private registry config with auth, delete, maintenance, notifications', () => {
    const { config } = loadConfigText(PRIVATE, {});
    expect(config.log.level).toBe('debug');
    expect(config.log.accesslog.disabled).toBe(true);
    expect(config.storage.delete.enabled).toBe(true);
    expect(config.storage.maintenance?.uploadpurging).toEqual({
      enabled: true,
      age: 168 * H,
      interval: 24 * H,
      dryrun: false,
    });
    expect(config.http.draintimeout).toBe(60_000);
    expect(config.http.headers?.['Strict-Transport-Security']).toBe('max-age=63072000');
    expect(config.auth?.htpasswd).toEqual({ realm: 'basic-realm', path: '/auth/htpasswd' });
    expect(config.auth?.anonymouspull).toBe(false);
  });

  it("distribution's proxy (pull-through cache) config", () => {
    const { config } = loadConfigText(MIRROR, {});
    expect(config.proxy?.remoteurl).toBe('https://registry-1.docker.io');
    expect(config.proxy?.username).toBe('someone');
    expect(config.proxy?.password).toBe('a-token');
    expect(config.proxy?.ttl).toBe(168 * H);
  });

  it('loads from a file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rs-config-'));
    try {
      const file = path.join(dir, 'config.yml');
      writeFileSync(file, DISTRIBUTION_DEFAULT);
      expect(loadConfigFile(file, {}).config.storage.filesystem?.rootdirectory).toBe('/var/lib/registry');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('does not modify the object it is given', () => {
    const raw = { storage: { filesystem: { rootdirectory: '/a' } } };
    const copy = structuredClone(raw);
    loadConfigObject(raw, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/b', REGISTRY_HTTP_ADDR: ':1' });
    expect(raw).toEqual(copy);
  });
});

describe('errors name the key', () => {
  it('an unknown key, with its full path', () => {
    const err = errorOf(() => loadConfigObject({ storage: { filesystem: { rootdir: '/x' } } }, {}));
    expect(err.message).toContain('unknown key "storage.filesystem.rootdir"');
  });

  it('unknown keys at the top level and deep down, all reported at once', () => {
    const err = errorOf(() =>
      loadConfigText(
        `
storage:
  filesystem:
    rootdirectory: /x
  delete:
    enable: true
htpp:
  addr: :5000
auth:
  htpasswd:
    path: /h
    realmm: x
`,
        {},
        'config.yml',
      ),
    );
    expect(err.message).toContain('config.yml');
    expect(err.message).toContain('unknown key "storage.delete.enable"');
    expect(err.message).toContain('unknown key "htpp"');
    expect(err.message).toContain('unknown key "auth.htpasswd.realmm"');
  });

  it('an invalid duration names the key and the value', () => {
    const err = errorOf(() => loadConfigText(`${MIRROR}\n`.replace('ttl: 168h', 'ttl: forever'), {}));
    expect(err.message).toMatch(/proxy\.ttl: .*"forever" is not a duration/);
    const purge = errorOf(() =>
      loadConfigObject(
        { storage: { filesystem: {}, maintenance: { uploadpurging: { age: '7 days' } } } },
        {},
      ),
    );
    expect(purge.message).toContain('storage.maintenance.uploadpurging.age');
  });

  it('an invalid size names the key', () => {
    const err = errorOf(() => loadConfigObject({ storage: { filesystem: {} }, cache: { maxsize: 'lots' } }, {}));
    expect(err.message).toMatch(/cache\.maxsize: .*"lots" is not a size/);
  });

  it('a wrong type or enum value names the key', () => {
    expect(errorOf(() => loadConfigObject({ storage: { filesystem: {} }, log: { level: 'loud' } }, {})).message).toMatch(
      /log\.level: must be one of/,
    );
    expect(
      errorOf(() => loadConfigObject({ storage: { filesystem: {}, delete: { enabled: 'sure' } } }, {})).message,
    ).toContain('storage.delete.enabled');
    expect(errorOf(() => loadConfigObject({ storage: { filesystem: { rootdirectory: ['a'] } } }, {})).message).toContain(
      'storage.filesystem.rootdirectory',
    );
  });

  it('a missing storage section or driver', () => {
    expect(errorOf(() => loadConfigText('version: 0.1\n', {})).message).toMatch(/storage: required key is missing/);
    expect(errorOf(() => loadConfigObject({ storage: { delete: { enabled: true } } }, {})).message).toContain(
      'storage.filesystem',
    );
  });

  it('auth.htpasswd without a path, and unsupported auth kinds', () => {
    expect(errorOf(() => loadConfigObject({ storage: { filesystem: {} }, auth: { htpasswd: { realm: 'r' } } }, {})).message).toContain(
      'auth.htpasswd.path',
    );
    expect(
      errorOf(() => loadConfigObject({ storage: { filesystem: {} }, auth: { token: { realm: 'https://x' } } }, {})).message,
    ).toContain('auth.token');
  });

  it('YAML that does not parse, or is not a mapping', () => {
    expect(errorOf(() => loadConfigText('storage: [unclosed', {})).message).toMatch(/not valid YAML/);
    expect(errorOf(() => loadConfigText('- a\n- b\n', {})).message).toMatch(/top level must be a mapping/);
    expect(errorOf(() => loadConfigText('just a string', {})).message).toMatch(/top level must be a mapping/);
  });

  it('a config file that cannot be read names the file', () => {
    const err = errorOf(() => loadConfigFile('/nonexistent/registry-stack/config.yml', {}));
    expect(err.message).toContain('/nonexistent/registry-stack/config.yml');
  });
});

describe('REGISTRY_* environment overrides', () => {
  const base = () => loadConfigText(DISTRIBUTION_DEFAULT, {}).config;

  it('set nested keys, as distribution does', () => {
    const { config, ignoredEnv } = loadConfigText(DISTRIBUTION_DEFAULT, {
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/srv/data',
      REGISTRY_HTTP_ADDR: '0.0.0.0:5001',
      REGISTRY_LOG_LEVEL: 'debug',
      REGISTRY_HTTP_SECRET: 's3cret',
    });
    expect(ignoredEnv).toEqual([]);
    expect(config.storage.filesystem?.rootdirectory).toBe('/srv/data');
    expect(config.http.addr).toBe('0.0.0.0:5001');
    expect(config.log.level).toBe('debug');
    expect(config.http.secret).toBe('s3cret');
    // Untouched keys keep their file values.
    expect(config.storage.cache?.blobdescriptor).toBe('inmemory');
  });

  it('booleans from "true"/"false"', () => {
    const on = loadConfigText(DISTRIBUTION_DEFAULT, {
      REGISTRY_STORAGE_DELETE_ENABLED: 'true',
      REGISTRY_LOG_ACCESSLOG_DISABLED: 'true',
      REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED: 'true',
    }).config;
    expect(on.storage.delete.enabled).toBe(true);
    expect(on.log.accesslog.disabled).toBe(true);
    expect(on.storage.maintenance?.readonly?.enabled).toBe(true);
    const off = loadConfigText(PRIVATE, { REGISTRY_STORAGE_DELETE_ENABLED: 'false' }).config;
    expect(off.storage.delete.enabled).toBe(false);
  });

  it('an override wins over the file; a whole section can come from the environment', () => {
    const { config } = loadConfigText(MIRROR, {
      REGISTRY_PROXY_USERNAME: 'from-env',
      REGISTRY_PROXY_PASSWORD: 'secret-from-env',
    });
    expect(config.proxy?.username).toBe('from-env');
    expect(config.proxy?.password).toBe('secret-from-env');
    expect(config.proxy?.remoteurl).toBe('https://registry-1.docker.io');

    const fromEnv = loadConfigText(DISTRIBUTION_DEFAULT, {
      REGISTRY_AUTH_HTPASSWD_REALM: 'env-realm',
      REGISTRY_AUTH_HTPASSWD_PATH: '/env/htpasswd',
      REGISTRY_AUTH_ANONYMOUSPULL: 'true',
      REGISTRY_PROXY_REMOTEURL: 'https://mirror.example',
      REGISTRY_PROXY_TTL: '24h',
    }).config;
    expect(fromEnv.auth?.htpasswd).toEqual({ realm: 'env-realm', path: '/env/htpasswd' });
    expect(fromEnv.auth?.anonymouspull).toBe(true);
    expect(fromEnv.proxy?.remoteurl).toBe('https://mirror.example');
    expect(fromEnv.proxy?.ttl).toBe(24 * H);
  });

  it('numbers from strings', () => {
    const { config } = loadConfigText(DISTRIBUTION_DEFAULT, {
      REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD: '5',
      REGISTRY_STORAGE_CACHE_BLOBDESCRIPTORSIZE: '2000',
      REGISTRY_RATELIMIT_PERIP_RATE: '2.5',
      REGISTRY_RATELIMIT_PERIP_BURST: '10',
    });
    expect(config.health?.storagedriver?.threshold).toBe(5);
    expect(config.storage.cache?.blobdescriptorsize).toBe(2000);
    // Non-integer numbers too (a rate of requests per second).
    expect(config.ratelimit?.perip).toEqual({ rate: 2.5, burst: 10 });
    const bad = errorOf(() => loadConfigText(DISTRIBUTION_DEFAULT, { REGISTRY_RATELIMIT_PERIP_RATE: 'fast', REGISTRY_RATELIMIT_PERIP_BURST: '1' }));
    expect(bad.message).toContain('ratelimit.perip.rate (from REGISTRY_RATELIMIT_PERIP_RATE)');
  });

  it('maps and lists as YAML/JSON values', () => {
    const { config } = loadConfigText(DISTRIBUTION_DEFAULT, {
      REGISTRY_HTTP_HEADERS: '{"X-Frame-Options": ["DENY"], "X-Custom": "v"}',
    });
    expect(config.http.headers).toEqual({ 'X-Frame-Options': ['DENY'], 'X-Custom': 'v' });
  });

  it('keys under free-form sections (notifications, middleware) are accepted', () => {
    const { config, ignoredEnv } = loadConfigText(DISTRIBUTION_DEFAULT, { REGISTRY_NOTIFICATIONS_ENDPOINTS: '[]' });
    expect(ignoredEnv).toEqual([]);
    expect(config.notifications).toEqual({ endpoints: [] });
  });

  it('unrelated REGISTRY_* variables (Docker links, Kubernetes services) are ignored and reported', () => {
    const env = {
      REGISTRY_PORT: 'tcp://10.0.0.5:5000',
      REGISTRY_PORT_5000_TCP_ADDR: '10.0.0.5',
      REGISTRY_SERVICE_HOST: '10.0.0.5',
      REGISTRY_SERVICE_PORT: '5000',
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIR: '/typo',
      REGISTRY_HTTP_ADDR_EXTRA: 'x',
      OTHER_REGISTRY_HTTP_ADDR: ':1',
      registry_http_addr: ':2',
    };
    const { config, ignoredEnv } = loadConfigText(DISTRIBUTION_DEFAULT, env);
    expect(ignoredEnv.sort()).toEqual(
      [
        'REGISTRY_PORT',
        'REGISTRY_PORT_5000_TCP_ADDR',
        'REGISTRY_SERVICE_HOST',
        'REGISTRY_SERVICE_PORT',
        'REGISTRY_STORAGE_FILESYSTEM_ROOTDIR',
        'REGISTRY_HTTP_ADDR_EXTRA',
      ].sort(),
    );
    expect(config).toEqual(base());
  });

  it('an invalid value from the environment names the key and the variable', () => {
    const bool = errorOf(() => loadConfigText(DISTRIBUTION_DEFAULT, { REGISTRY_STORAGE_DELETE_ENABLED: 'yes' }));
    expect(bool.message).toContain('storage.delete.enabled (from REGISTRY_STORAGE_DELETE_ENABLED)');
    const duration = errorOf(() => loadConfigText(MIRROR, { REGISTRY_PROXY_TTL: 'forever' }));
    expect(duration.message).toMatch(/proxy\.ttl \(from REGISTRY_PROXY_TTL\): .*"forever" is not a duration/);
    const level = errorOf(() => loadConfigText(DISTRIBUTION_DEFAULT, { REGISTRY_LOG_LEVEL: 'loud' }));
    expect(level.message).toContain('log.level (from REGISTRY_LOG_LEVEL)');
  });
});
