// The mirror's upstream registries and how a requested repository name maps
// onto one of them. Cached content is stored under "<cache prefix>/<remote
// name>" (e.g. docker.io/library/alpine), so the same repository name on two
// upstreams never collides, while blobs stay shared by digest.
import type { RegistryConfig } from '../config/schema.ts';
import { RegistryError } from '../registry/errors.ts';
import { isValidName } from '../registry/names.ts';

export interface Upstream {
  /** The registry host clients name (docker.io, ghcr.io, registry.example.com:5000). */
  readonly host: string;
  /** Base URL requests go to (https://registry-1.docker.io for docker.io). */
  readonly url: string;
  readonly username?: string;
  readonly password?: string;
  /** The first component of cache names for this upstream: the host, with ':' made '_' so it is a valid name component. */
  readonly prefix: string;
  /** Internal addresses/CIDRs its redirects and token realm may lead to (proxy.internaltargets); its own host always may. */
  readonly internalTargets?: readonly string[];
}

export interface Resolved {
  readonly upstream: Upstream;
  /** The repository name at the upstream. */
  readonly remoteName: string;
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_URL = 'https://registry-1.docker.io';

export class Upstreams {
  private readonly byHost = new Map<string, Upstream>();
  private readonly byPrefix = new Map<string, Upstream>();
  readonly defaultUpstream: Upstream;

  /**
   * @param anyNamespace answer every ?ns= with the default upstream: distribution's single
   *   remoteurl ignores ns, and containerd sends ns=docker.io to a mirror of any registry.
   */
  constructor(
    list: Array<Omit<Upstream, 'prefix'>>,
    defaultHost?: string,
    private readonly anyNamespace = false,
  ) {
    if (list.length === 0) throw new Error('the mirror needs at least one upstream');
    for (const u of list) {
      const host = u.host.toLowerCase();
      const upstream: Upstream = { ...u, host, url: u.url.replace(/\/+$/, ''), prefix: host.replace(/:/g, '_') };
      if (this.byHost.has(host)) throw new Error(`proxy.upstreams: host ${host} is listed twice`);
      this.byHost.set(host, upstream);
      this.byPrefix.set(upstream.prefix, upstream);
    }
    const wanted = defaultHost?.toLowerCase() ?? (this.byHost.has(DOCKER_HUB) ? DOCKER_HUB : list[0].host.toLowerCase());
    const found = this.byHost.get(wanted);
    if (!found) throw new Error(`proxy.defaulthost: ${wanted} is not one of the upstreams`);
    this.defaultUpstream = found;
  }

  static fromConfig(proxy: NonNullable<RegistryConfig['proxy']>, env: NodeJS.ProcessEnv = process.env): Upstreams {
    const list: Array<Omit<Upstream, 'prefix'>> = [];
    const internalTargets = proxy.internaltargets;
    if (proxy.remoteurl) {
      // distribution's single upstream: named by its host, or docker.io for Docker Hub.
      const url = new URL(proxy.remoteurl);
      const host = /(^|\.)docker\.io$/.test(url.hostname) ? DOCKER_HUB : url.host;
      list.push({ host, url: url.origin, username: proxy.username, password: proxy.password, internalTargets });
    }
    for (const u of proxy.upstreams ?? []) {
      list.push({
        host: u.host,
        url: u.url,
        username: u.username ?? envCredential(env, u.host, 'USERNAME'),
        password: u.password ?? envCredential(env, u.host, 'PASSWORD'),
        internalTargets,
      });
    }
    if (list.length === 0) list.push({ host: DOCKER_HUB, url: DOCKER_HUB_URL, username: proxy.username, password: proxy.password, internalTargets });
    const singleRemote = proxy.remoteurl !== undefined && (proxy.upstreams ?? []).length === 0;
    return new Upstreams(list, proxy.defaulthost, singleRemote);
  }

  all(): Upstream[] {
    return [...this.byHost.values()];
  }

  /**
   * The cache name for a requested repository: from containerd's ?ns=<host>
   * (any ns, with a single remoteurl), else a leading registry host in the
   * name, else the default upstream.
   */
  canonicalName(name: string, ns?: string): string {
    let upstream: Upstream | undefined;
    let remote = name;
    if (ns) {
      upstream = this.byHost.get(ns.toLowerCase()) ?? (this.anyNamespace ? this.defaultUpstream : undefined);
      if (!upstream) throw new RegistryError('NAME_UNKNOWN', `this mirror has no upstream for ns=${ns.slice(0, 100)}`);
      // containerd sends the name without the host; tolerate clients that repeat it.
      const first = name.split('/')[0];
      if (this.byPrefix.get(first) === upstream && name.includes('/')) remote = name.slice(first.length + 1);
    } else {
      const slash = name.indexOf('/');
      const first = slash > 0 ? name.slice(0, slash) : undefined;
      const named = first !== undefined ? (this.byPrefix.get(first) ?? this.byHost.get(first.toLowerCase())) : undefined;
      if (named) {
        upstream = named;
        remote = name.slice(slash + 1);
      } else {
        upstream = this.defaultUpstream;
      }
    }
    if (upstream.host === DOCKER_HUB && !remote.includes('/')) remote = `library/${remote}`;
    if (!isValidName(remote)) throw new RegistryError('NAME_INVALID', `invalid repository name: ${name.slice(0, 100)}`);
    return `${upstream.prefix}/${remote}`;
  }

  /**
   * The name clients pull a cache repository by (what the catalog lists): the
   * remote name for the default upstream (team/app, library/alpine), the cache
   * name for the others (ghcr.io/owner/app, 127.0.0.1_5000/team/app), whose
   * first component is how canonicalName finds their upstream. Always a name
   * that canonicalName maps back to `cacheName`.
   */
  pullName(cacheName: string): string {
    let resolved: Resolved;
    try {
      resolved = this.resolve(cacheName);
    } catch {
      return cacheName;
    }
    if (resolved.upstream !== this.defaultUpstream) return cacheName;
    try {
      // A remote name whose first component names another upstream would pull from that one.
      if (this.canonicalName(resolved.remoteName) === cacheName) return resolved.remoteName;
    } catch {
      // Not a name canonicalName takes: the cache name still is.
    }
    return cacheName;
  }

  /** The upstream and remote name behind a cache name made by canonicalName. */
  resolve(cacheName: string): Resolved {
    const slash = cacheName.indexOf('/');
    const upstream = slash > 0 ? this.byPrefix.get(cacheName.slice(0, slash)) : undefined;
    if (!upstream) throw new RegistryError('NAME_UNKNOWN', `repository name not known to this mirror: ${cacheName.slice(0, 100)}`);
    return { upstream, remoteName: cacheName.slice(slash + 1) };
  }
}

/** REGISTRY_PROXY_<HOST>_USERNAME, e.g. REGISTRY_PROXY_GHCR_IO_PASSWORD, keeps secrets out of the config file. */
function envCredential(env: NodeJS.ProcessEnv, host: string, which: 'USERNAME' | 'PASSWORD'): string | undefined {
  const key = `REGISTRY_PROXY_${host.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_${which}`;
  return env[key] || undefined;
}
