// Robot accounts on either storage driver (project s3: in a bucket of Ceph
// RGW): `registry robot` with the server's config creates a robot whose record
// (its secret's hash only) lands in the storage, skopeo logs in as it and
// pushes what its scope and the policy allow, `robot list` shows it, and once
// revoked the running server refuses it (within the record cache's seconds,
// waited for as an event) and `list` says so.
import { rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { ContainersClients, verifyPull } from '../helpers/clients.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { basicAuth, makeTempDir, type ServerProcess, sleep, startServerProcess } from '../helpers/process.ts';
import { createTestStorage, type TestStorage } from '../helpers/storage.ts';
import { runRobot } from '../cli/helpers.ts';

const POLICY = `
groups: { ci: ['robot$ci'] }
repositories:
  "team/**": { groups: { ci: [pull, push] } }
  "other/**": { default: [pull] }
`;

describe('robot accounts kept in the registry storage', () => {
  let work: string;
  let storage: TestStorage | undefined;
  let srv: ServerProcess;
  let cli: ContainersClients;

  beforeAll(async () => {
    work = makeTempDir('rs-e2e-robots-');
    storage = await createTestStorage('e2e-robots', { dataDir: path.join(work, 'data') });
    const policy = path.join(work, 'access.yml');
    writeFileSync(policy, POLICY);
    srv = await startServerProcess({
      dataDir: path.join(work, 'data'),
      storageDriver: storage.driverConfig(),
      workDir: path.join(work, 'srv'),
      // On S3 the signing keys need a directory of their own.
      extra: { auth: { access: policy, token: { keydir: path.join(work, 'keys') } } },
    });
    cli = new ContainersClients([srv.host], path.join(work, 'cli'));
  });
  afterAll(async () => {
    await srv?.stop();
    await storage?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('create, log in and push, list, revoke: refused by the running server, listed as revoked', async () => {
    const created = await runRobot(['create', 'ci', '--scope', 'repository:team/**:pull,push', '--ttl', '90d', '-c', srv.configFile]);
    expect(created.code, created.stderr).toBe(0);
    const secret = created.stdout.trim();
    const record = await storage!.read('auth/robots/ci.json');
    expect(record, 'the record is in the storage').toBeDefined();
    expect(record!.toString()).not.toContain(secret);
    expect(JSON.parse(record!.toString())).toMatchObject({ name: 'ci', scopes: ['repository:team/**:pull,push'], secretHash: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });

    const image = buildImage({ files: [{ 'robot.txt': 'pushed by a robot\n' }] });
    const layout = path.join(work, 'layout');
    writeOciLayout(layout, 'v1', image);
    const creds = `robot$ci:${secret}`;
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${srv.host}/team/app:v1`]);
    const auth = basicAuth('robot$ci', secret);
    expect((await verifyPull(srv.url, auth, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
    const denied = await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${srv.host}/other/app:v1`], { allowFailure: true });
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/denied|403 \(Forbidden\)/i);

    const listed = await runRobot(['list', '--json', '-c', srv.configFile]);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ login: 'robot$ci', status: 'active' })]);

    const revoked = await runRobot(['revoke', 'robot$ci', '-c', srv.configFile]);
    expect(revoked.code, revoked.stderr).toBe(0);
    // Without Redis the server re-reads the record within seconds: wait for the refusal, bounded.
    const deadline = Date.now() + 30_000;
    while ((await new RegistryClient(srv.url, auth).req('/v2/team/app/tags/list')).status !== 401) {
      if (Date.now() > deadline) throw new Error('the revoked robot was not refused within 30 s');
      await sleep(100);
    }
    const pull = await cli.skopeo(['inspect', '--tls-verify=false', '--creds', creds, `docker://${srv.host}/team/app:v1`], { allowFailure: true });
    expect(pull.code).not.toBe(0);
    expect(pull.stderr).toMatch(/unauthorized|authentication required/i);
    expect((await runRobot(['list', '-c', srv.configFile])).stdout).toMatch(/robot\$ci +revoked/);
    expect(JSON.parse((await storage!.read('auth/robots/ci.json'))!.toString()).revoked).toBeTruthy();
  });
});
