// A minimal Docker Engine API client over the unix socket: list, inspect,
// restart, unpause, one-shot stats. Unversioned paths: the daemon answers
// them with its current API version.
import * as z from 'zod';
import { httpRequest } from './http.ts';

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

const summary = z.looseObject({
  Id: z.string(),
  Names: z.array(z.string()).default([]),
  State: z.string().default(''),
  Status: z.string().default(''),
  Labels: z.record(z.string(), z.string()).nullish(),
});
export type ContainerSummary = z.infer<typeof summary>;

const inspect = z.looseObject({
  Id: z.string(),
  Name: z.string().default(''),
  RestartCount: z.number().optional(),
  State: z.looseObject({
    Status: z.string().default(''),
    Running: z.boolean().default(false),
    Paused: z.boolean().optional(),
    Restarting: z.boolean().optional(),
    ExitCode: z.number().optional(),
    OOMKilled: z.boolean().optional(),
    Health: z
      .looseObject({
        Status: z.string(),
        FailingStreak: z.number().optional(),
        Log: z.array(z.looseObject({ ExitCode: z.number().optional(), Output: z.string().optional() })).nullish(),
      })
      .nullish(),
  }),
});
export type ContainerInspect = z.infer<typeof inspect>;

const stats = z.looseObject({
  memory_stats: z
    .looseObject({
      usage: z.number().optional(),
      limit: z.number().optional(),
      stats: z.record(z.string(), z.number()).optional(),
    })
    .default({}),
});

export interface MemoryUsage {
  /** usage minus inactive page cache, as `docker stats` shows it. */
  workingSetBytes: number;
  /** memory_stats.usage as the daemon reports it. */
  usageBytes: number;
  limitBytes?: number;
}

export class DockerError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'DockerError';
  }
}

export class DockerClient {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 10_000,
  ) {}

  private async call(method: string, path: string, timeoutMs = this.timeoutMs, body?: unknown): Promise<unknown> {
    const res = await this.raw(method, path, timeoutMs, body);
    if (res.body.length === 0) return undefined;
    return res.json();
  }

  private async raw(method: string, path: string, timeoutMs: number, body?: unknown) {
    const res = await httpRequest({
      url: `http://docker${path}`,
      socketPath: this.socketPath,
      method,
      headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      timeoutMs,
    });
    if (res.status < 200 || res.status >= 300) {
      let message = res.text().trim();
      try {
        const body = res.json() as { message?: string };
        if (body && typeof body.message === 'string') message = body.message;
      } catch {
        /* not JSON */
      }
      throw new DockerError(`${method} ${path.split('?')[0]}: HTTP ${res.status}${message ? ` ${message}` : ''}`, res.status);
    }
    return res;
  }

  async list(): Promise<ContainerSummary[]> {
    return z.array(summary).parse(await this.call('GET', '/containers/json?all=1'));
  }

  async inspect(id: string): Promise<ContainerInspect> {
    return inspect.parse(await this.call('GET', `/containers/${encodeURIComponent(id)}/json`));
  }

  /** Restarts (or starts, if stopped) the container; waits up to `stopSeconds` for it to stop. */
  async restart(id: string, stopSeconds = 30): Promise<void> {
    await this.call('POST', `/containers/${encodeURIComponent(id)}/restart?t=${stopSeconds}`, (stopSeconds + 60) * 1000);
  }

  async unpause(id: string): Promise<void> {
    await this.call('POST', `/containers/${encodeURIComponent(id)}/unpause`);
  }

  /**
   * Runs `cmd` in the container (docker exec) and waits for it: its exit code
   * and its output (stdout and stderr, demultiplexed).
   */
  async exec(container: string, cmd: string[], timeoutMs = 120_000): Promise<{ exitCode: number | null; output: string }> {
    const created = z
      .object({ Id: z.string() })
      .parse(await this.call('POST', `/containers/${encodeURIComponent(container)}/exec`, this.timeoutMs, { AttachStdout: true, AttachStderr: true, Tty: false, Cmd: cmd }));
    // Not detached: the daemon streams the output and closes when the command is done.
    const started = await this.raw('POST', `/exec/${encodeURIComponent(created.Id)}/start`, timeoutMs, { Detach: false, Tty: false });
    const output = demultiplex(started.body);
    const info = z
      .looseObject({ ExitCode: z.number().nullable().optional(), Running: z.boolean().optional() })
      .parse(await this.call('GET', `/exec/${encodeURIComponent(created.Id)}/json`));
    return { exitCode: info.Running ? null : (info.ExitCode ?? null), output };
  }

  async memory(id: string): Promise<MemoryUsage | undefined> {
    const s = stats.parse(await this.call('GET', `/containers/${encodeURIComponent(id)}/stats?stream=false&one-shot=true`));
    const m = s.memory_stats;
    if (m.usage === undefined) return undefined;
    // cgroup v2: inactive_file; cgroup v1: total_inactive_file (what docker stats subtracts).
    const inactive = m.stats?.inactive_file ?? m.stats?.total_inactive_file ?? 0;
    return {
      usageBytes: m.usage,
      workingSetBytes: inactive < m.usage ? m.usage - inactive : m.usage,
      limitBytes: m.limit,
    };
  }
}

/**
 * Docker's multiplexed stream (no TTY): frames of [stream, 0, 0, 0, size (u32 BE)]
 * followed by `size` bytes. Anything that does not parse as frames is taken as plain text.
 */
export function demultiplex(buf: Buffer): string {
  const parts: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length) {
    const stream = buf[i];
    if (stream > 2 || buf[i + 1] !== 0 || buf[i + 2] !== 0 || buf[i + 3] !== 0) return buf.toString('utf8');
    const size = buf.readUInt32BE(i + 4);
    parts.push(buf.subarray(i + 8, i + 8 + size));
    i += 8 + size;
  }
  if (i < buf.length) return buf.toString('utf8');
  return Buffer.concat(parts).toString('utf8');
}

/** The container's names without the leading slash. */
export function containerNames(c: ContainerSummary): string[] {
  return c.Names.map((n) => n.replace(/^\//, ''));
}

/** Find a container by exact name, else by compose service label. */
export function findContainer(list: ContainerSummary[], name: string): ContainerSummary | undefined {
  return (
    list.find((c) => containerNames(c).includes(name)) ??
    list.find((c) => c.Labels?.['com.docker.compose.service'] === name)
  );
}

/** Health from the list's Status text: "Up 3 hours (healthy)", "(unhealthy)", "(health: starting)". */
export function healthFromStatus(status: string): string | undefined {
  const m = /\((healthy|unhealthy|health: starting)\)/.exec(status);
  if (!m) return undefined;
  return m[1] === 'health: starting' ? 'starting' : m[1];
}
