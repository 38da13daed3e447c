// The robot accounts of the stack config (registry-stack:robots), as the
// commands that make them on the VPS. Each robot is made by the server's own
// `registry robot create`, run inside dcr's first container with dcr's config
// and environment: the same code as `npx registry robot create`, so it stores
// the robot wherever dcr stores (the data volume, or the R2 bucket that every
// replica reads) and keeps only the hash of the secret it prints.
//
// Why the CLI makes the secret rather than the stack config holding one: the
// secret then never passes through anyone's hands or shell history, it is 32
// random bytes by construction, and the deploy needs no other way into the
// storage than the one the server already has. The secret is the command's
// stdout, which the Pulumi program keeps as a secret output (robotSecrets).
//
// One command per robot, run when the robot first appears and again when what
// it is made from changes (scopes, ttl, description, generation: its
// `triggers`), which gives it a new secret and a new ttl; removing it from the
// stack config revokes it. The Pulumi component (components/robots.ts) and the
// VPS twin (twin/twin.ts) run these same commands over SSH.
import type { StackConfig } from '../config.ts';
import { shq } from './host.ts';
import { IMAGE_PATHS } from './layout.ts';
import { stackContainers } from './ops.ts';

export interface RobotCommand {
  /** The robot's name (it logs in as robot$<name>). */
  robot: string;
  /** Run over SSH with the script on stdin. */
  create: 'sh -s' | 'sudo -n sh -s';
  /** Revokes an earlier robot of the name, makes this one, and prints its secret, alone, on stdout. */
  stdin: string;
  /** Run when the robot leaves the stack config (or before it is made again): revokes it. */
  delete: string;
  /** What the robot is made from: a change replaces it (a new secret). */
  triggers: string[];
}

/** `registry robot <args>` inside dcr's first container, with its config and environment. */
function robotCli(container: string, args: string[]): string {
  return `docker exec ${shq(container)} node ${IMAGE_PATHS.registryBin} robot ${args.map(shq).join(' ')} -c ${IMAGE_PATHS.config} </dev/null`;
}

/** Revokes robot$<name> (the command a robot's removal runs; the VPS twin runs it for a robot it made before). */
export function revokeRobotCommand(cfg: StackConfig, name: string): string {
  const revoke = robotCli(stackContainers(cfg).private[0], ['revoke', name]);
  return cfg.vps.user === 'root' ? revoke : `sudo -n sh -c ${shq(revoke)}`;
}

export function robotCommands(cfg: StackConfig): RobotCommand[] {
  const container = stackContainers(cfg).private[0];
  const root = cfg.vps.user === 'root';
  return Object.entries(cfg.robots).map(([name, r]) => {
    const createArgs = [
      'create',
      name,
      ...r.scopes.flatMap((s) => ['--scope', s]),
      ...(r.ttl ? ['--ttl', r.ttl] : []),
      ...(r.description ? ['--description', r.description] : []),
    ];
    const revoke = robotCli(container, ['revoke', name]);
    const stdin = [
      '#!/bin/sh',
      `# Rendered by registry-stack (infra/render/robots.ts): robot$${name}, generation ${r.generation}.`,
      '# Its secret is the only thing on stdout.',
      'set -eu',
      '# One made before (another generation, other scopes) stops working now; none is fine.',
      `${revoke} >/dev/null 2>&1 || true`,
      robotCli(container, createArgs),
      '',
    ].join('\n');
    return {
      robot: name,
      create: root ? 'sh -s' : 'sudo -n sh -s',
      stdin,
      delete: revokeRobotCommand(cfg, name),
      triggers: [r.scopes.join(' '), r.ttl ?? '', r.description ?? '', String(r.generation)],
    };
  });
}
