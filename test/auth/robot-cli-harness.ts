// `registry robot …` as main.ts wires it, for the robot CLI tests: the same
// subcommands under a bare program (main.ts adds them with addRobotCommand).
import { Command } from 'commander';
import { addRobotCommand } from '../../server/src/cli/robot.ts';

const program = new Command()
  .name('registry')
  .configureOutput({ outputError: (text, write) => write(`registry: ${text.replace(/^error: /, '').trim()}\n`) })
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
addRobotCommand(program);
await program.parseAsync(process.argv);
