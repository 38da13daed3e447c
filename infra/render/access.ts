// dcr's access policy file (the server's auth.access), rendered from the
// stack config's `access`. The stack config lists the repository rules (Pulumi
// keeps a list's order, not a map's); the file maps patterns to rules in that
// order, which is how the server reads it: the first pattern that matches a
// name decides. The result is checked with the server's own parser, so a
// policy the server would refuse fails at preview, not at the container's start.
import { Document } from 'yaml';
import { AccessPolicyError, parseAccessPolicy } from '../../server/src/auth/access-policy.ts';
import { type StackConfig, StackConfigError } from '../config.ts';

type Access = NonNullable<StackConfig['access']>;

const HEADER =
  '# Rendered by registry-stack (infra/render/access.ts) from registry-stack:access. Do not edit: `pulumi up` overwrites it.\n' +
  '# The first pattern that matches a repository name decides; the server re-reads this file when it changes.\n';

/** `[pull, push]` as the file writes it; `*` stays `*`. */
const list = (actions: readonly string[]) => [...new Set(actions)];

export function renderAccessPolicy(access: Access): string {
  // Maps, not objects: a pattern such as "2024" would otherwise move to the front.
  const repositories = new Map<string, Map<string, unknown>>();
  for (const rule of access.repositories) {
    const out = new Map<string, unknown>();
    if (rule.anonymous.length) out.set('anonymous', list(rule.anonymous));
    if (rule.default.length) out.set('default', list(rule.default));
    if (Object.keys(rule.users).length) out.set('users', new Map(Object.entries(rule.users).map(([u, a]) => [u, list(a)])));
    if (Object.keys(rule.groups).length) out.set('groups', new Map(Object.entries(rule.groups).map(([g, a]) => [g, list(a)])));
    repositories.set(rule.pattern, out);
  }
  const doc = new Document(
    new Map<string, unknown>([
      ['groups', new Map(Object.entries(access.groups))],
      ['admins', access.admins],
      ['repositories', repositories],
    ]),
  );
  const text = HEADER + doc.toString({ lineWidth: 0 });
  try {
    parseAccessPolicy(text, 'the rendered access policy');
  } catch (err) {
    if (err instanceof AccessPolicyError) throw new StackConfigError(`registry-stack:access: ${err.message}`);
    throw err;
  }
  return text;
}
