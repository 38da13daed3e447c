// The VPS's own setup, as shell scripts: the files (firewall script, sysctl
// file, Docker's daemon.json, the ops jobs' files) and the steps that install
// them. Every script is POSIX sh, passes shellcheck (see test/infra), and is
// sent on the stdin of `sh -s` over SSH.
//
// renderHostSteps() at the bottom is the one description of those steps:
// their names, order and scripts. The Pulumi program runs each as a
// remote.Command (infra/components/host.ts); the local twin runs the same
// scripts over SSH in the same order.
//
// Installing a file and applying it (reloading sysctl, restarting Docker,
// enabling the firewall) are two things that can fail separately. An apply
// counts only once it has succeeded: a stamp, a copy of the content last
// applied, is written after it. A run that finds the file already in place
// but the stamp different (the last apply failed: apt lock held, Docker did
// not come back) applies again instead of reporting success.
import { LEGACY_SERVER_IMAGE_REPOS } from '../image.ts';
import { HOST_PATHS } from './layout.ts';

// ---------------------------------------------------------------------------
// The files

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

/**
 * Host-wide kernel settings. A network namespace (each container has its
 * own) starts with the defaults for most net.* keys, so the ones meant for
 * the clients' connections, which end in Caddy's and the registries'
 * namespaces, are set on those containers instead: see containerSysctls().
 * The net.* keys kept here are the ones a new namespace takes from the host
 * when it is created (the congestion control, and the socket buffer caps,
 * which are global on older kernels), or that only exist on the host.
 */
const HOST_SYSCTLS: Array<[key: string, value: string, comment?: string]> = [
  ['net.core.default_qdisc', 'fq', 'BBR wants the fq qdisc'],
  ['net.ipv4.tcp_congestion_control', 'bbr', "a new network namespace (a container's) starts with the host's congestion control"],
  ['net.core.rmem_max', '67108864', 'socket buffers up to 64 MiB for large blob transfers'],
  ['net.core.wmem_max', '67108864'],
  ['net.core.netdev_max_backlog', '16384'],
  ['fs.file-max', '2097152', 'file handles: many concurrent blob streams'],
  ['fs.nr_open', '2097152'],
  ['fs.inotify.max_user_watches', '524288'],
  ['vm.swappiness', '10'],
];

export function renderSysctl(): string {
  const lines = ['# Rendered by registry-stack (infra/render/host.ts). Applied key by key by the host setup.'];
  for (const [key, value, comment] of HOST_SYSCTLS) {
    if (comment) lines.push(`# ${comment}`);
    lines.push(`${key} = ${value}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The settings for client connections, per network namespace (Linux ≥ 4.15),
 * for `--sysctl` on the Caddy and registry containers (Docker accepts net.*
 * keys on a container with its own network). tcp_congestion_control is not
 * among them: the containers take it from the host (see renderSysctl), and a
 * container may only choose an algorithm the host allows, so asking for it
 * there could keep the container from starting where the host lacks BBR.
 */
export function containerSysctls(): Record<string, string> {
  return {
    'net.core.somaxconn': '8192',
    'net.ipv4.tcp_max_syn_backlog': '8192',
    'net.ipv4.tcp_rmem': '4096 131072 67108864',
    'net.ipv4.tcp_wmem': '4096 65536 67108864',
    'net.ipv4.tcp_mtu_probing': '1',
    'net.ipv4.tcp_slow_start_after_idle': '0',
    'net.ipv4.ip_local_port_range': '10240 65535',
  };
}

export interface DaemonJsonOptions {
  logMaxSize: string;
  logMaxFile: number;
}

/**
 * Our keys of Docker's daemon.json: bounded json-file logs; live-restore keeps
 * containers up across daemon restarts. The host setup merges them into the
 * host's own file (renderDaemonJsonScript).
 */
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

// ---------------------------------------------------------------------------
// Script building blocks

/** A shell-safe single-quoted word. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const EOF_MARK = 'REGISTRY_STACK_EOF';

/** A here-document holding `content` verbatim. */
function heredoc(content: string, what: string, mark = EOF_MARK): string {
  if (content.split('\n').includes(mark)) throw new Error(`${what} contains the heredoc marker ${mark}`);
  return `<<'${mark}'\n${content.endsWith('\n') ? content : `${content}\n`}${mark}`;
}

export interface ScriptOptions {
  /**
   * A directory standing in for / : every path the script touches is under
   * it. Tests run the scripts in a temporary root; a deploy uses '' (the real /).
   */
  root?: string;
}

/** Where the stamps live (see the top of this file). */
const APPLIED_DIR = '/var/lib/registry-stack/applied';

function stampPath(root: string, path: string): string {
  return `${root}${APPLIED_DIR}/${path.slice(1).replace(/\//g, '__')}`;
}

/** Shell functions every script with an apply step uses. */
function stampFunctions(root: string): string {
  return `# mark_applied FILE STAMP: FILE's content has been applied; only called once the apply succeeded.
mark_applied() {
  mkdir -p ${shq(root + APPLIED_DIR)}
  cp "$1" "$2.tmp"
  mv -f "$2.tmp" "$2"
}
`;
}

/**
 * The apply step of a file, run when the file changed or its stamp says the
 * last apply did not finish. `$file` holds the installed file's path. Its
 * stdin is /dev/null: the script itself arrives on this shell's stdin, and a
 * command reading it would eat the rest of the script.
 */
function applyBlock(path: string, onChange: string, root: string): string[] {
  return [
    `stamp=${shq(stampPath(root, path))}`,
    'if [ "$changed" = yes ] || ! cmp -s "$file" "$stamp"; then',
    // Gone until this apply succeeds: a failure now leaves no stamp, so the next run applies again.
    '  rm -f "$stamp"',
    `  { ${onChange}; } </dev/null`,
    '  mark_applied "$file" "$stamp"',
    `  echo ${shq(`registry-stack: applied ${path}`)} >&2`,
    'fi',
  ];
}

export interface InstallFileOptions {
  path: string;
  content: string;
  mode: string;
  /**
   * Shell run after the file changed, and again on a later run until it
   * succeeds; `$file` is the file's path. Its stamp is a copy of the file
   * (under /var/lib/registry-stack/applied): not for a file holding a secret.
   */
  onChange?: string;
  /** Keep the host's original file (once) as <path>.registry-stack.orig before replacing it. */
  backup?: boolean;
  /** Group owner (numeric), e.g. the containers' user for a file they read. */
  group?: number;
}

function checkMode(mode: string): void {
  if (!/^[0-7]{3,4}$/.test(mode)) throw new Error(`bad mode ${mode}`);
}

function backupLine(target: string): string {
  const orig = shq(`${target}.registry-stack.orig`);
  return `  if [ -e ${shq(target)} ] && [ ! -e ${orig} ]; then cp -p ${shq(target)} ${orig}; fi`;
}

/** Script header: strict mode, and temp files (shell variables `temps`) removed however the script ends. */
function header(what: string, temps: string[], extra: string[] = []): string[] {
  return [
    '#!/bin/sh',
    `# Rendered by registry-stack (infra/render/host.ts)${what}.`,
    'set -eu',
    'umask 022',
    ...temps.map((t) => `${t}=`),
    `trap 'rm -f ${temps.map((t) => `"$${t}"`).join(' ')}' EXIT`,
    ...extra,
    '',
  ];
}

/**
 * A POSIX sh script that installs each file atomically (with its mode and
 * group) when its content differs, and runs its `onChange` until that
 * succeeds once for the installed content.
 */
export function renderInstallScript(files: InstallFileOptions[], o: ScriptOptions & { prelude?: string } = {}): string {
  const root = o.root ?? '';
  const applies = files.some((f) => f.onChange);
  const parts = header('', ['tmp'], [...(applies ? [stampFunctions(root)] : []), ...(o.prelude ? [o.prelude] : [])]);
  for (const f of files) {
    checkMode(f.mode);
    const target = root + f.path;
    const chgrp = (what: string) => (f.group !== undefined ? [`chgrp ${f.group} ${what}`] : []);
    parts.push(
      `# ${f.path}`,
      `file=${shq(target)}`,
      'mkdir -p "$(dirname "$file")"',
      'tmp=$(mktemp "$(dirname "$file")/.registry-stack.XXXXXX")',
      `cat > "$tmp" ${heredoc(f.content, `content of ${f.path}`)}`,
      `chmod ${f.mode} "$tmp"`,
      ...chgrp('"$tmp"'),
      ...(f.onChange ? ['changed=no'] : []),
      `if cmp -s "$tmp" ${shq(target)}; then`,
      '  rm -f "$tmp"',
      `  chmod ${f.mode} ${shq(target)}`,
      ...chgrp(shq(target)).map((l) => `  ${l}`),
      'else',
      ...(f.backup ? [backupLine(target)] : []),
      `  mv -f "$tmp" ${shq(target)}`,
      `  echo ${shq(`registry-stack: installed ${f.path}`)} >&2`,
      ...(f.onChange ? ['  changed=yes'] : []),
      'fi',
      ...(f.onChange ? applyBlock(f.path, f.onChange, root) : []),
      '',
    );
  }
  return parts.join('\n');
}

// ---------------------------------------------------------------------------
// The scripts of the steps that are more than installing files

/**
 * Applies a sysctl file key by key. A container VPS (LXC, OpenVZ) refuses the
 * host-wide keys, and a kernel without BBR refuses it: that must not stop the
 * deploy, so each refused key is a warning naming it. A line that is not
 * `key = value` is an error.
 */
const APPLY_SYSCTL = `# apply_sysctl FILE: sets each key of FILE; warns about the keys the kernel refuses.
apply_sysctl() {
  if ! command -v sysctl >/dev/null 2>&1; then
    echo "registry-stack: sysctl is not installed (package procps)" >&2
    return 1
  fi
  refused=
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      '' | '#'* | ';'*) continue ;;
      *=*) ;;
      *)
        echo "registry-stack: $1: not a 'key = value' line: $line" >&2
        return 1
        ;;
    esac
    key=$(printf '%s\\n' "\${line%%=*}" | tr -d ' \\t')
    value=$(printf '%s\\n' "\${line#*=}" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    if [ -z "$key" ] || [ -z "$value" ]; then
      echo "registry-stack: $1: not a 'key = value' line: $line" >&2
      return 1
    fi
    if ! err=$(sysctl -q -w "$key=$value" 2>&1); then
      echo "registry-stack: warning: the kernel refused $key = $value: $err" >&2
      refused="$refused $key"
    fi
  done < "$1"
  if [ -n "$refused" ]; then
    echo "registry-stack: warning: sysctl keys not applied (a container VPS refuses host-wide keys):$refused" >&2
  fi
}
`;

/** The sysctl step: install the file, load BBR (the containers cannot), apply the file key by key. */
export function renderSysctlScript(content: string, o: ScriptOptions = {}): string {
  return renderInstallScript(
    [{ path: HOST_PATHS.sysctlFile, content, mode: '0644', onChange: 'modprobe tcp_bbr 2>/dev/null || true; apply_sysctl "$file"' }],
    { ...o, prelude: APPLY_SYSCTL },
  );
}

/** Shallow merge of two JSON files: the second's keys replace the first's (log-opts only make sense with their log-driver). */
const MERGE_JSON_PY = `import json, sys
path, ours_path = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        current = json.load(f)
except ValueError as e:
    sys.exit("registry-stack: %s is not valid JSON (%s): fix it, or move it away to start from ours" % (path, e))
if not isinstance(current, dict):
    sys.exit("registry-stack: %s is not a JSON object" % path)
with open(ours_path) as f:
    current.update(json.load(f))
sys.stdout.write(json.dumps(current, indent=2) + "\\n")
`;

/**
 * The docker-daemon step: merges our keys (`content`, a JSON object) into the
 * host's /etc/docker/daemon.json, which may hold settings of its own
 * (registry-mirrors, data-root, a proxy). The host's file is kept once as
 * daemon.json.registry-stack.orig. Docker restarts only when the merged file
 * differs from the one last applied; live-restore keeps the containers up.
 */
export function renderDaemonJsonScript(content: string, o: ScriptOptions = {}): string {
  const root = o.root ?? '';
  const target = root + HOST_PATHS.daemonJson;
  const keys = Object.keys(JSON.parse(content) as Record<string, unknown>).join(', ');
  return [
    ...header(": our keys merged into Docker's daemon.json", ['tmp', 'ours'], [stampFunctions(root)]),
    `file=${shq(target)}`,
    'mkdir -p "$(dirname "$file")"',
    'ours=$(mktemp "$(dirname "$file")/.registry-stack.XXXXXX")',
    'tmp=$(mktemp "$(dirname "$file")/.registry-stack.XXXXXX")',
    `cat > "$ours" ${heredoc(content, 'daemon.json')}`,
    '',
    'if [ ! -s "$file" ] || cmp -s "$file" "$ours"; then',
    '  cp "$ours" "$tmp"',
    'elif command -v python3 >/dev/null 2>&1; then',
    `  python3 - "$file" "$ours" > "$tmp" ${heredoc(MERGE_JSON_PY, 'the merge script', 'REGISTRY_STACK_PY')}`,
    `elif cmp -s "$file" ${shq(stampPath(root, HOST_PATHS.daemonJson))}; then`,
    '  # The file is the one we wrote last time: nothing of the host\'s own to keep.',
    '  cp "$ours" "$tmp"',
    'else',
    `  echo "registry-stack: $file has settings of its own and python3, needed to merge ours (${keys}) into them, is not installed: install python3 or merge them by hand" >&2`,
    '  exit 1',
    'fi',
    'chmod 0644 "$tmp"',
    '',
    '# A file Docker refuses would keep it from starting again: check before installing.',
    'if command -v python3 >/dev/null 2>&1 && ! python3 -c \'import json, sys; json.load(open(sys.argv[1]))\' "$tmp"; then',
    '  echo "registry-stack: the merged $file is not valid JSON" >&2',
    '  exit 1',
    'fi',
    'if command -v dockerd >/dev/null 2>&1 && dockerd --help 2>/dev/null | grep -q -e --validate; then',
    '  dockerd --validate --config-file "$tmp" >/dev/null',
    'fi',
    '',
    'changed=no',
    'if cmp -s "$tmp" "$file"; then',
    '  rm -f "$tmp"',
    'else',
    backupLine(target),
    '  mv -f "$tmp" "$file"',
    `  echo ${shq(`registry-stack: installed ${HOST_PATHS.daemonJson}`)} >&2`,
    '  changed=yes',
    'fi',
    ...applyBlock(HOST_PATHS.daemonJson, 'systemctl restart docker', root),
    '',
  ].join('\n');
}

/**
 * First step on the host: check Docker is there, make the directories, and
 * remove what older versions left that would now mislead (the ops scripts
 * used to be copied to the host; the jobs now run the image's own copy).
 */
export function renderPrepareScript(o: { dirs: string[]; obsolete?: string[] } & ScriptOptions): string {
  const root = o.root ?? '';
  return [
    '#!/bin/sh',
    '# Rendered by registry-stack (infra/render/host.ts): prepares the host.',
    'set -eu',
    '',
    'if ! command -v docker >/dev/null 2>&1; then',
    '  echo "registry-stack: Docker is not installed on this host" >&2',
    '  exit 1',
    'fi',
    `mkdir -p ${o.dirs.map((d) => shq(root + d)).join(' ')}`,
    ...(o.obsolete?.length ? [`rm -rf ${o.obsolete.map((d) => shq(root + d)).join(' ')}`] : []),
    '',
  ].join('\n');
}

/** The repository part of an image reference (without its tag). */
function imageRepo(ref: string): string {
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/') ? ref.slice(0, colon) : ref;
}

/**
 * Removes the server images earlier deploys left (each build has its own
 * content tag), once the new one runs: every tag of `repos` but `keep`, unless
 * a container (running or stopped) still uses it. An image that cannot be
 * removed is a warning: the deploy itself has succeeded.
 */
export function renderImageCleanupScript(o: { keep: string; repos: string[] }): string {
  for (const ref of [o.keep, ...o.repos]) {
    if (!/^[a-zA-Z0-9._/:@-]+$/.test(ref)) throw new Error(`bad image reference ${ref}`);
  }
  return `#!/bin/sh
# Rendered by registry-stack (infra/render/host.ts): removes the server images of earlier deploys.
set -eu

keep=${shq(o.keep)}
for repo in ${o.repos.map(shq).join(' ')}; do
  refs=$(docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" </dev/null)
  # One reference (name:tag) per line, none with spaces.
  for ref in $refs; do
    case $ref in
      "$keep" | *'<none>'*) continue ;;
    esac
    if [ -n "$(docker ps -a -q --filter "ancestor=$ref" </dev/null)" ]; then
      echo "registry-stack: keeping $ref: a container uses it"
    elif docker image rm "$ref" >/dev/null </dev/null; then
      echo "registry-stack: removed $ref"
    else
      echo "registry-stack: warning: could not remove $ref" >&2
    fi
  done
done
`;
}

// ---------------------------------------------------------------------------
// The steps

export interface HostFileText {
  content: string;
  /** Octal mode on the host. */
  mode: string;
}

/** Everything the host steps install, as plain strings. */
export interface HostFiles {
  /** The SSH user: root runs the scripts with `sh`, anyone else through `sudo -n`. */
  sshUser: string;
  /** Numeric group of the containers' user (the htpasswd is readable by it). */
  containerGid: number;
  /** The server image the containers now run: older ones are removed after the deploy. */
  serverImage: string;
  firewallScript: HostFileText;
  sysctl: HostFileText;
  /** Our keys of daemon.json (merged into the host's). */
  daemonJson: HostFileText;
  htpasswd: HostFileText;
  /** dcr's access policy, when the stack has one (registry-stack:access). */
  accessPolicy?: HostFileText;
  opsWrapper: HostFileText;
  opsEnv: HostFileText;
  crontab: HostFileText;
  logrotate: HostFileText;
}

/** The name of the files in renderStack()'s output (infra/render/index.ts) that the host steps install. */
export const HOST_FILE_NAMES = {
  firewallScript: 'host/firewall.sh',
  sysctl: 'host/99-registry-stack.conf',
  daemonJson: 'host/daemon.json',
  htpasswd: 'htpasswd',
  accessPolicy: 'auth/access.yaml',
  opsWrapper: 'host/registry-stack-ops',
  opsEnv: 'host/ops.env',
  crontab: 'host/registry-stack.cron',
  logrotate: 'host/logrotate',
} as const;

export type HostFileKey = keyof typeof HOST_FILE_NAMES;

/** The parts of HostFiles a stack may not have: a step that reads one gets undefined, not an error. */
export const OPTIONAL_HOST_FILES: ReadonlySet<keyof HostFiles> = new Set<keyof HostFiles>(['accessPolicy']);

/** HostFiles from renderStack()'s files. */
export function hostFilesFrom(
  files: Record<string, HostFileText>,
  o: { sshUser: string; containerGid: number; serverImage: string },
): HostFiles {
  const pick = (k: HostFileKey): HostFileText => {
    const f = files[HOST_FILE_NAMES[k]];
    if (!f) throw new Error(`no rendered file ${HOST_FILE_NAMES[k]}`);
    return { content: f.content, mode: f.mode };
  };
  const policy = files[HOST_FILE_NAMES.accessPolicy];
  return {
    ...(policy ? { accessPolicy: { content: policy.content, mode: policy.mode } } : {}),
    ...o,
    firewallScript: pick('firewallScript'),
    sysctl: pick('sysctl'),
    daemonJson: pick('daemonJson'),
    htpasswd: pick('htpasswd'),
    opsWrapper: pick('opsWrapper'),
    opsEnv: pick('opsEnv'),
    crontab: pick('crontab'),
    logrotate: pick('logrotate'),
  };
}

/**
 * In a step's `after`: the server image built and every container created.
 * The ops files name the image, and the old images can only go once no
 * container uses them.
 */
export const CONTAINERS = 'containers';

export type HostStepName = 'prepare' | 'sysctl' | 'docker-daemon' | 'auth' | 'firewall' | 'ops' | 'image-cleanup';

export interface HostStep {
  name: HostStepName;
  /** after-containers: the step runs after CONTAINERS (directly or through another step). */
  phase: 'before-containers' | 'after-containers';
  /** The command run over SSH; the script arrives on its stdin. */
  create: 'sh -s' | 'sudo -n sh -s';
  stdin: string;
  /** Run when the step is removed from the stack. */
  delete?: string;
  /** Steps (or CONTAINERS) that must have finished first. */
  after: Array<HostStepName | typeof CONTAINERS>;
  /** The parts of HostFiles the script is made from (and nothing else). */
  reads: Array<keyof HostFiles>;
}

type Read = <K extends keyof HostFiles>(key: K) => HostFiles[K];

interface StepSpec {
  name: HostStepName;
  after: HostStep['after'];
  reads: HostStep['reads'];
  /** Shell for the step's removal (before sudo), paths under `root`. */
  remove?: (root: string) => string;
  script: (read: Read, root: string) => string;
}

const install = (path: string, f: HostFileText, extra: Partial<InstallFileOptions> = {}): InstallFileOptions => ({ path, content: f.content, mode: f.mode, ...extra });

/** The steps, in the order they run (each after the ones it names). */
const STEPS: StepSpec[] = [
  {
    name: 'prepare',
    after: [],
    reads: [],
    script: (_read, root) =>
      renderPrepareScript({ root, dirs: [HOST_PATHS.bin, HOST_PATHS.logDir, HOST_PATHS.authDir], obsolete: [HOST_PATHS.scripts] }),
  },
  {
    name: 'sysctl',
    after: ['prepare'],
    reads: ['sysctl'],
    remove: (root) => `rm -f ${shq(root + HOST_PATHS.sysctlFile)} ${shq(stampPath(root, HOST_PATHS.sysctlFile))}`,
    script: (read, root) => renderSysctlScript(read('sysctl').content, { root }),
  },
  {
    name: 'docker-daemon',
    after: ['prepare'],
    reads: ['daemonJson'],
    script: (read, root) => renderDaemonJsonScript(read('daemonJson').content, { root }),
  },
  {
    // The registries re-read the htpasswd and the access policy when they change: no restart.
    // A policy taken out of the stack goes too (the server keeps the last good one until its
    // container, now without auth.access, replaces it).
    name: 'auth',
    after: ['prepare'],
    reads: ['htpasswd', 'containerGid', 'accessPolicy'],
    script: (read, root) => {
      const group = read('containerGid');
      const policy = read('accessPolicy');
      const stale = shq(root + HOST_PATHS.accessPolicy);
      return renderInstallScript(
        [install(HOST_PATHS.htpasswd, read('htpasswd'), { group }), ...(policy ? [install(HOST_PATHS.accessPolicy, policy, { group })] : [])],
        {
          root,
          ...(policy
            ? {}
            : { prelude: `if [ -e ${stale} ]; then
  rm -f ${stale}
  echo ${shq(`registry-stack: removed ${HOST_PATHS.accessPolicy}`)} >&2
fi
` }),
        },
      );
    },
  },
  {
    // After the Docker restart, so that the last thing to touch the firewall is ufw.
    name: 'firewall',
    after: ['prepare', 'docker-daemon'],
    reads: ['firewallScript'],
    script: (read, root) => renderInstallScript([install(HOST_PATHS.firewallScript, read('firewallScript'), { onChange: 'sh "$file"' })], { root }),
  },
  {
    name: 'ops',
    after: ['prepare', CONTAINERS],
    reads: ['opsWrapper', 'opsEnv', 'logrotate', 'crontab'],
    remove: (root) => `rm -f ${shq(root + HOST_PATHS.cronFile)} ${shq(root + HOST_PATHS.logrotateFile)}`,
    script: (read, root) =>
      renderInstallScript(
        [
          install(HOST_PATHS.opsWrapper, read('opsWrapper')),
          install(HOST_PATHS.opsEnv, read('opsEnv')),
          install(HOST_PATHS.logrotateFile, read('logrotate')),
          // Last: the jobs it starts need everything above.
          install(HOST_PATHS.cronFile, read('crontab')),
        ],
        { root },
      ),
  },
  {
    // After ops: from then on the cron jobs start the new image, not an old one.
    name: 'image-cleanup',
    after: ['ops', CONTAINERS],
    reads: ['serverImage'],
    script: (read) => {
      const keep = read('serverImage');
      return renderImageCleanupScript({ keep, repos: [...new Set([imageRepo(keep), ...LEGACY_SERVER_IMAGE_REPOS])] });
    },
  },
];

function createCommand(sshUser: string): HostStep['create'] {
  return sshUser === 'root' ? 'sh -s' : 'sudo -n sh -s';
}

function deleteCommand(sshUser: string, shell: string): string {
  return sshUser === 'root' ? shell : `sudo -n sh -c ${shq(shell)}`;
}

/** The steps without their scripts: what is known before any file content (names, order, commands). */
export function hostStepPlan(sshUser: string, o: ScriptOptions = {}): Array<Omit<HostStep, 'stdin'>> {
  const root = o.root ?? '';
  const late = new Set<string>([CONTAINERS]);
  for (const s of STEPS) if (s.after.some((a) => late.has(a))) late.add(s.name);
  return STEPS.map((s) => ({
    name: s.name,
    phase: late.has(s.name) ? 'after-containers' : 'before-containers',
    create: createCommand(sshUser),
    ...(s.remove ? { delete: deleteCommand(sshUser, s.remove(root)) } : {}),
    after: [...s.after],
    reads: [...s.reads],
  }));
}

/**
 * One step's script, from the parts of HostFiles it reads (the others may be
 * left out: the Pulumi program resolves only those, so a step holding no
 * secret keeps a plain stdin that a preview can show).
 */
export function renderHostStep(name: HostStepName, files: Partial<HostFiles>, o: ScriptOptions = {}): string {
  const spec = STEPS.find((s) => s.name === name);
  if (!spec) throw new Error(`no host step ${name}`);
  const read: Read = (key) => {
    if (!spec.reads.includes(key)) throw new Error(`host step ${name} reads ${key}, which it does not declare`);
    const value = files[key];
    if (value === undefined && !OPTIONAL_HOST_FILES.has(key)) throw new Error(`host step ${name}: ${key} is missing`);
    return value as HostFiles[typeof key];
  };
  return spec.script(read, o.root ?? '');
}

/** Every host step, in order, with its script. */
export function renderHostSteps(files: HostFiles, o: ScriptOptions = {}): HostStep[] {
  return hostStepPlan(files.sshUser, o).map((s) => ({ ...s, stdin: renderHostStep(s.name, files, o) }));
}
