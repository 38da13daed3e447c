// `registry mirror pull`: one line per image (JSON lines without a terminal),
// a progress bar that ends at 100% with rounded sizes in a terminal, and a
// --url without a scheme refused once as a usage error.
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage, buildIndex, type Image, randomBlob } from '../helpers/oci.ts';
import { pushImageLikeClient, pushIndexLikeClient } from '../helpers/ops/images.ts';
import { type MirrorPair, startMirrorPair } from '../helpers/ops/servers.ts';
import { freePort } from '../helpers/process.ts';
import { oneLineError, REGISTRY_BIN, runRegistry } from './helpers.ts';

let pair: MirrorPair;
// Sizes that are not whole megabytes: the bar must still read 100% and round them.
const big = buildImage({ files: [{ 'a.bin': randomBlob(1_503_965).data }, { 'b.bin': randomBlob(1_500_000).data }] });
const small = buildImage({ files: [{ 'c.txt': 'small\n' }] });
const multi = buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]);
const blobsOf = (img: Image) => [img.config, ...img.layers];
/** Bytes of the distinct blobs of these images (shared ones count once, as they are fetched once). */
const bytesOf = (imgs: Image[]) => [...new Map(imgs.flatMap(blobsOf).map((b) => [b.digest, b.size])).values()].reduce((n, s) => n + s, 0);

beforeAll(async () => {
  pair = await startMirrorPair();
  const upstream = new RegistryClient(pair.upstream.url, pair.upstream.auth);
  await pushImageLikeClient(upstream, 'lib/big', '1', big);
  await pushImageLikeClient(upstream, 'lib/small', '1', small);
  await pushIndexLikeClient(upstream, 'lib/multi', '1', multi);
});
afterAll(async () => {
  await pair?.stop();
});

describe('registry mirror pull without a terminal', () => {
  it('prints one JSON line per image, then the summary; a missing image fails the run (exit 1)', async () => {
    const r = await runRegistry(['mirror', 'pull', '--url', pair.mirror.url, 'lib/big:1', 'lib/small:1', 'lib/multi:1', 'lib/missing:1'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    const images = lines.filter((l) => l.event === 'image');
    expect(images.map((l) => l.image).sort()).toEqual(['lib/big:1', 'lib/missing:1', 'lib/multi:1', 'lib/small:1']);
    const by = Object.fromEntries(images.map((l) => [l.image, l]));
    expect(by['lib/big:1']).toMatchObject({ ok: true, blobs: 3, bytes: bytesOf([big]) });
    expect(by['lib/small:1']).toMatchObject({ ok: true, blobs: 2, bytes: bytesOf([small]) });
    expect(by['lib/multi:1']).toMatchObject({ ok: true, blobs: 4, bytes: bytesOf(multi.images) });
    expect(by['lib/missing:1'].ok).toBe(false);
    expect(by['lib/missing:1'].errors.join()).toContain('404');
    expect(lines.at(-1)).toMatchObject({ event: 'summary', images: 4, failedImages: 1, blobs: 9, failedBlobs: 0, bytes: bytesOf([big, small, ...multi.images]) });
  });

  it('--platform takes one image of an index', async () => {
    const r = await runRegistry(['mirror', 'pull', '--url', pair.mirror.url, '--platform', 'linux/arm64', 'lib/multi:1']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const image = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>)[0];
    expect(image).toMatchObject({ event: 'image', ok: true, blobs: 2, bytes: bytesOf([multi.images[1]]) });
  });
});

describe('registry mirror pull in a terminal', () => {
  it('ends the bar at 100% with sizes rounded to 0.1 MB, then a line per image', async () => {
    // script(1) gives the command a pseudo-terminal, as a user's shell would.
    const command = [process.execPath, REGISTRY_BIN, 'mirror', 'pull', '--url', pair.mirror.url, 'lib/big:1', 'lib/small:1'].map((a) => `'${a}'`).join(' ');
    const out = await new Promise<{ code: number | null; text: string }>((resolve, reject) => {
      const child = spawn('script', ['-qefc', command, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, COLUMNS: '200' } });
      let text = '';
      child.stdout.on('data', (c: Buffer) => (text += c.toString()));
      child.stderr.on('data', (c: Buffer) => (text += c.toString()));
      child.once('error', reject);
      child.once('exit', (code) => resolve({ code, text }));
    });
    expect(out.code, out.text).toBe(0);
    // eslint-disable-next-line no-control-regex
    const screen = out.text.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '');
    const frames = screen.split(/[\r\n]+/).filter((l) => l.startsWith('warming'));
    const total = (bytesOf([big, small]) / 1e6).toFixed(1);
    expect(frames.at(-1), screen).toMatch(new RegExp(`100% \\| ${total.replace('.', '\\.')}/${total.replace('.', '\\.')} MB \\| 5/5 blobs`));
    for (const f of frames) expect(f).not.toMatch(/\d\.\d{2,}/);
    expect(screen).toContain(`pulled lib/big:1: 3 blob(s), ${(bytesOf([big]) / 1e6).toFixed(1)} MB`);
    expect(screen).toContain('pulled lib/small:1: 2 blob(s)');
    expect(screen).toMatch(/warmed 2 of 2 image\(s\): 5 blob\(s\)/);
  });
});

describe('registry mirror pull: usage errors', () => {
  it.each([
    [['--url', '127.0.0.1:17020'], '--url'],
    [['--url', 'ftp://127.0.0.1:17020'], '--url'],
    [['--url', 'http://user:secret@127.0.0.1:17020'], '--user'],
    [['--concurrency', 'lots'], '--concurrency'],
    [['--concurrency', '0'], '--concurrency'],
    [['--platform', 'arm64'], '--platform'],
  ])('%j: one line, exit 2, nothing tried', async (args, mention) => {
    const r = await runRegistry(['mirror', 'pull', ...args, 'alpine:3.20', 'nginx:alpine']);
    const line = oneLineError(r, mention);
    expect(line).not.toContain('secret');
    expect(r.stdout).toBe('');
  });

  it('an unreachable mirror fails each image with the reason, exit 1', async () => {
    const r = await runRegistry(['mirror', 'pull', '--url', `http://127.0.0.1:${await freePort()}`, 'alpine:3.20']);
    expect(r.code).toBe(1);
    const [image] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    expect(image).toMatchObject({ event: 'image', image: 'alpine:3.20', ok: false });
    expect(image.errors.join()).toContain('ECONNREFUSED');
  });
});
