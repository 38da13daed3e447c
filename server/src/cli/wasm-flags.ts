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
// Node 20 applies the flag set here; Node 24 (the container image) reads its
// WebAssembly flags only at start and ignores it (its first pulls lift the
// peak as before).
import { setFlagsFromString } from 'node:v8';
import type { RegistryConfig } from '../config/schema.ts';

/** Call before anything compiles WebAssembly (undici compiles llhttp at its first connection). */
export function chooseWasmTiering(config: RegistryConfig): void {
  if (config.redis) return;
  setFlagsFromString('--liftoff-only');
}
