// Where a twin keeps its state, and the addresses on its networks. One state
// directory is one twin: its engines, the twin VPS's /opt and /etc/docker, its
// CAs, keys and secrets. The subnets derive from the directory's path, so two
// twins (a developer's and a test run's) can run side by side on one machine.
import { createHash } from 'node:crypto';
import * as path from 'node:path';

export interface TwinLayout {
  dir: string;
  /** The engine the twin VPS and the stack's containers run on. */
  vpsEngine: string;
  /** The client machine's engine: trusts the twin's CAs, resolves the stack's host names, mirrors Docker Hub through mir. */
  clientEngine: string;
  /** The twin VPS's /opt (the engine sees the same directory at /opt, so bind mounts resolve as on the VPS). */
  vpsOpt: string;
  /** The twin VPS's /etc/docker: daemon.json there is the VPS engine's config file. */
  vpsEtcDocker: string;
  /** The twin VPS's /run/registry-stack-twin: its systemctl shim leaves restart requests here. */
  vpsRun: string;
  clientEtcDocker: string;
  clientHosts: string;
  ssh: string;
  pki: string;
  edge: string;
  pebble: string;
  secrets: string;
  /** The robots the twin made (as the Pulumi state keeps them): what each was made from, and its secret. */
  robots: string;
  env: string;
  log: string;
  /** The twin's "internet" and the stack's own network. */
  publicSubnet: string;
  stackSubnet: string;
  ips: { gateway: string; vps: string; caddy: string; edge: string; pebble: string; hub: string };
}

export const PUBLIC_NETWORK = 'twin_internet';
export const TWIN_CONTAINERS = { vps: 'twin-vps', edge: 'twin-edge', pebble: 'twin-pebble', hub: 'twin-hub' } as const;
/** The Docker Hub stand-in's name on the stack's network, and its port. */
export const HUB_ALIAS = 'hub.twin.internal';
export const HUB_PORT = 5000;

export function twinLayout(dir: string): TwinLayout {
  const abs = path.resolve(dir);
  const h = createHash('sha256').update(abs).digest();
  // 10.200.0.0 … 10.249.255.0: two adjacent /24s per twin.
  const a = 200 + (h[0] % 50);
  const b = h[1] & 0xfe;
  const pub = `10.${a}.${b}`;
  const p = (...parts: string[]) => path.join(abs, ...parts);
  return {
    dir: abs,
    vpsEngine: p('engine-vps'),
    clientEngine: p('engine-client'),
    vpsOpt: p('vps', 'opt'),
    vpsEtcDocker: p('vps', 'etc-docker'),
    vpsRun: p('vps', 'run'),
    clientEtcDocker: p('client', 'etc-docker'),
    clientHosts: p('client', 'hosts'),
    ssh: p('ssh'),
    pki: p('pki'),
    edge: p('edge'),
    pebble: p('pebble'),
    secrets: p('secrets.json'),
    robots: p('robots.json'),
    env: p('twin.env'),
    log: p('twin.log'),
    publicSubnet: `${pub}.0/24`,
    stackSubnet: `10.${a}.${b + 1}.0/24`,
    ips: { gateway: `${pub}.1`, vps: `${pub}.2`, caddy: `${pub}.3`, edge: `${pub}.4`, pebble: `${pub}.5`, hub: `${pub}.6` },
  };
}
