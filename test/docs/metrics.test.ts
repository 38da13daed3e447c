// docs/operations.md lists every metric the server exports, and names none
// that it does not: the list is checked against what a running private
// registry and a running mirror answer on /metrics, and against every metric
// name written in the server's sources (a metric registered only on some
// path still has its name there).
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/process.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const OPERATIONS = readFileSync(path.join(REPO_ROOT, 'docs/operations.md'), 'utf8');
/** Backticked names in the docs: `registry_x` or `registry_x{label="…"}`. */
const DOC_TOKEN = /`(registry_[a-z0-9_]+)(?=[`{])/g;
/** Docker volume names the deploy docs mention, not metrics. */
const NOT_METRICS = new Set(['registry_data', 'registry_cache_data']);

function listed(text: string): Set<string> {
  return new Set([...text.matchAll(DOC_TOKEN)].map((m) => m[1]).filter((n) => !NOT_METRICS.has(n)));
}

async function exported(server: TestServer): Promise<string[]> {
  const res = await fetch(`${server.adminUrl}/metrics`);
  expect(res.status).toBe(200);
  const text = await res.text();
  return [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.join(e.parentPath, e.name));
}

describe('the metrics list in docs/operations.md', () => {
  let privateServer: TestServer;
  let mirror: TestServer;
  beforeAll(async () => {
    privateServer = await startTestServer({ extra: { admin: { addr: '127.0.0.1:0' } } });
    // No upstream is contacted: the list of metrics does not depend on one answering.
    mirror = await startTestServer({ users: {}, extra: { admin: { addr: '127.0.0.1:0' }, proxy: { remoteurl: 'http://127.0.0.1:9' } } });
  });
  afterAll(async () => {
    await privateServer?.stop();
    await mirror?.stop();
  });

  it('names every metric a private registry and a mirror export', async () => {
    const names = new Set([...(await exported(privateServer)), ...(await exported(mirror))]);
    expect(names.size).toBeGreaterThan(30);
    const documented = listed(OPERATIONS);
    expect([...names].filter((n) => !documented.has(n))).toEqual([]);
  });

  it('names every metric written in the server sources', () => {
    const inSources = new Set<string>();
    for (const file of sourceFiles(path.join(REPO_ROOT, 'server/src'))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/['"`](registry_[a-z0-9_]+)['"`]/g)) inSources.add(m[1]);
    }
    expect(inSources.has('registry_http_requests_total')).toBe(true);
    const documented = listed(OPERATIONS);
    expect([...inSources].filter((n) => !documented.has(n))).toEqual([]);
  });

  it('names no metric that does not exist, in any doc', async () => {
    const names = new Set([...(await exported(privateServer)), ...(await exported(mirror))]);
    const docs = ['README.md', ...readdirSync(path.join(REPO_ROOT, 'docs')).map((f) => `docs/${f}`)].filter((f) => f.endsWith('.md'));
    const unknown: string[] = [];
    for (const doc of docs) {
      for (const name of listed(readFileSync(path.join(REPO_ROOT, doc), 'utf8'))) if (!names.has(name)) unknown.push(`${doc}: ${name}`);
    }
    expect(unknown).toEqual([]);
  });
});
