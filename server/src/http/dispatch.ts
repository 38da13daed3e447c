// Which handler serves which (route, method), and what access it needs.
import type { Access } from '../auth/authenticator.ts';
import type { RequestContext } from './context.ts';
import { deleteBlob, getBlob } from './handlers/blobs.ts';
import { base, catalog, referrers, tags } from './handlers/listings.ts';
import { deleteManifest, getManifest, putManifest } from './handlers/manifests.ts';
import { deleteUpload, getUpload, patchUpload, postUpload, putUpload } from './handlers/uploads.ts';
import type { Route, RouteKind } from './router.ts';

export interface Endpoint {
  access: Access | 'base';
  /** Changes stored data (refused up front by read-only registries). */
  writes: boolean;
  handle: (ctx: RequestContext) => Promise<void>;
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

// Narrowing helpers: each handler gets the route fields it needs.
const r = <K extends RouteKind>(ctx: RequestContext) => ctx.route as Extract<Route, { kind: K }>;

const read = (handle: Endpoint['handle']): Endpoint => ({ access: 'pull', writes: false, handle });
const write = (handle: Endpoint['handle']): Endpoint => ({ access: 'push', writes: true, handle });
const remove = (handle: Endpoint['handle']): Endpoint => ({ access: 'delete', writes: true, handle });

const TABLE: Record<RouteKind, Partial<Record<Method, Endpoint>>> = {
  base: {
    GET: { access: 'base', writes: false, handle: base },
    HEAD: { access: 'base', writes: false, handle: base },
  },
  catalog: { GET: read(catalog) },
  tags: { GET: read((ctx) => tags(ctx, r<'tags'>(ctx).name, r<'tags'>(ctx).requestedName)) },
  manifest: {
    GET: read((ctx) => getManifest(ctx, r<'manifest'>(ctx).name, r<'manifest'>(ctx).reference)),
    HEAD: read((ctx) => getManifest(ctx, r<'manifest'>(ctx).name, r<'manifest'>(ctx).reference)),
    PUT: write((ctx) => putManifest(ctx, r<'manifest'>(ctx).name, r<'manifest'>(ctx).reference)),
    DELETE: remove((ctx) => deleteManifest(ctx, r<'manifest'>(ctx).name, r<'manifest'>(ctx).reference)),
  },
  blob: {
    GET: read((ctx) => getBlob(ctx, r<'blob'>(ctx).name, r<'blob'>(ctx).reference)),
    HEAD: read((ctx) => getBlob(ctx, r<'blob'>(ctx).name, r<'blob'>(ctx).reference)),
    DELETE: remove((ctx) => deleteBlob(ctx, r<'blob'>(ctx).name, r<'blob'>(ctx).reference)),
  },
  uploads: { POST: write((ctx) => postUpload(ctx, r<'uploads'>(ctx).name)) },
  upload: {
    GET: write((ctx) => getUpload(ctx, r<'upload'>(ctx).name, r<'upload'>(ctx).id)),
    PATCH: write((ctx) => patchUpload(ctx, r<'upload'>(ctx).name, r<'upload'>(ctx).id)),
    PUT: write((ctx) => putUpload(ctx, r<'upload'>(ctx).name, r<'upload'>(ctx).id)),
    DELETE: write((ctx) => deleteUpload(ctx, r<'upload'>(ctx).name, r<'upload'>(ctx).id)),
  },
  referrers: { GET: read((ctx) => referrers(ctx, r<'referrers'>(ctx).name, r<'referrers'>(ctx).reference)) },
};

export function endpointFor(route: Route, method: string | undefined): Endpoint | undefined {
  return TABLE[route.kind][(method ?? 'GET') as Method];
}

/** True for methods that would write if the route had them (for a clear 405 on read-only registries). */
export function isWriteMethod(method: string | undefined): boolean {
  return method === 'POST' || method === 'PUT' || method === 'PATCH' || method === 'DELETE';
}
