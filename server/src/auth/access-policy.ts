// The access policy (auth.access): who may pull, push or delete which
// repositories. A YAML file:
//
//   groups:   { team: [alice, bob], ci: [robot$ci] }
//   admins:   [root, "@ops"]            # everything, everywhere ("@" names a group)
//   repositories:                       # the first pattern that matches a name decides
//     "team/**": { groups: { team: [pull, push, delete], ci: [pull, push] } }
//     "public/**": { anonymous: [pull], default: [pull], users: { carol: [push] } }
//     "**": { default: [pull] }
//
// `anonymous` applies to clients without credentials, `default` to every
// logged-in client; a logged-in client also gets what anonymous clients get
// (logging in never takes a right away). A name that no pattern matches is
// refused to all but admins. First match rather than "most specific": the
// order is what the file says, so an exception is written above its rule.
//
// The file is re-read when it changes, like htpasswd; a reload that fails
// keeps the last good policy and says why in the log.
import { readFileSync, statSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { Logger } from '../log/logger.ts';

export type Action = 'pull' | 'push' | 'delete';
export const ACTIONS: readonly Action[] = ['pull', 'push', 'delete'];

/** Who is asking: a user (or robot) name, or nobody. */
export interface Subject {
  readonly user?: string;
}

interface Rule {
  readonly pattern: string;
  readonly re: RegExp;
  readonly anonymous: ReadonlySet<Action>;
  readonly authenticated: ReadonlySet<Action>;
  readonly users: ReadonlyMap<string, ReadonlySet<Action>>;
  readonly groups: ReadonlyMap<string, ReadonlySet<Action>>;
}

const NONE: ReadonlySet<Action> = new Set();
const ALL: ReadonlySet<Action> = new Set(ACTIONS);

export class AccessPolicy {
  /** user → the groups it is in. */
  private readonly memberOf = new Map<string, Set<string>>();

  constructor(
    private readonly rules: readonly Rule[],
    groups: ReadonlyMap<string, readonly string[]>,
    private readonly admins: ReadonlySet<string>,
    private readonly adminGroups: ReadonlySet<string>,
  ) {
    for (const [group, members] of groups) {
      for (const user of members) {
        let set = this.memberOf.get(user);
        if (!set) this.memberOf.set(user, (set = new Set()));
        set.add(group);
      }
    }
  }

  /** A policy that lets nobody do anything (admins included: there are none). */
  static empty(): AccessPolicy {
    return new AccessPolicy([], new Map(), new Set(), new Set());
  }

  isAdmin(subject: Subject): boolean {
    const { user } = subject;
    if (user === undefined) return false;
    if (this.admins.has(user)) return true;
    for (const g of this.memberOf.get(user) ?? []) if (this.adminGroups.has(g)) return true;
    return false;
  }

  /** What `subject` may do on repository `name`. */
  actions(subject: Subject, name: string): ReadonlySet<Action> {
    if (this.isAdmin(subject)) return ALL;
    const rule = this.rules.find((r) => r.re.test(name));
    if (!rule) return NONE;
    const { user } = subject;
    if (user === undefined) return rule.anonymous;
    const out = new Set<Action>([...rule.anonymous, ...rule.authenticated, ...(rule.users.get(user) ?? [])]);
    for (const g of this.memberOf.get(user) ?? []) for (const a of rule.groups.get(g) ?? []) out.add(a);
    return out;
  }

  may(subject: Subject, name: string, action: Action): boolean {
    return this.actions(subject, name).has(action);
  }
}

/** A problem in a policy file, named by its key path. */
export class AccessPolicyError extends Error {}

/** Parses a policy file's text; throws AccessPolicyError naming the file and key. */
export function parseAccessPolicy(text: string, source = 'access policy'): AccessPolicy {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) throw new AccessPolicyError(`${source}: not valid YAML: ${doc.errors[0].message.split('\n')[0]}`);
  // Maps as Map: the order of repository patterns is the order of the file.
  const root = doc.toJS({ mapAsMap: true }) ?? new Map();
  const fail = (key: string, message: string): never => {
    throw new AccessPolicyError(`${source}: ${key}: ${message}`);
  };
  if (!(root instanceof Map)) fail('(top level)', 'must be a mapping with groups, admins and repositories');
  for (const key of root.keys()) {
    if (!['groups', 'admins', 'repositories', 'version'].includes(String(key))) {
      fail(String(key), 'unknown key (expected groups, admins, repositories)');
    }
  }

  const groups = new Map<string, string[]>();
  const rawGroups = root.get('groups') ?? new Map();
  if (!(rawGroups instanceof Map)) fail('groups', 'must map group names to lists of users');
  for (const [name, members] of rawGroups as Map<unknown, unknown>) {
    groups.set(String(name), stringList(members, `groups.${String(name)}`, fail));
  }
  const knownGroup = (group: string, key: string) => {
    if (!groups.has(group)) fail(key, `group "${group}" is not defined under groups`);
  };

  const admins = new Set<string>();
  const adminGroups = new Set<string>();
  for (const entry of stringList(root.get('admins') ?? [], 'admins', fail)) {
    if (entry.startsWith('@')) {
      knownGroup(entry.slice(1), 'admins');
      adminGroups.add(entry.slice(1));
    } else {
      admins.add(entry);
    }
  }

  const rules: Rule[] = [];
  const rawRepos = root.get('repositories') ?? new Map();
  if (!(rawRepos instanceof Map)) fail('repositories', 'must map repository patterns to rules');
  for (const [rawPattern, rawRule] of rawRepos as Map<unknown, unknown>) {
    const pattern = String(rawPattern);
    const key = `repositories."${pattern}"`;
    const re = compilePattern(pattern);
    if (!re) fail(key, 'not a repository pattern (lowercase name characters, "/", "*" and "**" only)');
    const rule = rawRule ?? new Map();
    if (!(rule instanceof Map)) fail(key, 'must be a mapping with anonymous, default, users and/or groups');
    for (const k of (rule as Map<unknown, unknown>).keys()) {
      if (!['anonymous', 'default', 'users', 'groups'].includes(String(k))) {
        fail(`${key}.${String(k)}`, 'unknown key (expected anonymous, default, users, groups)');
      }
    }
    const r = rule as Map<string, unknown>;
    const named = (which: 'users' | 'groups') => {
      const out = new Map<string, ReadonlySet<Action>>();
      const raw = r.get(which) ?? new Map();
      if (!(raw instanceof Map)) fail(`${key}.${which}`, `must map ${which === 'users' ? 'user' : 'group'} names to lists of actions`);
      for (const [name, actions] of raw as Map<unknown, unknown>) {
        const k = `${key}.${which}.${String(name)}`;
        if (which === 'groups') knownGroup(String(name), k);
        out.set(String(name), actionSet(actions, k, fail));
      }
      return out;
    };
    rules.push({
      pattern,
      re: re!,
      anonymous: actionSet(r.get('anonymous') ?? [], `${key}.anonymous`, fail),
      authenticated: actionSet(r.get('default') ?? [], `${key}.default`, fail),
      users: named('users'),
      groups: named('groups'),
    });
  }
  return new AccessPolicy(rules, groups, admins, adminGroups);
}

function stringList(value: unknown, key: string, fail: (key: string, message: string) => never): string[] {
  if (value === null) return [];
  if (!Array.isArray(value)) fail(key, 'must be a list');
  return (value as unknown[]).map((v, i) => {
    if (typeof v !== 'string' || v.trim() === '') fail(`${key}[${i}]`, 'must be a non-empty name');
    return (v as string).trim();
  });
}

function actionSet(value: unknown, key: string, fail: (key: string, message: string) => never): ReadonlySet<Action> {
  const out = new Set<Action>();
  for (const a of stringList(value, key, fail)) {
    if (a === '*') ACTIONS.forEach((x) => out.add(x));
    else if ((ACTIONS as readonly string[]).includes(a)) out.add(a as Action);
    else fail(key, `unknown action "${a}" (expected pull, push, delete or *)`);
  }
  return out;
}

/**
 * A repository pattern as a RegExp: `*` is any run of characters within one
 * path component, `**` any number of components. `team/**` matches
 * `team/app` and `team/a/b` (not `team` itself); `**` alone matches every
 * name; `**\/cache` matches `cache` and `x/y/cache`.
 */
export function compilePattern(pattern: string): RegExp | undefined {
  if (!/^[a-z0-9._\-/*]+$/.test(pattern) || pattern.startsWith('/') || pattern.endsWith('/') || pattern.includes('//')) {
    return undefined;
  }
  const segments = pattern.split('/');
  let re = '';
  segments.forEach((seg, i) => {
    const last = i === segments.length - 1;
    if (seg === '**') {
      // A leading or middle "**/" may stand for nothing; a trailing "/**" for at least one component.
      re += last ? '.+' : '(?:[^/]+/)*';
      return;
    }
    re += seg
      .split(/(\*\*|\*)/)
      .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.\-]/g, '\\$&')))
      .join('');
    if (!last) re += '/';
  });
  return new RegExp(`^${re}$`);
}

export interface AccessPolicyFileOptions {
  path: string;
  /** How often the file's mtime is looked at. */
  reloadCheckMs?: number;
  logger?: Pick<Logger, 'warn' | 'info'>;
  /** The clock of reload checks (tests move it). */
  now?: () => number;
}

/** The policy of a file, re-read when its mtime changes. */
export class AccessPolicyFile {
  private policy: AccessPolicy;
  private loadedMtime: number;
  private lastCheck = 0;
  private readonly reloadCheckMs: number;

  /** Throws AccessPolicyError when the file cannot be read or is invalid: a bad start must stop. */
  constructor(private readonly options: AccessPolicyFileOptions) {
    this.reloadCheckMs = options.reloadCheckMs ?? 2_000;
    const { policy, mtime } = this.read();
    this.policy = policy;
    this.loadedMtime = mtime;
  }

  current(): AccessPolicy {
    const now = (this.options.now ?? Date.now)();
    if (now - this.lastCheck >= this.reloadCheckMs) {
      this.lastCheck = now;
      this.maybeReload();
    }
    return this.policy;
  }

  private maybeReload(): void {
    let mtime: number;
    try {
      mtime = statSync(this.options.path).mtimeMs;
    } catch {
      // Gone for a moment (an editor's rename, a config-map update): keep the last good policy.
      return;
    }
    if (mtime === this.loadedMtime) return;
    // Taken as loaded even if it fails, so a bad file is reported once, not on every request.
    this.loadedMtime = mtime;
    try {
      this.policy = this.read().policy;
      this.options.logger?.info({ file: this.options.path }, 'access policy reloaded');
    } catch (err) {
      this.options.logger?.warn(
        { file: this.options.path, error: (err as Error).message },
        'access policy reload failed: keeping the last good policy',
      );
    }
  }

  private read(): { policy: AccessPolicy; mtime: number } {
    let text: string;
    let mtime: number;
    try {
      mtime = statSync(this.options.path).mtimeMs;
      text = readFileSync(this.options.path, 'utf8');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new AccessPolicyError(`cannot read ${JSON.stringify(this.options.path)}: ${e.code ?? e.message}`);
    }
    return { policy: parseAccessPolicy(text, this.options.path), mtime };
  }
}
