// `registry`: one command, distribution's verbs where they overlap.
import { Command } from 'commander';
import { serveCommand } from './serve.ts';
import { htpasswdCommand } from './htpasswd.ts';

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
  .command('htpasswd')
  .description('add or update a user in an htpasswd file (bcrypt), reading the password from stdin or --password')
  .argument('<file>', 'htpasswd file (created if missing)')
  .argument('<user>', 'user name')
  .option('-p, --password <password>', 'the password (default: read one line from stdin)')
  .option('-c, --cost <cost>', 'bcrypt cost', '10')
  .action(htpasswdCommand);

await program.parseAsync(process.argv);
