// Host setup over SSH: each step of renderHostSteps() (infra/render/host.ts)
// becomes one remote command whose script arrives on stdin. The steps decide
// what runs and in what order; this file only maps them to resources.
//
// Two components, because the containers sit between them:
//   HostSetup  prepare, sysctl, docker-daemon, auth, firewall: the containers wait for these;
//   OpsSetup   ops, image-cleanup: they wait for the containers (the ops files name the
//              new image; old images go once no container uses them).
import * as command from '@pulumi/command';
import * as pulumi from '@pulumi/pulumi';
import { CONTAINERS, type HostFiles, type HostFileText, type HostStepName, hostStepPlan, OPTIONAL_HOST_FILES, renderHostStep } from '../render/host.ts';

export interface HostFile {
  content: pulumi.Input<string>;
  mode: string;
}

/** HostFiles with the file contents as Pulumi inputs (the secret ones arrive as Outputs). */
type HostInputs = { [K in keyof HostFiles]?: NonNullable<HostFiles[K]> extends HostFileText ? HostFile : HostFiles[K] };

interface StepsArgs {
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  sshUser: string;
  inputs: HostInputs;
  /** Resources already made for the step names this group depends on (other groups' steps, CONTAINERS). */
  known: Partial<Record<string, pulumi.Input<pulumi.Resource>[]>>;
  /** Old parent of the commands, when they moved from another component. */
  aliasParent?: pulumi.Resource;
}

/** The stdin of a step: its script, computed from only the inputs it reads. */
function stepScript(name: HostStepName, reads: Array<keyof HostFiles>, inputs: HostInputs): pulumi.Input<string> {
  // A file the stack does not have (OPTIONAL_HOST_FILES) is left out, as the step expects.
  reads = reads.filter((k) => inputs[k] !== undefined || !OPTIONAL_HOST_FILES.has(k));
  if (reads.length === 0) return renderHostStep(name, {});
  const values = reads.map((k) => {
    const v = inputs[k];
    if (v === undefined) throw new Error(`host step ${name} needs ${k}`);
    return v;
  });
  const isFile = (v: unknown): v is HostFile => typeof v === 'object' && v !== null && 'mode' in v;
  return pulumi.all(values.map((v) => (isFile(v) ? v.content : v))).apply((resolved) => {
    const files: Partial<HostFiles> = {};
    reads.forEach((k, i) => {
      const v = values[i];
      (files as Record<string, unknown>)[k] = isFile(v) ? { content: resolved[i], mode: v.mode } : resolved[i];
    });
    return renderHostStep(name, files);
  });
}

/** Makes the remote commands of `names`, in plan order, each depending on the steps it names. */
function makeSteps(parent: pulumi.ComponentResource, prefix: string, names: HostStepName[], args: StepsArgs): Record<string, command.remote.Command> {
  const made: Record<string, command.remote.Command> = {};
  for (const step of hostStepPlan(args.sshUser).filter((s) => names.includes(s.name))) {
    const dependsOn = step.after.flatMap((dep) => {
      if (made[dep]) return [made[dep]];
      const known = args.known[dep];
      if (!known) throw new Error(`host step ${step.name} runs after ${dep}, which this component does not know`);
      return known;
    });
    made[step.name] = new command.remote.Command(
      `${prefix}-${step.name}`,
      {
        connection: args.connection,
        create: step.create,
        stdin: stepScript(step.name, step.reads, args.inputs),
        ...(step.delete ? { delete: step.delete } : {}),
        logging: 'stderr',
      },
      { parent, dependsOn, ...(args.aliasParent ? { aliases: [{ parent: args.aliasParent }] } : {}) },
    );
  }
  return made;
}

export interface HostSetupArgs {
  connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  sshUser: string;
  firewallScript: HostFile;
  sysctl: HostFile;
  /** Our keys of Docker's daemon.json, merged into the host's own. */
  daemonJson: HostFile;
  /** The htpasswd (secret), readable by the containers' user through a read-only bind mount of its directory. */
  htpasswd: HostFile;
  /** dcr's access policy (registry-stack:access), installed beside the htpasswd. */
  accessPolicy?: HostFile;
  /** Numeric group of the containers' user. */
  containerGid: number;
}

const HOST_STEPS: HostStepName[] = ['prepare', 'sysctl', 'docker-daemon', 'auth', 'firewall'];
const OPS_STEPS: HostStepName[] = ['ops', 'image-cleanup'];

export class HostSetup extends pulumi.ComponentResource {
  /** Every step; the containers depend on these. */
  readonly steps: pulumi.Resource[];
  readonly commands: Record<string, command.remote.Command>;
  /** For OpsSetup: the same connection and user. */
  readonly connection: pulumi.Input<command.types.input.remote.ConnectionArgs>;
  readonly sshUser: string;

  constructor(name: string, args: HostSetupArgs, opts?: pulumi.ComponentResourceOptions) {
    super('registry-stack:index:HostSetup', name, {}, opts);
    this.connection = args.connection;
    this.sshUser = args.sshUser;
    const { connection, sshUser, containerGid, firewallScript, sysctl, daemonJson, htpasswd, accessPolicy } = args;
    this.commands = makeSteps(this, name, HOST_STEPS, {
      connection,
      sshUser,
      inputs: { sshUser, containerGid, firewallScript, sysctl, daemonJson, htpasswd, ...(accessPolicy ? { accessPolicy } : {}) },
      known: {},
    });
    this.steps = Object.values(this.commands);
    this.registerOutputs({});
  }
}

export interface OpsSetupArgs {
  /** The host setup these files go on: its connection, user and prepared directories. */
  host: HostSetup;
  opsWrapper: HostFile;
  opsEnv: HostFile;
  crontab: HostFile;
  logrotate: HostFile;
  /** The server image the containers run (name:tag): the only one of its repository kept. */
  serverImage: string;
  /** The server image and the containers (e.g. the RegistryContainers component). */
  after: pulumi.Input<pulumi.Resource>[];
}

/**
 * The ops jobs' files and the cleanup of old server images, after the
 * containers. Name it as the HostSetup (e.g. both 'host'): its commands keep
 * the names (host-ops) and, through an alias, the state they had under HostSetup.
 */
export class OpsSetup extends pulumi.ComponentResource {
  readonly steps: pulumi.Resource[];
  readonly commands: Record<string, command.remote.Command>;

  constructor(name: string, args: OpsSetupArgs, opts?: pulumi.ComponentResourceOptions) {
    super('registry-stack:index:OpsSetup', name, {}, opts);
    const { host, opsWrapper, opsEnv, crontab, logrotate, serverImage } = args;
    this.commands = makeSteps(this, name, OPS_STEPS, {
      connection: host.connection,
      sshUser: host.sshUser,
      inputs: { opsWrapper, opsEnv, crontab, logrotate, serverImage },
      known: { ...Object.fromEntries(Object.entries(host.commands).map(([k, v]) => [k, [v]])), [CONTAINERS]: args.after },
      aliasParent: host,
    });
    this.steps = Object.values(this.commands);
    this.registerOutputs({});
  }
}
