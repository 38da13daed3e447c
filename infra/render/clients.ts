// Client snippets: how to point Docker, containerd and k3s at the stack.
// They carry no secrets: where a login is needed they name the user and leave
// a placeholder for the password.
import { stringify } from 'yaml';
import type { StackConfig } from '../config.ts';

export interface ClientSnippets {
  /** /etc/docker/daemon.json fragment (Docker only mirrors Docker Hub); absent when docker.io is not an upstream. */
  dockerDaemonJson?: string;
  /** /etc/containerd/certs.d/<host>/hosts.toml, per upstream host. */
  containerdHosts: Record<string, string>;
  /** /etc/rancher/k3s/registries.yaml */
  k3sRegistriesYaml: string;
  /** Shell lines: log in and push to the private registry, pull through the mirror. */
  usage: string;
}

export interface ClientOptions {
  /** Base URL of the private registry (https://dcr.example.com, or https://dcr.localhost:8443 locally). */
  privateUrl: string;
  mirrorUrl: string;
}

export function clientOptionsFor(cfg: StackConfig): ClientOptions {
  return { privateUrl: `https://${cfg.derived.dcrHost}`, mirrorUrl: `https://${cfg.derived.mirHost}` };
}

const hostOf = (url: string) => new URL(url).host;

export function renderClientSnippets(cfg: StackConfig, o: ClientOptions = clientOptionsFor(cfg)): ClientSnippets {
  const upstreams = cfg.mirror.upstreams;
  const firstUser = Object.keys(cfg.users).sort()[0];
  const dcr = hostOf(o.privateUrl);
  const mir = hostOf(o.mirrorUrl);

  const containerdHosts: Record<string, string> = {};
  for (const u of upstreams) {
    const lines = [
      `# /etc/containerd/certs.d/${u.host}/hosts.toml: pull ${u.host} images through the mirror ${mir}`,
      `# (containerd sends ?ns=${u.host}, which tells the mirror which upstream to use); falls back to ${u.host} itself.`,
      `server = ${JSON.stringify(u.url)}`,
      '',
      `[host.${JSON.stringify(o.mirrorUrl)}]`,
      '  capabilities = ["pull", "resolve"]',
    ];
    if (cfg.mirror.requireAuth) {
      lines.push(
        '  # the mirror requires a login: base64 of "user:password"',
        `  [host.${JSON.stringify(o.mirrorUrl)}.header]`,
        `    Authorization = "Basic <base64 of ${firstUser}:PASSWORD>"`,
      );
    }
    containerdHosts[u.host] = `${lines.join('\n')}\n`;
  }

  const k3s: Record<string, unknown> = {
    mirrors: Object.fromEntries(upstreams.map((u) => [u.host, { endpoint: [o.mirrorUrl] }])),
    configs: {
      [dcr]: { auth: { username: firstUser, password: '<password>' } },
      ...(cfg.mirror.requireAuth ? { [mir]: { auth: { username: firstUser, password: '<password>' } } } : {}),
    },
  };
  const k3sRegistriesYaml = `# /etc/rancher/k3s/registries.yaml: pull through ${mir}; log in to ${dcr} for private images.\n${stringify(k3s)}`;

  const hub = upstreams.some((u) => u.host === 'docker.io');
  const dockerDaemonJson = hub ? `${JSON.stringify({ 'registry-mirrors': [o.mirrorUrl] }, null, 2)}\n` : undefined;

  const usage = [
    `# push to the private registry`,
    `docker login ${dcr} -u ${firstUser}`,
    `docker tag app:1.0 ${dcr}/app:1.0 && docker push ${dcr}/app:1.0`,
    `# pull through the mirror`,
    ...(hub ? [`docker pull ${mir}/library/alpine:3.20`] : []),
    ...upstreams.filter((u) => u.host !== 'docker.io').map((u) => `docker pull ${mir}/${u.host}/<org>/<image>:<tag>`),
    '',
  ].join('\n');

  return { dockerDaemonJson, containerdHosts, k3sRegistriesYaml, usage };
}
