// Runs the edge from a JSON config file (see config.ts for its keys):
//
//   node infra/twin/edge/main.ts edge.json                 (Node 23.6+, which strips the types itself)
//   node --import tsx infra/twin/edge/main.ts edge.json    (older Node, in this repository)
//
// stdout carries one JSON line per request (LogEntry in edge.ts) and nothing
// else, so it can be piped into jq or read by a test; start-up and errors go
// to stderr. SIGTERM and SIGINT close the listeners and exit 0.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseEdgeConfig } from './config.ts';
import { startEdge } from './edge.ts';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node main.ts <edge-config.json>\n');
  process.exit(2);
}

try {
  const config = parseEdgeConfig(JSON.parse(readFileSync(file, 'utf8')), path.dirname(path.resolve(file)));
  const edge = await startEdge(config, { log: (entry) => process.stdout.write(`${JSON.stringify(entry)}\n`) });
  process.stderr.write(`${JSON.stringify({ msg: 'edge listening', address: config.listen.address, ports: edge.ports, hosts: config.hosts })}\n`);
  const stop = () => {
    edge.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (e) {
  process.stderr.write(`${JSON.stringify({ msg: 'edge failed to start', error: (e as Error).message })}\n`);
  process.exit(1);
}
