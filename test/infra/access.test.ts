// Access control in the stack: the stack config's `access` and `robots`
// (parsed, checked against the users, one line per bad key), what they render
// to (the policy file, dcr's auth section, the host step that installs the
// policy, the keys' volume with R2, the robot commands), and the rendered dcr
// served for real: users, a robot made by its rendered command (the server's
// CLI, as `docker exec` runs it in the container), anonymous clients, and the
// ops scripts on the admin listener while token auth is on.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAccessPolicy } from '../../server/src/auth/access-policy.ts';
import { loadConfigText } from '../../server/src/config/load.ts';
import { type RunningServer, startServer } from '../../server/src/http/server.ts';
import { silentLogger } from '../../server/src/log/logger.ts';
import { parseStackConfig, type StackConfig, StackConfigError } from '../../infra/config.ts';
import { renderAccessPolicy } from '../../infra/render/access.ts';
import { stackContainerSpecs } from '../../infra/render/containers.ts';
import { hostFilesFrom, renderHostStep } from '../../infra/render/host.ts';
import { renderStack } from '../../infra/render/index.ts';
import { type RegistryTarget, renderPrivateConfig } from '../../infra/render/registry-config.ts';
import { robotCommands } from '../../infra/render/robots.ts';
import { TokenClient } from '../auth/helpers.ts';
import { buildImage } from '../helpers/oci.ts';
import { basicAuth } from '../helpers/server.ts';
import { runScript } from '../scripts/helpers.ts';
import { ROOT } from './pulumi-harness.ts';
import { shellcheck } from './shell.ts';

const BASE = {
  domain: 'example.com',
  vps: { host: '203.0.113.10' },
  users: { alice: 'alice-password-1', bob: 'bob-password-12', carol: 'carol-password-1' },
  docker: { bcryptCost: 4 },
};
/** A team of three with a CI robot, and public read-only repositories (the README's example). */
const TEAM = {
  access: {
    groups: { team: ['alice', 'bob'], ci: ['robot$ci'] },
    repositories: [
      { pattern: 'team/**', groups: { team: ['pull', 'push', 'delete'], ci: ['pull', 'push'] } },
      { pattern: 'public/**', anonymous: ['pull'], default: ['pull'], groups: { team: ['pull', 'push'] } },
    ],
  },
  robots: { ci: { scopes: ['repository:team/**:pull,push'], ttl: '90d', description: "CI's pushes" } },
};
const SECRETS = { originSecret: 'origin-secret-0123456789abcdef', adminToken: 'admin-token-0123456789abcdef', htpasswdSeed: 'seed' };
const IMAGE = 'localhost/registry-stack/server:0123456789abcdef';

const parse = (extra: Record<string, unknown>) => parseStackConfig({ ...BASE, ...extra });

function errorOf(extra: Record<string, unknown>): string[] {
  try {
    parse(extra);
  } catch (err) {
    expect(err).toBeInstanceOf(StackConfigError);
    return (err as Error).message.split('\n').slice(1).map((l) => l.trim());
  }
  throw new Error('the config was accepted');
}

describe('stack config: access and robots', () => {
  it('takes a policy and robots, with defaults', () => {
    const cfg = parse(TEAM);
    expect(cfg.access?.repositories[0]).toEqual({ pattern: 'team/**', anonymous: [], default: [], users: {}, groups: TEAM.access.repositories[0].groups });
    expect(cfg.access?.admins).toEqual([]);
    expect(cfg.robots.ci).toEqual({ scopes: ['repository:team/**:pull,push'], ttl: '90d', description: "CI's pushes", generation: 1 });
    expect(parse({}).robots).toEqual({});
    expect(parse({}).access).toBeUndefined();
  });

  it('names each bad key on a line of its own', () => {
    const lines = errorOf({
      access: {
        groups: { team: ['alice', 'dave', 'robot$cd', 'robotci'] },
        admins: ['@ops', 'erin'],
        repositories: [
          { pattern: 'team/**', groups: { team: ['pull', 'write'], qa: ['pull'] }, users: { frank: ['pull'] } },
          { pattern: 'Team/*' },
          { pattern: 'team/**' },
        ],
      },
      robots: { ci: { scopes: ['team/**:push'], ttl: 'soon' }, 'CI Bot': { scopes: ['repository:x:pull'] } },
    });
    expect(lines).toEqual(
      expect.arrayContaining([
        'registry-stack:access.repositories[0].groups.team[1]: actions are pull, push, delete or *',
        'registry-stack:access.repositories[1].pattern: must be a repository pattern: lowercase name characters, "/", "*" and "**" (e.g. team/** or */cache)',
        'registry-stack:robots.ci.scopes[0]: must be repository:<pattern>:<actions>, e.g. repository:team/**:pull,push',
        'registry-stack:robots.ci.ttl: must be a duration such as 90d or 720h',
        expect.stringMatching(/^registry-stack:robots\.CI Bot: robot names are lowercase letters/),
      ]),
    );
    // Names are checked once the values are well-formed.
    const names = errorOf({
      access: {
        groups: { team: ['alice', 'dave', 'robot$cd', 'robotci'] },
        admins: ['@ops', 'erin'],
        repositories: [{ pattern: 'team/**', groups: { team: ['pull'], qa: ['pull'] }, users: { frank: ['pull'] } }, { pattern: 'team/**' }],
      },
    });
    expect(names).toEqual([
      'registry-stack:access.groups.team[1]: "dave" is not one of registry-stack:users',
      'registry-stack:access.groups.team[2]: robot$cd is not one of registry-stack:robots',
      'registry-stack:access.groups.team[3]: "robotci" is not one of registry-stack:users (a robot is named robot$NAME)',
      'registry-stack:access.admins[0]: group "ops" is not one of access.groups',
      'registry-stack:access.admins[1]: "erin" is not one of registry-stack:users',
      'registry-stack:access.repositories[0].users.frank: "frank" is not one of registry-stack:users',
      'registry-stack:access.repositories[0].groups.qa: group "qa" is not one of access.groups',
      'registry-stack:access.repositories[1].pattern: "team/**" is already access.repositories[0]\'s pattern: the first match decides, so this rule would never apply',
    ]);
  });

  it('wants the rules as a list (Pulumi does not keep a map\'s order), robots with a policy, and no anonymousPull beside it', () => {
    expect(errorOf({ access: { repositories: { 'team/**': { groups: {} } } } })).toEqual([
      "registry-stack:access.repositories: must be a list of rules (- pattern: team/**), not a map: Pulumi does not keep the order of a map's keys, and the first pattern that matches decides",
    ]);
    expect(errorOf({ robots: TEAM.robots })).toEqual(['registry-stack:robots: robots log in only where there is an access policy: set registry-stack:access too']);
    expect(errorOf({ ...TEAM, private: { anonymousPull: true } })).toEqual([
      'registry-stack:private.anonymousPull: with registry-stack:access, the policy says what anonymous clients may pull (anonymous: [pull] on a rule): remove this key',
    ]);
    expect(errorOf({ ...TEAM, robots: { ci: { scopes: [] } } })).toEqual(['registry-stack:robots.ci.scopes: a robot needs at least one scope']);
  });
});

describe('rendering access control', () => {
  it('writes the policy in the server\'s format, in the stack config\'s order (a numeric pattern included)', () => {
    const cfg = parse({
      access: {
        groups: { team: ['alice'] },
        admins: ['bob'],
        repositories: [
          { pattern: '**', default: ['pull'] },
          // Never reached: "**" above decides. As object keys, "2024" would move to the front and decide.
          { pattern: '2024', users: { alice: ['*'] } },
        ],
      },
    });
    const text = renderAccessPolicy(cfg.access!);
    expect(text).toMatch(/^# Rendered by registry-stack/);
    expect(text.indexOf('"**"')).toBeLessThan(text.indexOf('"2024"'));
    const policy = parseAccessPolicy(text);
    expect([...policy.actions({ user: 'alice' }, '2024')]).toEqual(['pull']);
    expect([...policy.actions({ user: 'bob' }, '2024')].sort()).toEqual(['delete', 'pull', 'push']); // an admin
    expect([...policy.actions({}, '2024')]).toEqual([]);
  });

  it('gives dcr the policy and token auth, beside the htpasswd; the mirror and a stack without a policy stay as they were', () => {
    const { files } = renderStack(parse(TEAM), SECRETS, { image: IMAGE });
    expect(files['auth/access.yaml']).toMatchObject({ target: '/opt/registry-stack/auth/access.yaml', mode: '0640', secret: false });
    const policy = parseAccessPolicy(files['auth/access.yaml'].content);
    expect([...policy.actions({ user: 'robot$ci' }, 'team/app')].sort()).toEqual(['pull', 'push']);
    expect([...policy.actions({}, 'public/app')]).toEqual(['pull']);
    expect([...policy.actions({ user: 'carol' }, 'team/app')]).toEqual([]);

    const priv = loadConfigText(files['registry/config.yml'].content, {}).config;
    expect(priv.auth).toMatchObject({ htpasswd: { path: '/etc/registry/auth/htpasswd' }, access: '/etc/registry/auth/access.yaml', anonymouspull: false });
    // filesystem storage: the signing keys go in the data volume, where the server puts them unless told
    expect(priv.auth?.token?.keydir).toBeUndefined();
    expect(loadConfigText(files['registry-cache/config.yml'].content, {}).config.auth).toBeUndefined();

    const plain = renderStack(parse({ private: { anonymousPull: true } }), SECRETS, { image: IMAGE });
    expect(plain.files['auth/access.yaml']).toBeUndefined();
    const plainAuth = loadConfigText(plain.files['registry/config.yml'].content, {}).config.auth;
    expect(plainAuth?.access).toBeUndefined();
    expect(plainAuth?.anonymouspull).toBe(true);
  });

  it('with R2, keeps the signing keys in a volume every dcr replica shares', () => {
    const r2 = { cloudflare: { r2: { accountId: '0'.repeat(32), bucket: 'blobs' } }, storage: { backend: 'r2' }, replicas: { private: 2 } };
    const cfg = parse({ ...TEAM, ...r2 });
    const rendered = renderStack(cfg, { ...SECRETS, redisPassword: 'redis-password-0123', r2AccessKeyId: 'id', r2SecretAccessKey: 'key' }, { image: IMAGE });
    const priv = loadConfigText(rendered.files['registry/config.yml'].content, {}).config;
    expect(priv.auth?.token?.keydir).toBe('/var/lib/registry/auth/token-keys');
    const specs = stackContainerSpecs(cfg, rendered);
    for (const name of ['registry-1', 'registry-2']) {
      expect(specs.find((s) => s.name === name)?.mounts).toContainEqual({ type: 'volume', source: 'registry_auth', target: '/var/lib/registry' });
    }
    for (const s of specs.filter((x) => x.role === 'mirror')) expect(s.mounts.some((m) => m.source === 'registry_auth'), s.name).toBe(false);
    const noPolicy = parse(r2);
    const bare = stackContainerSpecs(noPolicy, renderStack(noPolicy, { ...SECRETS, redisPassword: 'redis-password-0123', r2AccessKeyId: 'id', r2SecretAccessKey: 'key' }, { image: IMAGE }));
    expect(bare.find((s) => s.name === 'registry-1')?.mounts.some((m) => m.source === 'registry_auth')).toBe(false);
  });

  it('the host\'s auth step installs the policy beside the htpasswd, and removes it once the stack has none', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'rs-access-step-'));
    try {
      const hostFiles = (cfg: StackConfig) =>
        hostFilesFrom(renderStack(cfg, SECRETS, { image: IMAGE }).files, { sshUser: 'root', containerGid: 1000, serverImage: IMAGE });
      const run = (cfg: StackConfig) => {
        const script = renderHostStep('auth', hostFiles(cfg), { root });
        expect(shellcheck(script)).toBe('');
        const r = spawnSync('/bin/sh', ['-s'], { input: script, encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
        return r.stderr;
      };
      const policyFile = path.join(root, 'opt/registry-stack/auth/access.yaml');
      expect(run(parse(TEAM))).toContain('registry-stack: installed /opt/registry-stack/auth/access.yaml');
      expect(readFileSync(policyFile, 'utf8')).toBe(renderAccessPolicy(parse(TEAM).access!));
      expect(statSync(policyFile).mode & 0o777).toBe(0o640);
      expect(statSync(policyFile).gid).toBe(1000);
      expect(run(parse(TEAM))).toBe(''); // unchanged: nothing to say
      expect(run(parse({}))).toContain('registry-stack: removed /opt/registry-stack/auth/access.yaml');
      expect(existsSync(policyFile)).toBe(false);
      expect(existsSync(path.join(root, 'opt/registry-stack/auth/htpasswd'))).toBe(true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('makes each robot with the server\'s CLI in dcr\'s first container, revoking an earlier one first', () => {
    const [root] = robotCommands(parse(TEAM));
    expect(root.robot).toBe('ci');
    expect(root.create).toBe('sh -s');
    expect(shellcheck(root.stdin)).toBe('');
    expect(root.stdin).toContain(
      "docker exec 'registry' node /opt/registry-stack/server/bin/registry.mjs robot 'create' 'ci' '--scope' 'repository:team/**:pull,push' '--ttl' '90d' '--description' 'CI'\\''s pushes' -c /etc/registry/config.yml </dev/null",
    );
    expect(root.delete).toBe("docker exec 'registry' node /opt/registry-stack/server/bin/registry.mjs robot 'revoke' 'ci' -c /etc/registry/config.yml </dev/null");
    expect(root.triggers).toEqual(['repository:team/**:pull,push', '90d', "CI's pushes", '1']);
    const [deploy] = robotCommands(parse({ ...TEAM, vps: { host: '203.0.113.10', user: 'deploy' }, robots: { ci: { ...TEAM.robots.ci, generation: 2 } } }));
    expect(deploy.create).toBe('sudo -n sh -s');
    expect(deploy.delete).toMatch(/^sudo -n sh -c 'docker exec /);
    expect(deploy.triggers[3]).toBe('2');
    const [replicated] = robotCommands(
      parse({ ...TEAM, cloudflare: { r2: { accountId: '0'.repeat(32), bucket: 'blobs' } }, storage: { backend: 'r2' }, replicas: { private: 3 } }),
    );
    expect(replicated.stdin).toContain("docker exec 'registry-1' ");
  });
});

describe('the rendered dcr, served: a team, a CI robot, public read-only repositories, and the ops scripts', () => {
  const ADMIN_TOKEN = 'admin-token-for-the-ops-scripts-0123';
  let dir: string;
  let server: RunningServer;
  const secrets: string[] = [];

  /** Runs the robot's rendered script as the VPS does, `docker exec` running its command here with dcr's config. */
  function runRobotScript(cfg: StackConfig, configFile: string): string {
    const bin = path.join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    // docker exec CONTAINER CMD…: CMD here, the image's paths mapped to this checkout and the test's config.
    writeFileSync(
      path.join(bin, 'docker'),
      `#!/bin/sh
[ "$1" = exec ] && [ "$2" = registry ] || { echo "docker stub: unexpected $*" >&2; exit 99; }
shift 2
for a; do
  shift
  case $a in
    /etc/registry/config.yml) a=${configFile} ;;
    /opt/registry-stack/*) a=${ROOT}\${a#/opt/registry-stack} ;;
  esac
  set -- "$@" "$a"
done
exec "$@"
`,
    );
    chmodSync(path.join(bin, 'docker'), 0o755);
    const [robot] = robotCommands(cfg);
    const r = spawnSync('/bin/sh', ['-s'], {
      input: robot.stdin,
      encoding: 'utf8',
      cwd: dir,
      env: { PATH: `${bin}:${process.env.PATH}`, HOME: dir, REGISTRY_ADMIN_TOKEN: ADMIN_TOKEN },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain("log in with: docker login -u 'robot$ci'");
    return r.stdout;
  }

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'rs-access-served-'));
    const cfg = parse(TEAM);
    const { files } = renderStack(cfg, SECRETS, { image: IMAGE });
    mkdirSync(path.join(dir, 'auth'));
    writeFileSync(path.join(dir, 'auth/htpasswd'), files.htpasswd.content);
    writeFileSync(path.join(dir, 'auth/access.yaml'), files['auth/access.yaml'].content);
    // dcr's rendered config on a loopback target, as the local stack runs it.
    const target: RegistryTarget = {
      addr: '127.0.0.1:0',
      rootdirectory: path.join(dir, 'data'),
      htpasswdPath: path.join(dir, 'auth/htpasswd'),
      adminAddr: '127.0.0.1:0',
      publicUrl: 'http://127.0.0.1',
      trustedProxies: ['127.0.0.1'],
      logFormatter: 'json',
    };
    const configFile = path.join(dir, 'config.yml');
    writeFileSync(configFile, renderPrivateConfig(cfg, target));
    // Made twice, as a new generation would be: the first secret must stop working.
    for (let i = 0; i < 2; i++) {
      const out = runRobotScript(cfg, configFile);
      expect(out).toMatch(/^[A-Za-z0-9_-]{43}\n$/); // the secret, and nothing else
      secrets.push(out.trim());
    }
    const { config } = loadConfigText(readFileSync(configFile, 'utf8'), { REGISTRY_ADMIN_TOKEN: ADMIN_TOKEN });
    server = await startServer(config, { logger: silentLogger, metrics: true });
  }, 120_000);

  afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const decisions = async (result: string) => (await server.metrics!.authDecisions.get()).values.find((v) => v.labels.result === result)?.value ?? 0;

  it('the robot logs in with its latest secret only, pushes to team/, and is denied public/', async () => {
    const stale = new TokenClient(server.url, basicAuth('robot$ci', secrets[0]));
    expect((await stale.login('repository:team/app:pull,push')).status).toBe(401);

    const ci = new TokenClient(server.url, basicAuth('robot$ci', secrets[1]));
    expect((await ci.login('repository:team/app:pull,push')).status).toBe(200);
    await ci.pushImage('team/app', '1', buildImage({ files: [{ 'ci.txt': 'built by CI\n' }] }));
    expect((await ci.req('/v2/team/app/manifests/1')).status).toBe(200);

    const deniedBefore = await decisions('denied');
    const refused = await ci.req('/v2/public/app/blobs/uploads/', { method: 'POST' });
    expect(refused.status).toBe(403);
    expect(refused.json().errors[0].code).toBe('DENIED');
    expect(await decisions('denied')).toBe(deniedBefore + 1);
  });

  it('the team pushes to public/, which anonymous clients pull; team/ is theirs alone', async () => {
    const alice = new TokenClient(server.url, basicAuth('alice', 'alice-password-1'));
    await alice.pushImage('public/tool', '1', buildImage({ files: [{ 'tool.txt': 'for everyone\n' }] }));
    const anonymous = new TokenClient(server.url);
    expect((await anonymous.req('/v2/public/tool/manifests/1')).status).toBe(200);
    expect((await anonymous.req('/v2/team/app/manifests/1')).status).toBe(401);
    const carol = new TokenClient(server.url, basicAuth('carol', 'carol-password-1'));
    expect((await carol.req('/v2/public/tool/manifests/1')).status).toBe(200);
    expect((await carol.req('/v2/team/app/manifests/1')).status).toBe(403);
    expect(await decisions('token_issued')).toBeGreaterThan(0);
  });

  it('the ops scripts still reach the admin listener (not behind token auth), and the monitor takes the 401', async () => {
    const gc = await runScript('gc', ['--admin-url', `private=${server.adminUrl}`, '--dry-run'], { REGISTRY_ADMIN_TOKEN: ADMIN_TOKEN });
    expect(gc.code, gc.stdout + gc.stderr).toBe(0);
    expect(gc.lines.some((l) => l.msg === 'garbage collection dry run done')).toBe(true);
    const monitor = await runScript('monitor', ['--url', server.url, '--skip', 'containers,memory,disk']);
    expect(monitor.code, monitor.stdout + monitor.stderr).toBe(0);
    expect(monitor.summary.fields.alert).toBe('none');
  }, 120_000);
});
