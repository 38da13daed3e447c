// The stack config's robot accounts on the VPS: one remote command per robot,
// from render/robots.ts (which says why the server's CLI makes them). The
// command's stdout is the robot's secret: a secret output, never logged.
// deleteBeforeReplace: a robot made again (new scopes, ttl or generation) is
// revoked first, so no two secrets of one robot are ever valid together.
import * as command from '@pulumi/command';
import * as pulumi from '@pulumi/pulumi';
import type { RobotCommand } from '../render/robots.ts';

export interface RobotAccountsArgs {
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  commands: RobotCommand[];
  /** dcr's containers (the commands run in the first). */
  after: pulumi.Input<pulumi.Resource>[];
}

export class RobotAccounts extends pulumi.ComponentResource {
  readonly commands: Record<string, command.remote.Command> = {};
  /** robot name → its secret (log in as robot$<name>). */
  readonly secrets: pulumi.Output<Record<string, string>>;

  constructor(name: string, args: RobotAccountsArgs, opts?: pulumi.ComponentResourceOptions) {
    super('registry-stack:index:RobotAccounts', name, {}, opts);
    for (const c of args.commands) {
      this.commands[c.robot] = new command.remote.Command(
        `${name}-${c.robot}`,
        { connection: args.connection, create: c.create, stdin: c.stdin, delete: c.delete, triggers: c.triggers, logging: 'stderr' },
        { parent: this, dependsOn: args.after, deleteBeforeReplace: true, additionalSecretOutputs: ['stdout'] },
      );
    }
    const entries = Object.entries(this.commands).map(([robot, cmd]) => cmd.stdout.apply((out) => [robot, (out ?? '').trim()] as const));
    this.secrets = pulumi.secret(pulumi.all(entries).apply((pairs) => Object.fromEntries(pairs)));
    this.registerOutputs({ secrets: this.secrets });
  }
}
