// The web UI's code is loaded by its first request: a registry nobody browses
// never holds its pages, sessions or caches in memory.
import type { UiHandler, UiOptions } from './handler.ts';

export function lazyUi(options: UiOptions): UiHandler {
  let handler: Promise<UiHandler> | undefined;
  return async (req, res, request) => {
    handler ??= import('./handler.ts').then((m) => m.createUi(options));
    return (await handler)(req, res, request);
  };
}
