// Generated secrets that must stay the same from one `pulumi up` to the next:
// the origin-check header value, the admin token and the htpasswd salt seed.
// A local command makes them once; its output lives (encrypted) in the Pulumi
// state and is never regenerated, so a second `pulumi up` changes nothing.
// Values set in the stack config (originSecret, adminToken) take precedence.
//
// The Redis password comes from a command of its own, made only when the stack
// first runs Redis: adding it to the first command would change that command
// and regenerate every secret of an existing stack.
import * as command from '@pulumi/command';
import * as pulumi from '@pulumi/pulumi';

export interface StackSecretsArgs {
  originSecret?: string;
  adminToken?: string;
  /** Generate the Redis password too. */
  redis?: boolean;
}

interface Generated {
  origin: string;
  admin: string;
  seed: string;
}

/** Prints three random hex strings as JSON; run once, at create. */
export const GENERATE_SECRETS_COMMAND =
  `node -e 'const c = require("node:crypto"); const r = () => c.randomBytes(32).toString("hex"); ` +
  `process.stdout.write(JSON.stringify({ origin: r(), admin: r(), seed: r() }))'`;

/** Prints the Redis password as JSON; run once, when Redis first appears. */
export const GENERATE_REDIS_PASSWORD_COMMAND =
  `node -e 'const c = require("node:crypto"); ` + `process.stdout.write(JSON.stringify({ redis: c.randomBytes(32).toString("hex") }))'`;

export class StackSecrets extends pulumi.ComponentResource {
  readonly originSecret: pulumi.Output<string>;
  readonly adminToken: pulumi.Output<string>;
  readonly htpasswdSeed: pulumi.Output<string>;
  readonly redisPassword?: pulumi.Output<string>;

  constructor(name: string, args: StackSecretsArgs, opts?: pulumi.ComponentResourceOptions) {
    super('registry-stack:index:StackSecrets', name, {}, opts);
    const generator = new command.local.Command(
      `${name}-generate`,
      { create: GENERATE_SECRETS_COMMAND, logging: 'none' },
      { parent: this, additionalSecretOutputs: ['stdout'] },
    );
    const generated = generator.stdout.apply((s) => JSON.parse(s) as Generated);
    this.originSecret = pulumi.secret(args.originSecret ?? generated.apply((g) => g.origin));
    this.adminToken = pulumi.secret(args.adminToken ?? generated.apply((g) => g.admin));
    this.htpasswdSeed = pulumi.secret(generated.apply((g) => g.seed));
    if (args.redis) {
      const redis = new command.local.Command(
        `${name}-redis`,
        { create: GENERATE_REDIS_PASSWORD_COMMAND, logging: 'none' },
        { parent: this, additionalSecretOutputs: ['stdout'] },
      );
      this.redisPassword = pulumi.secret(redis.stdout.apply((s) => (JSON.parse(s) as { redis: string }).redis));
    }
    this.registerOutputs({});
  }
}
