// A thin registry client over undici for API tests: raw requests plus the
// push/pull steps a real client performs.
import { request } from 'undici';
import type { Blob, Image, IndexImage } from './oci.ts';

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json: () => any;
  header: (name: string) => string | undefined;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string | AsyncIterable<Buffer> | NodeJS.ReadableStream;
}

export class RegistryClient {
  constructor(
    readonly baseUrl: string,
    readonly auth?: string,
  ) {}

  withAuth(auth: string | undefined): RegistryClient {
    return new RegistryClient(this.baseUrl, auth);
  }

  async req(pathOrUrl: string, options: RequestOptions = {}): Promise<Response> {
    const url = pathOrUrl.startsWith('http') ? pathOrUrl : `${this.baseUrl}${pathOrUrl}`;
    const headers: Record<string, string> = { ...options.headers };
    if (this.auth && !('authorization' in headers)) headers.authorization = this.auth;
    const res = await request(url, {
      method: (options.method ?? 'GET') as any,
      headers,
      body: options.body as any,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    const text = body.toString('utf8');
    return {
      status: res.statusCode,
      headers: res.headers as Record<string, string | string[] | undefined>,
      body,
      text,
      json: () => JSON.parse(text),
      header: (name: string) => {
        const v = res.headers[name.toLowerCase()];
        return Array.isArray(v) ? v.join(', ') : v;
      },
    };
  }

  /** Absolute URL for a Location header (which may be relative). */
  resolve(location: string): string {
    return new URL(location, this.baseUrl).toString();
  }

  async pushBlob(name: string, blob: Blob): Promise<Response> {
    const res = await this.req(`/v2/${name}/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: blob.data,
    });
    if (res.status !== 201) throw new Error(`push blob ${blob.digest}: ${res.status} ${res.text}`);
    return res;
  }

  async pushManifest(name: string, reference: string, manifest: Blob, mediaType: string): Promise<Response> {
    const res = await this.req(`/v2/${name}/manifests/${reference}`, {
      method: 'PUT',
      headers: { 'content-type': mediaType },
      body: manifest.data,
    });
    if (res.status !== 201) throw new Error(`push manifest ${name}:${reference}: ${res.status} ${res.text}`);
    return res;
  }

  async pushImage(name: string, tag: string, image: Image): Promise<void> {
    await this.pushBlob(name, image.config);
    for (const layer of image.layers) await this.pushBlob(name, layer);
    await this.pushManifest(name, tag, image.manifest, image.mediaType);
  }

  async pushIndex(name: string, tag: string, index: IndexImage): Promise<void> {
    for (const img of index.images) await this.pushImage(name, img.manifest.digest, img);
    await this.pushManifest(name, tag, index.index, index.mediaType);
  }
}
