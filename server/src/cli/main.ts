// `registry`: one command, distribution's verbs where they overlap.
import { Command } from 'commander';
import { serveCommand } from './serve.ts';
import { htpasswdCommand } from './htpasswd.ts';
import { garbageCollectCommand, pruneCommand } from './maintenance.ts';
import { mirrorPullCommand } from './mirror-pull.ts';

const program = new Command()
  .name('registry')
  .description('registry-stack: an OCI distribution registry (private or mirror)')
  .showHelpAfterError();

program
  .command('serve')
  .description('run the registry; with no config file, a private registry on 127.0.0.1:5000 storing under ./data')
  .argument('[config]', 'configuration file (distribution config.yml format)')
  .action(serveCommand);

program
  .command('garbage-collect')
  .description('delete blobs (and with --delete-untagged, manifests) that nothing references; offline form of POST /admin/gc')
  .argument('<config>', 'configuration file')
  .option('-d, --dry-run', 'only report what would be deleted')
  .option('-m, --delete-untagged', 'also delete manifests that no tag reaches')
  .option('--grace <seconds>', 'keep blobs younger than this (default: gc.graceperiod, or 0 offline)')
  .action(garbageCollectCommand);

program
  .command('prune')
  .description("evict a mirror cache's least recently used content by its cache policy (cache.maxage, cache.maxsize)")
  .argument('<config>', 'configuration file of the mirror')
  .option('-d, --dry-run', 'only report what would be deleted, and how many bytes')
  .action(pruneCommand);

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
  .action(mirrorPullCommand);

await program.parseAsync(process.argv);
