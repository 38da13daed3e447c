// Machine noise: how much CPU did processes other than the two servers and
// the bench itself (with its wrk/curl children) use while a figure was being
// measured, and how much did the hypervisor steal? On a shared 2-core machine
// a busy neighbour (a test suite, a type check) can halve a row; the table
// reports this next to the figures so an odd row can be told from a real one.
// With --storage s3 the object store's daemons (ceph-mon, ceph-osd, radosgw)
// are part of what is measured, not neighbours: their CPU is counted apart
// (storeCores), neither as the servers' nor as other processes'.
import { readFileSync } from 'node:fs';

const HZ = 100; // USER_HZ on Linux

interface Snapshot {
  t: bigint;
  busy: number;
  steal: number;
  pids: number;
  store: number;
  self: number;
}

export interface Noise {
  seconds: number;
  /** CPU used by everything else, in cores (0..ncpu). */
  otherCores: number;
  /** CPU stolen by the hypervisor, in cores. */
  stealCores: number;
  /** CPU used by the measured servers, in cores. */
  serverCores: number;
  /** CPU used by the bench and its load generators, in cores. */
  clientCores: number;
  /** CPU used by the object store's processes (--storage s3), in cores. */
  storeCores: number;
}

function systemTimes(): { busy: number; steal: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user).
  // irq/softirq are left out: loopback TCP is processed in softirq context, so
  // they grow with the measured transfer itself (more with sendfile), not with neighbours.
  const [user, nice, system, , , , , steal] = f;
  return { busy: user + nice + system, steal: steal ?? 0 };
}

/** utime+stime (+ cutime+cstime of reaped children when `children`), in ticks. */
function procTicks(pid: number | 'self', children = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    // after "pid (comm) ": state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(11) stime(12) cutime(13) cstime(14)
    return f[11] + f[12] + (children ? f[13] + f[14] : 0);
  } catch {
    return 0;
  }
}

export class CpuMeter {
  constructor(
    private readonly serverPids: () => number[],
    private readonly storePids: () => number[] = () => [],
  ) {}

  snapshot(): Snapshot {
    const { busy, steal } = systemTimes();
    return {
      t: process.hrtime.bigint(),
      busy,
      steal,
      pids: this.serverPids().reduce((a, pid) => a + procTicks(pid), 0),
      store: this.storePids().reduce((a, pid) => a + procTicks(pid), 0),
      self: procTicks('self', true),
    };
  }

  since(a: Snapshot): Noise {
    const b = this.snapshot();
    const seconds = Number(b.t - a.t) / 1e9;
    const cores = (ticks: number) => (seconds > 0 ? Math.max(0, ticks / HZ / seconds) : 0);
    const server = b.pids - a.pids;
    const client = b.self - a.self;
    const store = b.store - a.store;
    return {
      seconds,
      otherCores: cores(b.busy - a.busy - server - client - store),
      stealCores: cores(b.steal - a.steal),
      serverCores: cores(server),
      clientCores: cores(client),
      storeCores: cores(store),
    };
  }

  async measure<T>(fn: () => Promise<T>): Promise<{ result: T; noise: Noise }> {
    const a = this.snapshot();
    const result = await fn();
    return { result, noise: this.since(a) };
  }
}

/** Load average and the busiest other processes right now (for the report header). */
export function loadAverage(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

/**
 * Waits (up to `maxWaitMs`) for a second in which other processes use less
 * than `threshold` cores, so a measurement doesn't start in the middle of a
 * neighbour's burst. The object store counts here too: what it still does
 * for the previous measurement (writeback, garbage collection of deleted
 * objects) must not land in the next one. Returns the other-process and
 * store load of the last window.
 */
export async function waitQuiet(
  meter: CpuMeter,
  threshold: number,
  maxWaitMs: number,
): Promise<{ waitedMs: number; otherCores: number; storeCores: number }> {
  const t0 = Date.now();
  for (;;) {
    const a = meter.snapshot();
    await new Promise((r) => setTimeout(r, 1000));
    const { otherCores, storeCores } = meter.since(a);
    const waitedMs = Date.now() - t0;
    if (otherCores + storeCores < threshold || waitedMs >= maxWaitMs) return { waitedMs, otherCores, storeCores };
  }
}
