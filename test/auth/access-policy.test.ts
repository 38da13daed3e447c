// The access policy file: patterns, first match, users, groups, anonymous,
// default, admins; refusals naming the key; live reload that keeps the last
// good policy when the new file is bad.
import { rmSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccessPolicyFile, compilePattern, parseAccessPolicy } from '../../server/src/auth/access-policy.ts';
import { makeTempDir } from '../helpers/server.ts';

const POLICY = `
groups:
  team: [alice, bob]
  ci: [robot$ci]
  ops: [olga]
admins: [root, "@ops"]
repositories:
  "team/secret":
    users: { alice: [pull] }
  "team/**":
    groups: { team: [pull, push, delete], ci: [pull, push] }
  "*/cache":
    default: [pull, push]
  "public/**":
    anonymous: [pull]
    users: { carol: ["*"] }
  "**":
    default: [pull]
`;

const sorted = (s: ReadonlySet<string>) => [...s].sort();

describe('repository patterns', () => {
  const cases: Array<[string, string[], string[]]> = [
    ['team/**', ['team/app', 'team/a/b/c'], ['team', 'teams/app', 'other/team/app']],
    ['*/cache', ['a/cache', 'team/cache'], ['cache', 'a/b/cache', 'a/cache/x']],
    ['**/cache', ['cache', 'a/cache', 'a/b/cache'], ['a/cachex']],
    ['**', ['a', 'a/b/c'], []],
    ['app-*', ['app-1', 'app-'], ['app', 'app-1/x']],
    ['a/**/z', ['a/z', 'a/b/z', 'a/b/c/z'], ['a/bz', 'z']],
    ['exact.name', ['exact.name'], ['exactxname']],
  ];
  for (const [pattern, yes, no] of cases) {
    it(`${pattern} matches ${yes.join(', ')} and not ${no.join(', ') || '-'}`, () => {
      const re = compilePattern(pattern)!;
      for (const name of yes) expect(re.test(name), name).toBe(true);
      for (const name of no) expect(re.test(name), name).toBe(false);
    });
  }

  it('refuses what is not a pattern', () => {
    for (const bad of ['Team/**', '/a', 'a/', 'a//b', 'a b', 'a:b', '']) expect(compilePattern(bad), bad).toBeUndefined();
  });
});

describe('access decisions', () => {
  const policy = parseAccessPolicy(POLICY, 'access.yml');

  it('the first matching pattern decides: an exception above its rule', () => {
    expect(sorted(policy.actions({ user: 'alice' }, 'team/secret'))).toEqual(['pull']);
    expect(sorted(policy.actions({ user: 'bob' }, 'team/secret'))).toEqual([]);
    expect(sorted(policy.actions({ user: 'alice' }, 'team/app'))).toEqual(['delete', 'pull', 'push']);
  });

  it('groups give their members rights; robots are members like users', () => {
    expect(sorted(policy.actions({ user: 'bob' }, 'team/a/b'))).toEqual(['delete', 'pull', 'push']);
    expect(sorted(policy.actions({ user: 'robot$ci' }, 'team/app'))).toEqual(['pull', 'push']);
    expect(sorted(policy.actions({ user: 'carol' }, 'team/app'))).toEqual([]);
  });

  it('default is for every logged-in user, anonymous for everyone (logged in or not)', () => {
    expect(sorted(policy.actions({ user: 'carol' }, 'x/cache'))).toEqual(['pull', 'push']);
    expect(sorted(policy.actions({}, 'x/cache'))).toEqual([]);
    expect(sorted(policy.actions({}, 'public/tools'))).toEqual(['pull']);
    expect(sorted(policy.actions({ user: 'dave' }, 'public/tools'))).toEqual(['pull']);
    expect(sorted(policy.actions({ user: 'carol' }, 'public/tools'))).toEqual(['delete', 'pull', 'push']);
    expect(sorted(policy.actions({ user: 'dave' }, 'misc/thing'))).toEqual(['pull']);
    expect(sorted(policy.actions({}, 'misc/thing'))).toEqual([]);
  });

  it('admins (by name or by group) may do everything, even where no rule names them', () => {
    for (const user of ['root', 'olga']) {
      expect(policy.isAdmin({ user })).toBe(true);
      expect(sorted(policy.actions({ user }, 'team/secret'))).toEqual(['delete', 'pull', 'push']);
    }
    expect(policy.isAdmin({ user: 'alice' })).toBe(false);
    expect(policy.isAdmin({})).toBe(false);
  });

  it('a name no pattern matches is refused to all but admins', () => {
    const p = parseAccessPolicy('admins: [root]\nrepositories:\n  "team/**": { default: [pull] }\n');
    expect(sorted(p.actions({ user: 'alice' }, 'other/app'))).toEqual([]);
    expect(sorted(p.actions({ user: 'root' }, 'other/app'))).toEqual(['delete', 'pull', 'push']);
  });

  it('keeps the order of the file even for patterns that look like numbers', () => {
    const p = parseAccessPolicy('repositories:\n  "**": { default: [pull] }\n  "1": { default: [push] }\n');
    expect(sorted(p.actions({ user: 'x' }, '1'))).toEqual(['pull']);
  });
});

describe('bad policy files are refused, naming the key', () => {
  const bad: Array<[string, RegExp]> = [
    ['repositories: [a]', /repositories: must map repository patterns/],
    ['repositories:\n  "Team/**": { default: [pull] }', /repositories\."Team\/\*\*": not a repository pattern/],
    ['repositories:\n  "a/**": { default: [read] }', /repositories\."a\/\*\*"\.default: unknown action "read"/],
    ['repositories:\n  "a/**": { everyone: [pull] }', /repositories\."a\/\*\*"\.everyone: unknown key/],
    ['repositories:\n  "a/**": { groups: { nope: [pull] } }', /repositories\."a\/\*\*"\.groups\.nope: group "nope" is not defined/],
    ['admins: ["@nope"]', /admins: group "nope" is not defined/],
    ['groups: { a: alice }', /groups\.a: must be a list/],
    ['users: {}', /users: unknown key/],
    ['repositories:\n  a: 1\n  a: 2', /not valid YAML/],
    ['- just\n- a list', /must be a mapping/],
  ];
  for (const [text, message] of bad) {
    it(message.source, () => {
      expect(() => parseAccessPolicy(text, 'p.yml')).toThrow(message);
      expect(() => parseAccessPolicy(text, 'p.yml')).toThrow(/^p\.yml: /);
    });
  }
});

describe('AccessPolicyFile reloads', () => {
  let dir: string;
  let file: string;
  let mtime = Date.now();
  const write = (text: string) => {
    writeFileSync(file, text);
    mtime += 1000;
    utimesSync(file, mtime / 1000, mtime / 1000);
  };
  beforeAll(() => {
    dir = makeTempDir('rs-policy-');
    file = path.join(dir, 'access.yml');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses a bad file at start', () => {
    write('repositories: {"**": {default: [fly]}}');
    expect(() => new AccessPolicyFile({ path: file })).toThrow(/unknown action "fly"/);
    expect(() => new AccessPolicyFile({ path: path.join(dir, 'missing.yml') })).toThrow(/cannot read .*missing\.yml.*ENOENT/);
  });

  it('applies a changed file; keeps the last good one (and says why) when the change is bad', () => {
    write('repositories:\n  "**": { default: [pull] }\n');
    const warnings: Array<{ obj: any; msg: string }> = [];
    // pino's overloaded LogFn: a plain recorder stands in for it.
    const logger = { warn: (obj: any, msg: string) => warnings.push({ obj, msg }), info: () => {} } as never;
    const policy = new AccessPolicyFile({ path: file, reloadCheckMs: 0, logger });
    expect(policy.current().may({ user: 'a' }, 'x', 'push')).toBe(false);

    write('repositories:\n  "**": { default: [pull, push] }\n');
    expect(policy.current().may({ user: 'a' }, 'x', 'push')).toBe(true);

    write('repositories:\n  "**": { default: [pull, launch] }\n');
    expect(policy.current().may({ user: 'a' }, 'x', 'push')).toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0].msg).toMatch(/keeping the last good policy/);
    expect(warnings[0].obj).toMatchObject({ file, error: expect.stringMatching(/unknown action "launch"/) });
    // Reported once per version of the file, not once per request.
    policy.current();
    expect(warnings).toHaveLength(1);

    rmSync(file);
    expect(policy.current().may({ user: 'a' }, 'x', 'push')).toBe(true);
    write('repositories:\n  "**": { default: [] }\n');
    expect(policy.current().may({ user: 'a' }, 'x', 'pull')).toBe(false);
  });
});
