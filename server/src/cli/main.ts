// `registry`: one command, distribution's verbs where they overlap.
//
// A plain `registry serve [config]` (what npm start, the image and the bench
// run) goes straight to the server: the command-line parser and the other
// commands' modules (commander, robot accounts and the policy parser they
// load) would stay in the memory of a process that runs for months, 3 MB of
// RSS. Anything else (options, --help, other verbs, mistakes) is commander's.
import { serveCommand } from './serve.ts';

// The SDK warns once per process that its releases after January 2027 need
// Node 22. That is for whoever upgrades the dependency, not for an operator
// starting the registry (and it is several lines in a JSON log stream). The
// SDK's documented switch, left to the operator when set (aws-sdk-js-v3#7983).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ||= 'true';

const [verb, config, ...rest] = process.argv.slice(2);
if (verb === 'serve' && rest.length === 0 && !config?.startsWith('-')) await serveCommand(config);
else await import('./commands.ts');
