// `npm run twin -- up [--state DIR] [stack.yaml]` deploys the stack onto a
// real Docker engine on this machine (see twin.ts) and writes DIR/twin.env;
// `npm run twin -- down [--state DIR]` removes everything it made. Needs root
// (it starts private Docker engines) and Debian's docker.io, mmdebstrap,
// pebble, caddy, docker-registry and openssh-client (.ci/run installs them).
import * as path from 'node:path';
import { Command, CommanderError } from 'commander';
import { HostStepError, ROOT, twinDown, twinUp } from './twin.ts';

const DEFAULT_STATE = path.join(ROOT, '.twin');

function fail(message: string, code: number): never {
  console.error(`twin: ${message}`);
  process.exit(code);
}

const program = new Command('twin')
  .description('the registry stack on a real Docker engine on this machine, with ACME and a Cloudflare-edge twin')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

program
  .command('up')
  .description('deploy (or re-apply) the twin; prints where everything is and writes STATE/twin.env')
  .argument('[stack.yaml]', 'a stack config (Pulumi.<stack>.yaml format; default infra/twin/stack.yaml)')
  .option('--state <dir>', 'state directory', DEFAULT_STATE)
  .option('--cache <dir>', 'base image cache')
  .action(async (stackFile: string | undefined, opts: { state: string; cache?: string }) => {
    if (process.getuid?.() !== 0) fail('must run as root: it starts private Docker engines', 2);
    try {
      const r = await twinUp({ dir: opts.state, stackFile: stackFile && path.resolve(stackFile), cacheDir: opts.cache });
      const e = r.env;
      console.log(`
The twin is up (state: ${path.resolve(opts.state)}).
  private registry  https://${e.TWIN_DCR}   (user ${e.TWIN_USER}; certificate from pebble over ACME)
  mirror            https://${e.TWIN_MIR}   (through the Cloudflare edge twin)
  Docker Hub twin   ${e.TWIN_UPSTREAM}       (seed library/… images here)
  client engine     DOCKER_HOST=${e.TWIN_DOCKER_HOST}
  VPS engine        DOCKER_HOST=${e.TWIN_VPS_DOCKER_HOST}
  VPS shell         ${e.TWIN_SSH}
This up changed: host steps [${r.changes.steps.join(', ') || 'none'}], containers [${r.changes.containers.join(', ') || 'none'}], robots [${r.changes.robots.join(', ') || 'none'}].
Try it:
  set -a; . ${path.join(path.resolve(opts.state), 'twin.env')}; set +a
  export DOCKER_HOST=$TWIN_DOCKER_HOST DOCKER_CONFIG=$(mktemp -d)
  echo "$TWIN_PASSWORD" | docker login "$TWIN_DCR" -u "$TWIN_USER" --password-stdin
${Object.keys(r.robotSecrets)
  .map((name) => `  jq -r '.["${name}"].secret' ${path.join(path.resolve(opts.state), 'robots.json')} | docker login "$TWIN_DCR" -u 'robot$${name}' --password-stdin\n`)
  .join('')}`);
    } catch (err) {
      if (err instanceof HostStepError) fail(err.message, 1);
      throw err;
    }
  });

program
  .command('down')
  .description('remove the twin: its containers, engines and state directory')
  .option('--state <dir>', 'state directory', DEFAULT_STATE)
  .action(async (opts: { state: string }) => {
    await twinDown({ dir: opts.state, log: (s) => console.log(s) });
  });

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  throw err;
}
