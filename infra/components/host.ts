// Host setup over SSH: directories, sysctl, Docker daemon log limits,
// firewall, the ops scripts, their wrapper, settings and crontab. Each step is
// a remote command whose script arrives on stdin and installs its files only
// when they changed, so re-running it is harmless and an unchanged input
// means no update at all.
import * as command from '@pulumi/command';
import * as pulumi from '@pulumi/pulumi';
import { HOST_PATHS } from '../render/layout.ts';
import { renderInstallScript, renderPrepareScript } from '../render/host.ts';

export interface HostFile {
  content: pulumi.Input<string>;
  mode: string;
}

export interface HostSetupArgs {
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  sshUser: string;
  firewallScript: HostFile;
  sysctl: HostFile;
  daemonJson: HostFile;
  opsWrapper: HostFile;
  opsEnv: HostFile;
  crontab: HostFile;
  logrotate: HostFile;
  /** The htpasswd (secret), readable by the containers' user through a read-only bind mount of its directory. */
  htpasswd: HostFile;
  /** Numeric group of the containers' user. */
  containerGid: number;
  /** Local directory of the ops scripts (copied to /opt/registry-stack/scripts), if there are any yet. */
  scriptsDir?: string;
}

export class HostSetup extends pulumi.ComponentResource {
  /** Every step; containers depend on these. */
  readonly steps: pulumi.Resource[] = [];
  readonly commands: Record<string, command.remote.Command> = {};

  constructor(name: string, args: HostSetupArgs, opts?: pulumi.ComponentResourceOptions) {
    super('registry-stack:index:HostSetup', name, {}, opts);
    const shell = args.sshUser === 'root' ? 'sh -s' : 'sudo -n sh -s';
    const run = (step: string, script: pulumi.Input<string>, deps: pulumi.Resource[], del?: string) => {
      const cmd = new command.remote.Command(
        `${name}-${step}`,
        {
          connection: args.connection,
          create: shell,
          stdin: script,
          ...(del ? { delete: args.sshUser === 'root' ? del : `sudo -n sh -c '${del}'` } : {}),
          logging: 'stderr',
        },
        { parent: this, dependsOn: deps },
      );
      this.commands[step] = cmd;
      this.steps.push(cmd);
      return cmd;
    };
    const install = (files: Array<{ path: string; file: HostFile; onChange?: string; backup?: boolean; group?: number }>) =>
      pulumi
        .all(files.map((f) => f.file.content))
        .apply((contents) =>
          renderInstallScript(
            files.map((f, i) => ({ path: f.path, content: contents[i], mode: f.file.mode, onChange: f.onChange, backup: f.backup, group: f.group })),
          ),
        );

    const prepare = run(
      'prepare',
      renderPrepareScript({
        sshUser: args.sshUser,
        dirs: [HOST_PATHS.bin, HOST_PATHS.scripts, HOST_PATHS.logDir, HOST_PATHS.authDir],
        scriptsDir: HOST_PATHS.scripts,
      }),
      [],
    );
    run(
      'sysctl',
      install([{ path: HOST_PATHS.sysctlFile, file: args.sysctl, onChange: 'modprobe tcp_bbr 2>/dev/null || true; sysctl --system >/dev/null' }]),
      [prepare],
      `rm -f ${HOST_PATHS.sysctlFile}`,
    );
    run(
      'docker-daemon',
      // live-restore (in the file) keeps running containers up across this restart.
      install([{ path: HOST_PATHS.daemonJson, file: args.daemonJson, onChange: 'systemctl restart docker', backup: true }]),
      [prepare],
    );
    // The registries re-read the htpasswd when it changes: a new password needs no restart.
    run('auth', install([{ path: HOST_PATHS.htpasswd, file: args.htpasswd, group: args.containerGid }]), [prepare]);
    run('firewall', install([{ path: HOST_PATHS.firewallScript, file: args.firewallScript, onChange: `sh ${HOST_PATHS.firewallScript}` }]), [prepare]);

    const opsDeps: pulumi.Resource[] = [prepare];
    if (args.scriptsDir) {
      const copy = new command.remote.CopyToRemote(
        `${name}-scripts`,
        { connection: args.connection, source: new pulumi.asset.FileArchive(args.scriptsDir), remotePath: HOST_PATHS.base },
        { parent: this, dependsOn: [prepare] },
      );
      this.steps.push(copy);
      opsDeps.push(copy);
    }
    run(
      'ops',
      install([
        { path: HOST_PATHS.opsWrapper, file: args.opsWrapper },
        { path: HOST_PATHS.opsEnv, file: args.opsEnv },
        { path: HOST_PATHS.logrotateFile, file: args.logrotate },
        { path: HOST_PATHS.cronFile, file: args.crontab },
      ]),
      opsDeps,
      `rm -f ${HOST_PATHS.cronFile} ${HOST_PATHS.logrotateFile}`,
    );
    this.registerOutputs({});
  }
}
