// The `registry` command line (commander): every verb, --help and --version.
// main.ts comes here for anything but a plain `registry serve [config]`.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { serveCommand, SERVE_HELP } from './serve.ts';
import { htpasswdCommand } from './htpasswd.ts';
// The maintenance and mirror tools are imported when they run: `serve` would
// otherwise load their progress bars and HTTP client for nothing (about 4 MB).
import type { garbageCollectCommand, pruneCommand } from './maintenance.ts';
import type { mirrorPullCommand } from './mirror-pull.ts';

/**
 * The version of the installed package, read at run time so that no build
 * step has to copy it: the nearest package.json of registry-stack above this
 * module, whether it runs from server/src/cli or from a compiled dist/.
 */
function packageVersion(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'registry-stack' && pkg.version) return pkg.version;
    } catch {
      // none here, or not ours: look higher
    }
    if (path.dirname(dir) === dir) return 'unknown';
  }
}

const program = new Command()
  .name('registry')
  .description('registry-stack: an OCI distribution registry (private or mirror)')
  .version(packageVersion(), '-v, --version', 'print the version and exit')
  // Set before the subcommands are made, which inherit both.
  .configureOutput({
    // One line, as every other refusal of ours: "registry: unknown command 'x' (Did you mean y?)".
    outputError: (text, write) => write(`registry: ${text.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ')} (see --help)\n`),
  })
  .exitOverride((err: CommanderError) => {
    // Help and --version exit 0; every other refusal of the command line is a usage error, 2 as in the scripts.
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

program
  .command('serve')
  .description('run the registry; with no config file, a private registry on 127.0.0.1:5000 storing under ./data')
  .argument('[config]', 'configuration file (distribution config.yml format)')
  .addHelpText('after', SERVE_HELP)
  .action(serveCommand);

program
  .command('garbage-collect')
  .description('delete blobs (and with --delete-untagged, manifests) that nothing references; offline form of POST /admin/gc')
  .argument('<config>', 'configuration file')
  .option('-d, --dry-run', 'only report what would be deleted')
  .option('-m, --delete-untagged', 'also delete manifests that no tag reaches')
  .option('--grace <seconds>', 'keep blobs younger than this (default: gc.graceperiod, or 0 offline)')
  .action(async (...args: Parameters<typeof garbageCollectCommand>) => (await import('./maintenance.ts')).garbageCollectCommand(...args));

program
  .command('prune')
  .description("evict a mirror cache's least recently used content by its cache policy (cache.maxage, cache.maxsize)")
  .argument('<config>', 'configuration file of the mirror')
  .option('-d, --dry-run', 'only report what would be deleted, and how many bytes')
  .option('--grace <seconds>', 'keep unreferenced blobs younger than this (default: gc.graceperiod, 1h)')
  .action(async (...args: Parameters<typeof pruneCommand>) => (await import('./maintenance.ts')).pruneCommand(...args));

program
  .command('htpasswd')
  .description('add or update a user in an htpasswd file (bcrypt), reading the password from stdin or --password')
  .argument('<file>', 'htpasswd file (created if missing)')
  .argument('<user>', 'user name')
  .option('-p, --password <password>', 'the password (default: read one line from stdin)')
  .option('-c, --cost <cost>', 'bcrypt cost', '10')
  .action(htpasswdCommand);

const mirror = program.command('mirror').description('mirror-mode tools');
mirror
  .command('pull')
  .description('pre-warm a running mirror: pull images through it so later pulls are cache hits')
  .argument('<image...>', 'images as clients name them through the mirror: alpine:3.20, library/nginx:alpine, ghcr.io/org/app:1.0')
  .option('--url <url>', 'the mirror to warm', 'http://127.0.0.1:5000')
  .option('-u, --user <user:password>', 'credentials, when the mirror needs a login')
  .option('--platform <os/arch>', 'only this platform of multi-arch images (default: all)')
  .option('--concurrency <n>', 'blobs fetched at once', '4')
  .action(async (...args: Parameters<typeof mirrorPullCommand>) => (await import('./mirror-pull.ts')).mirrorPullCommand(...args));

(await import('./robot.ts')).addRobotCommand(program);

await program.parseAsync(process.argv);
