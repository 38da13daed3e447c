// The Docker Engine API over the engine's unix socket, for what the CLI cannot
// say exactly: a container created with an exec-form healthcheck and several
// settings at once, as the Pulumi Docker provider creates it (it speaks this
// API too). Everything else in the twin uses the docker CLI (docker.ts).
import { Agent, request } from 'undici';

export class EngineApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'EngineApiError';
  }
}

export interface EngineApi {
  call<T = unknown>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, o?: { raw?: Buffer; contentType?: string }): Promise<T>;
  close(): Promise<void>;
}

/** host: unix:///path/to/docker.sock */
export function engineApi(host: string): EngineApi {
  if (!host.startsWith('unix://')) throw new Error(`engineApi: only unix sockets are supported, got ${host}`);
  const agent = new Agent({ connect: { socketPath: host.slice('unix://'.length) } });
  return {
    async call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, o: { raw?: Buffer; contentType?: string } = {}) {
      const payload = o.raw ?? (body === undefined ? undefined : JSON.stringify(body));
      const res = await request(`http://docker/v1.41${path}`, {
        method,
        dispatcher: agent,
        headers: payload === undefined ? {} : { 'content-type': o.contentType ?? 'application/json' },
        body: payload,
      });
      const text = await res.body.text();
      if (res.statusCode >= 400) {
        let message = text;
        try {
          message = (JSON.parse(text) as { message?: string }).message ?? text;
        } catch {
          // not JSON: keep the text
        }
        throw new EngineApiError(res.statusCode, `${method} ${path}: ${res.statusCode} ${message.trim()}`);
      }
      return (text ? JSON.parse(text) : undefined) as T;
    },
    close: () => agent.close(),
  };
}
