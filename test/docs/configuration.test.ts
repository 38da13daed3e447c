// docs/configuration.md is generated from the config schema: it must be what
// the generator makes of the schema today, and the schema must describe every
// key, so that the reference cannot drift from what the server accepts.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { referenceRows, renderConfigReference, undescribedKeys } from '../../server/src/config/reference.ts';
import { REPO_ROOT } from '../helpers/process.ts';

describe('docs/configuration.md', () => {
  it('is what npm run docs:config makes of the schema (run it after changing server/src/config/schema.ts)', () => {
    const onDisk = readFileSync(path.join(REPO_ROOT, 'docs/configuration.md'), 'utf8');
    expect(onDisk).toBe(renderConfigReference());
  });

  it('says something about every key: each has a .describe() text', () => {
    expect(undescribedKeys()).toEqual([]);
  });

  it('lists every key of every section, with its type and default', () => {
    const rows = new Map(referenceRows().map((r) => [r.key, r]));
    expect(rows.get('storage.filesystem.rootdirectory')).toMatchObject({ type: 'string', default: '`/var/lib/registry`' });
    expect(rows.get('gc.graceperiod')).toMatchObject({ type: 'duration', default: '`1h`' });
    expect(rows.get('storage.s3.chunksize')).toMatchObject({ type: 'size', default: '`10MiB`' });
    expect(rows.get('redis.db')).toMatchObject({ type: 'integer', default: '`0`' });
    expect(rows.get('proxy.upstreams[].host')?.type).toBe('string');
    expect(rows.get('http.net')?.type).toBe('`tcp` \\| `unix`');
  });

  it('reports a key added without a description, and lists it once described', () => {
    const schema = z.strictObject({
      section: z.strictObject({ described: z.string().describe('Says what it does.'), bare: z.boolean().default(false) }),
    });
    expect(undescribedKeys(schema)).toEqual(['section.bare']);
    const described = z.strictObject({ section: z.strictObject({ fresh: z.number().int().optional().describe('A new key.') }) });
    expect(renderConfigReference(described)).toContain('| `section.fresh` | integer |  | A new key. |');
  });
});
