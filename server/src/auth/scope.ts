// Scopes of the Docker token protocol: "repository:team/app:pull,push",
// "registry:catalog:*". A name may hold colons (a registry host with a
// port), so the type ends at the first colon and the actions start after the
// last one. Several scopes may share one `scope` parameter, space-separated.
import type { Access } from './authenticator.ts';

export interface ResourceScope {
  readonly type: string;
  readonly name: string;
  readonly actions: readonly string[];
}

/** A granted access entry, as the `access` claim of a token holds it. */
export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

export class ScopeError extends Error {}

/** Every scope in `values` (each a space-separated list); throws ScopeError on a malformed one. */
export function parseScopes(values: readonly string[]): ResourceScope[] {
  const out: ResourceScope[] = [];
  for (const value of values) {
    for (const part of value.split(' ')) {
      if (part === '') continue;
      const first = part.indexOf(':');
      const last = part.lastIndexOf(':');
      if (first <= 0 || last === first || last === part.length - 1) {
        throw new ScopeError(`malformed scope ${JSON.stringify(part.slice(0, 200))} (expected type:name:actions)`);
      }
      // "repository(plugin)" names a resource class; the class changes nothing here.
      const type = part.slice(0, first).replace(/\(.*\)$/, '');
      out.push({ type, name: part.slice(first + 1, last), actions: part.slice(last + 1).split(',').filter((a) => a !== '') });
    }
  }
  return out;
}

export function formatScope(scope: ResourceScope): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(',')}`;
}

/** The actions a request needs on its repository, as a challenge's scope states them (as distribution does). */
export function challengeActions(access: Access): string[] {
  if (access === 'push') return ['pull', 'push'];
  return [access];
}
