// WebAssembly tiering, chosen once the configuration is known.
//
// The mirror's upstream client (undici) parses HTTP with llhttp compiled to
// WebAssembly. V8 runs it in its baseline compiler (Liftoff) and, once it is
// hot, recompiles it with TurboFan: for llhttp's one very large function that
// took 37.6 MB of compiler memory (heaptrack, the peak's largest consumer), so
// a mirror's first pulls lifted its VmHWM from 75 to 130 MB. Parsing
// responses whose bodies are long spans of bytes gains nothing measurable
// from TurboFan (600 MB of blob GETs: the same CPU time, within the noise).
// The other WebAssembly we run, hash-wasm's resumable SHA-256, does need it
// (19 MB/s without, against 190): it is loaded only with a redis section
// (replicas share upload hash state), so those keep V8's default.
//
// Node 20 applies the flag when it is set at run time. Node 24 (the container
// image) reads its WebAssembly flags only at start and ignores it, so there a
// mirror replaces its process with the same command plus the flag
// (process.execve, before it has started anything: no thread, no listener, no
// output yet), and starts again with it, about 0.2 s later.
import { setFlagsFromString } from 'node:v8';
import type { RegistryConfig } from '../config/schema.ts';

export const LIFTOFF_ONLY = '--liftoff-only';

/** What chooseWasmTiering needs of the process (the tests pass their own). */
export interface Runtime {
  execPath: string;
  execArgv: string[];
  argv: string[];
  env: NodeJS.ProcessEnv;
  /** process.execve where Node has it (22.15 and later), which is where the run-time flag is ignored. */
  execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never;
  setFlags(flags: string): void;
}

const thisProcess = (): Runtime => ({
  execPath: process.execPath,
  execArgv: process.execArgv,
  argv: process.argv,
  env: process.env,
  execve: (process as { execve?: Runtime['execve'] }).execve?.bind(process),
  setFlags: setFlagsFromString,
});

/**
 * Call before anything compiles WebAssembly (undici compiles llhttp at its first connection) and
 * before the server starts anything: on Node 24 it may replace the process (and not return).
 */
export function chooseWasmTiering(config: RegistryConfig, runtime: Runtime = thisProcess()): void {
  if (config.redis || runtime.execArgv.includes(LIFTOFF_ONLY)) return;
  // Only a mirror talks to upstreams much (undici elsewhere: a token server's keys, now and then).
  if (runtime.execve && config.proxy) {
    runtime.execve(runtime.execPath, [runtime.execPath, LIFTOFF_ONLY, ...runtime.execArgv, ...runtime.argv.slice(1)], runtime.env);
  }
  runtime.setFlags(LIFTOFF_ONLY);
}
