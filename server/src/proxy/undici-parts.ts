// The parts of undici the mirror uses, loaded from their own files. The package's
// entry loads all of undici (fetch, WebSocket, the HTTP cache, the mock and
// snapshot agents): 19 MB of RSS once required, against 10 MB for these parts
// (Node 20, a bare process: 60.9 and 52.4 MB, 41.9 without undici). undici has
// no "exports" map, so its files are reachable; a release that moves them fails
// every mirror test at import.
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const load = createRequire(import.meta.url);

export const Agent = load('undici/lib/dispatcher/agent.js') as typeof Undici.Agent;
export const buildConnector = load('undici/lib/core/connect.js') as typeof Undici.buildConnector;
const dispatcherRequest = load('undici/lib/api/api-request.js') as (
  this: Undici.Dispatcher,
  options: Undici.Dispatcher.RequestOptions,
) => Promise<Undici.Dispatcher.ResponseData>;

export type RequestOptions = Omit<Undici.Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & {
  method: Undici.Dispatcher.HttpMethod;
  dispatcher: Undici.Dispatcher;
};

/** undici's request(url, options), always on the given dispatcher (the package's wrapper falls back to its global one). */
export function request(url: string | URL, options: RequestOptions): Promise<Undici.Dispatcher.ResponseData> {
  const { dispatcher, ...rest } = options;
  const target = new URL(url);
  return dispatcherRequest.call(dispatcher, { ...rest, origin: target.origin, path: `${target.pathname}${target.search}` });
}
