// Which addresses the mirror's connections to an upstream may reach. A hostile
// or compromised upstream can redirect us, or name a token realm, anywhere;
// from the mirror's host "anywhere" includes its loopback services, the cloud
// metadata endpoint and the LAN, and whatever we fetch there would be relayed
// (and cached) as the upstream's answer. So internal addresses are refused,
// except where the operator put the upstream itself (its host, any port: a
// registry on 127.0.0.1 or the LAN keeps working with its own redirects) and
// the addresses listed in proxy.internaltargets (an S3 endpoint on the LAN).
//
// The check runs inside the connection: names are resolved by our lookup,
// which hands the socket only addresses that passed, and the peer of the
// connected socket is checked again. A name that answers a public address
// to one resolution and 127.0.0.1 to the next (DNS rebinding) cannot slip
// between a check and the connect, because there is no second resolution.
import * as dns from 'node:dns';
import * as net from 'node:net';
import proxyAddr from 'proxy-addr';
import type * as Undici from 'undici';
import { buildConnector } from './undici-parts.ts';

const INTERNAL = proxyAddr.compile([
  'loopback', // 127.0.0.0/8, ::1
  'linklocal', // 169.254.0.0/16 (cloud metadata), fe80::/10
  'uniquelocal', // 10/8, 172.16/12, 192.168/16, fc00::/7
  '0.0.0.0/8', // "this network": 0.0.0.0 reaches the local host
  '100.64.0.0/10', // carrier-grade NAT, also some clouds' metadata (100.100.100.200)
  '192.0.0.0/24',
  '198.18.0.0/15',
  '224.0.0.0/3', // multicast, reserved, broadcast
  '::/96', // unspecified and IPv4-compatible (::127.0.0.1)
  'fec0::/10', // site-local
  'ff00::/8',
]);

/** Loopback, link-local, private or otherwise not a public unicast address (IPv4-mapped IPv6 included). */
export function isInternalAddress(address: string): boolean {
  return INTERNAL(address, 0);
}

/** Refused before any byte was sent to the address. */
export class EgressRefused extends Error {
  readonly code = 'EGRESS_REFUSED';
  constructor(
    readonly hostname: string,
    readonly address: string | undefined,
  ) {
    super(`refused to connect to ${hostname}${address && address !== hostname ? ` (${address})` : ''}: an internal address`);
    this.name = 'EgressRefused';
  }
}

export type Resolver = (hostname: string) => Promise<Array<{ address: string; family: number }>>;

const systemResolver: Resolver = (hostname) => dns.promises.lookup(hostname, { all: true, verbatim: true });

export class EgressPolicy {
  private readonly upstreamHost: string;
  private readonly listed: (address: string, i: number) => boolean;

  /**
   * @param upstreamUrl the configured upstream: its host is allowed whatever it resolves to.
   * @param allowed addresses or CIDRs (proxy.internaltargets) that may be reached although internal.
   */
  constructor(
    upstreamUrl: string,
    allowed: readonly string[] = [],
    readonly resolve: Resolver = systemResolver,
  ) {
    this.upstreamHost = bareHost(new URL(upstreamUrl).hostname);
    this.listed = allowed.length > 0 ? proxyAddr.compile([...allowed]) : () => false;
  }

  /** May a connection to `hostname` go to `address`? */
  async permits(hostname: string, address: string): Promise<boolean> {
    if (!isInternalAddress(address) || this.listed(address, 0)) return true;
    if (bareHost(hostname) === this.upstreamHost) return true;
    return (await this.upstreamAddresses()).has(canonical(address));
  }

  /** Resolves `hostname` to the addresses a connection may use; refuses when none may. */
  async addressesFor(hostname: string): Promise<Array<{ address: string; family: number }>> {
    const host = bareHost(hostname);
    const found = net.isIP(host) ? [{ address: host, family: net.isIP(host) }] : await this.resolve(host);
    const ok: Array<{ address: string; family: number }> = [];
    for (const a of found) if (await this.permits(host, a.address)) ok.push(a);
    if (ok.length === 0) throw new EgressRefused(host, found[0]?.address);
    return ok;
  }

  /** For net.connect: only addresses that passed reach the socket. */
  readonly lookup: net.LookupFunction = (hostname, options, callback) => {
    this.addressesFor(hostname).then(
      (ok) => {
        const wanted = options.family === 4 || options.family === 6 ? ok.filter((a) => a.family === options.family) : ok;
        if (wanted.length === 0) {
          callback(Object.assign(new Error(`no IPv${options.family} address allowed for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
        } else if (options.all) {
          (callback as unknown as (err: null, addresses: dns.LookupAddress[]) => void)(null, wanted);
        } else {
          callback(null, wanted[0].address, wanted[0].family);
        }
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    );
  };

  /** The addresses the configured upstream's host resolves to now (a redirect to the same host on another port is its own). */
  private async upstreamAddresses(): Promise<Set<string>> {
    if (net.isIP(this.upstreamHost)) return new Set([canonical(this.upstreamHost)]);
    try {
      return new Set((await this.resolve(this.upstreamHost)).map((a) => canonical(a.address)));
    } catch {
      return new Set();
    }
  }
}

/**
 * An undici connector that enforces the policy on every new connection: IP
 * literals (which net.connect never looks up) before connecting, names in the
 * lookup, and the connected peer afterwards.
 */
export function guardedConnector(policy: EgressPolicy, options: Undici.buildConnector.BuildOptions = {}): Undici.buildConnector.connector {
  const connect = buildConnector({ ...options, lookup: policy.lookup } as Undici.buildConnector.BuildOptions);
  return (opts, callback) => {
    const hostname = bareHost(opts.hostname);
    const before = net.isIP(hostname) ? policy.permits(hostname, hostname) : Promise.resolve(true);
    before.then(
      (ok) => {
        if (!ok) return callback(new EgressRefused(hostname, hostname), null);
        connect(opts, (err, socket) => {
          if (err) return callback(err, null);
          const peer = socket!.remoteAddress;
          policy.permits(hostname, peer ?? hostname).then(
            (peerOk) => {
              if (peerOk) return callback(null, socket!);
              socket!.destroy();
              callback(new EgressRefused(hostname, peer), null);
            },
            (e: Error) => {
              socket!.destroy();
              callback(e, null);
            },
          );
        });
      },
      (err: Error) => callback(err, null),
    );
  };
}

function bareHost(hostname: string): string {
  return hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
}

/** One spelling per address: IPv4-mapped IPv6 as IPv4, IPv6 compressed. */
function canonical(address: string): string {
  const bare = bareHost(address);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped) return mapped[1];
  if (net.isIPv6(bare)) {
    const hostname = new URL(`http://[${bare}]/`).hostname;
    const v4 = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(hostname);
    if (v4) {
      const hi = Number.parseInt(v4[1], 16);
      const lo = Number.parseInt(v4[2], 16);
      return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
    }
    return hostname.slice(1, -1);
  }
  return bare;
}
