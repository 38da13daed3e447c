// Abandoned upload sessions must not each keep a running hash in memory until
// the purge: the in-memory states are bounded, and a session whose state was
// evicted still commits only the right bytes (the commit re-reads the data).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobStore } from '../../server/src/registry/blob-store.ts';
import { digestOf } from '../../server/src/registry/digest.ts';
import { InProcessGcGuard } from '../../server/src/registry/gc-guard.ts';
import { type HashStateEvent, UploadStore } from '../../server/src/registry/uploads.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'rs-upload-states-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function store(sub: string, maxHashStatesInMemory: number, events: HashStateEvent[]) {
  const driver = new FilesystemDriver(path.join(dir, sub));
  return new UploadStore(driver, new BlobStore(driver), new InProcessGcGuard(), {
    maxHashStatesInMemory,
    onHashState: (e) => events.push(e),
  });
}

describe('in-memory running hashes of upload sessions', () => {
  it('stay at the bound however many sessions are started (and fed) and abandoned', async () => {
    const events: HashStateEvent[] = [];
    const uploads = store('bound', 5, events);
    for (let i = 0; i < 40; i++) {
      const { id } = await uploads.start('r');
      expect(uploads.hashStatesInMemory).toBeLessThanOrEqual(5);
      await uploads.append('r', id, Readable.from([Buffer.from(`chunk ${i}`)]), {});
      expect(uploads.hashStatesInMemory).toBeLessThanOrEqual(5);
    }
    expect(uploads.hashStatesInMemory).toBe(5);
  });

  it('a session whose state was evicted commits with its digest verified against the stored bytes', async () => {
    const events: HashStateEvent[] = [];
    const uploads = store('evicted', 2, events);
    const first = Buffer.from('first part, ');
    const second = Buffer.from('second part');
    const { id } = await uploads.start('r');
    await uploads.append('r', id, Readable.from([first]), {});
    // Other sessions push this one's state out.
    for (let i = 0; i < 3; i++) {
      const other = await uploads.start('r');
      await uploads.append('r', other.id, Readable.from([Buffer.from(`other ${i}`)]), {});
    }
    await uploads.append('r', id, Readable.from([second]), {});
    const right = digestOf(Buffer.concat([first, second]));
    const info = await uploads.finish('r', id, right, undefined, {});
    expect(info).toEqual({ digest: right, size: first.length + second.length });
    expect(events).toContain('rehashed');

    // And wrong bytes are still refused after an eviction.
    const bad = await uploads.start('r');
    await uploads.append('r', bad.id, Readable.from([first]), {});
    for (let i = 0; i < 3; i++) {
      const other = await uploads.start('r');
      await uploads.append('r', other.id, Readable.from([Buffer.from(`more ${i}`)]), {});
    }
    await expect(uploads.finish('r', bad.id, digestOf(second), undefined, {})).rejects.toMatchObject({ code: 'DIGEST_INVALID' });
  });
});
