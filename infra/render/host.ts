// Host files for the VPS: firewall script, sysctl file, docker daemon.json,
// and the small shell scripts that install each file idempotently. Every
// script here is POSIX sh and passes shellcheck (see test/infra).

export interface FirewallOptions {
  sshPort: number;
}

/** ufw: deny incoming except SSH, HTTP (ACME and redirects) and HTTPS (TCP, and UDP for HTTP/3). */
export function renderFirewallScript(o: FirewallOptions): string {
  return `#!/bin/sh
# Rendered by registry-stack (infra/render/host.ts): the VPS firewall.
# Idempotent: ufw skips rules it already has. Docker publishes only Caddy's
# ports (80, 443); the registries' ports stay on the internal network.
set -eu

if ! command -v ufw >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q ufw
fi

ufw default deny incoming
ufw default allow outgoing
ufw allow ${o.sshPort}/tcp comment 'ssh'
ufw allow 80/tcp comment 'http: ACME challenges and redirects'
ufw allow 443/tcp comment 'https'
ufw allow 443/udp comment 'https: HTTP/3'
ufw --force enable
ufw status verbose
`;
}

/** Kernel settings: larger network buffers, BBR congestion control, more file handles. */
export function renderSysctl(): string {
  const settings: Array<[string, string, string?]> = [
    ['net.core.default_qdisc', 'fq', 'BBR wants the fq qdisc'],
    ['net.ipv4.tcp_congestion_control', 'bbr'],
    ['net.core.rmem_max', '67108864', 'socket buffers up to 64 MiB for large blob transfers'],
    ['net.core.wmem_max', '67108864'],
    ['net.ipv4.tcp_rmem', '4096 131072 67108864'],
    ['net.ipv4.tcp_wmem', '4096 65536 67108864'],
    ['net.core.netdev_max_backlog', '16384'],
    ['net.core.somaxconn', '8192'],
    ['net.ipv4.tcp_max_syn_backlog', '8192'],
    ['net.ipv4.tcp_mtu_probing', '1'],
    ['net.ipv4.tcp_slow_start_after_idle', '0'],
    ['net.ipv4.ip_local_port_range', '10240 65535'],
    ['fs.file-max', '2097152', 'file handles: many concurrent blob streams'],
    ['fs.nr_open', '2097152'],
    ['fs.inotify.max_user_watches', '524288'],
    ['vm.swappiness', '10'],
  ];
  const lines = ['# Rendered by registry-stack (infra/render/host.ts). Applied with `sysctl --system`.'];
  for (const [key, value, comment] of settings) {
    if (comment) lines.push(`# ${comment}`);
    lines.push(`${key} = ${value}`);
  }
  return `${lines.join('\n')}\n`;
}

export interface DaemonJsonOptions {
  logMaxSize: string;
  logMaxFile: number;
}

/** Docker daemon defaults: bounded json-file logs; live-restore keeps containers up across daemon restarts. */
export function renderDaemonJson(o: DaemonJsonOptions): string {
  return `${JSON.stringify(
    {
      'log-driver': 'json-file',
      'log-opts': { 'max-size': o.logMaxSize, 'max-file': String(o.logMaxFile) },
      'live-restore': true,
      'default-ulimits': { nofile: { Name: 'nofile', Soft: 65536, Hard: 65536 } },
    },
    null,
    2,
  )}\n`;
}

/** A shell-safe single-quoted word. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const EOF_MARK = 'REGISTRY_STACK_EOF';

export interface InstallFileOptions {
  path: string;
  content: string;
  mode: string;
  /** Shell run after the file changed (e.g. `sysctl --system`). */
  onChange?: string;
  /** Keep the host's original file (once) as <path>.registry-stack.orig before replacing it. */
  backup?: boolean;
  /** Group owner (numeric), e.g. the containers' user for a file they read. */
  group?: number;
}

/**
 * A POSIX sh script that installs `content` at `path` (atomically, with
 * `mode`) and runs `onChange` only when the content differed. Sent to the host
 * on stdin of `sh -s`.
 */
export function renderInstallScript(files: InstallFileOptions[], after?: string): string {
  const parts = ['#!/bin/sh', '# Rendered by registry-stack (infra/render/host.ts).', 'set -eu', 'umask 022', ''];
  for (const f of files) {
    if (f.content.split('\n').includes(EOF_MARK)) throw new Error(`content of ${f.path} contains the heredoc marker`);
    if (!/^[0-7]{3,4}$/.test(f.mode)) throw new Error(`bad mode ${f.mode}`);
    const content = f.content.endsWith('\n') ? f.content : `${f.content}\n`;
    parts.push(
      `# ${f.path}`,
      `dir=$(dirname ${shq(f.path)})`,
      'mkdir -p "$dir"',
      `tmp=$(mktemp "$dir/.registry-stack.XXXXXX")`,
      `cat > "$tmp" <<'${EOF_MARK}'`,
      content + EOF_MARK,
      `chmod ${f.mode} "$tmp"`,
      ...(f.group !== undefined ? [`chgrp ${f.group} "$tmp"`] : []),
      `if cmp -s "$tmp" ${shq(f.path)}; then`,
      '  rm -f "$tmp"',
      `  chmod ${f.mode} ${shq(f.path)}`,
      ...(f.group !== undefined ? [`  chgrp ${f.group} ${shq(f.path)}`] : []),
      'else',
      ...(f.backup
        ? [`  if [ -e ${shq(f.path)} ] && [ ! -e ${shq(`${f.path}.registry-stack.orig`)} ]; then cp -p ${shq(f.path)} ${shq(`${f.path}.registry-stack.orig`)}; fi`]
        : []),
      `  mv -f "$tmp" ${shq(f.path)}`,
      ...(f.onChange ? [`  ${f.onChange}`] : ['  :']),
      'fi',
      '',
    );
  }
  if (after) parts.push(after, '');
  return parts.join('\n');
}

/** First step on the host: check Docker is there, make the directories (the scripts dir writable by the SSH user). */
export function renderPrepareScript(o: { sshUser: string; dirs: string[]; scriptsDir: string }): string {
  return [
    '#!/bin/sh',
    '# Rendered by registry-stack (infra/render/host.ts): prepares the host.',
    'set -eu',
    '',
    'if ! command -v docker >/dev/null 2>&1; then',
    '  echo "registry-stack: Docker is not installed on this host" >&2',
    '  exit 1',
    'fi',
    `mkdir -p ${o.dirs.map(shq).join(' ')}`,
    `chown -R ${shq(o.sshUser)} ${shq(o.scriptsDir)}`,
    '',
  ].join('\n');
}
