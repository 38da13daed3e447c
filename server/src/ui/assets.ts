// The client bundle (app.js, app.css), built by server/bin/build.mjs into
// dist/ui/. Read once and kept: a few tens of KB.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';

const DIR = new URL('../../../dist/ui/', import.meta.url);
const TYPES: Record<string, string> = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' };

export interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

export class Assets {
  private readonly loaded = new Map<string, Promise<Asset | undefined>>();

  constructor(private readonly dir: URL = DIR) {}

  /** The asset of this file name, or undefined when there is none (or the UI was not built). */
  get(file: string): Promise<Asset | undefined> {
    const type = TYPES[file];
    if (!type) return Promise.resolve(undefined);
    let asset = this.loaded.get(file);
    if (!asset) {
      asset = readFile(new URL(file, this.dir)).then(
        (body) => ({ body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` }),
        // Not built yet: asked again next time, so a build while the server runs is picked up.
        () => {
          this.loaded.delete(file);
          return undefined;
        },
      );
      this.loaded.set(file, asset);
    }
    return asset;
  }
}
