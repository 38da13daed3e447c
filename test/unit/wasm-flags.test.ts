// Which runtime gets --liftoff-only, and how: set at run time where V8 applies it (Node 20), the
// process started again with it where Node has process.execve (there the run-time flag is ignored).
import { describe, expect, it } from 'vitest';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { chooseWasmTiering, LIFTOFF_ONLY, type Runtime } from '../../server/src/cli/wasm-flags.ts';

const base = { version: '0.1', storage: { filesystem: { rootdirectory: '/tmp/rs-wasm-flags' } }, http: { addr: '127.0.0.1:0' } };
const mirror = loadConfigObject({ ...base, proxy: { remoteurl: 'http://127.0.0.1:1' } }, {}, 'test').config;
const privateRegistry = loadConfigObject(base, {}, 'test').config;
const replica = loadConfigObject({ ...base, proxy: { remoteurl: 'http://127.0.0.1:1' }, redis: { addr: '127.0.0.1:6379' } }, {}, 'test').config;

class Replaced extends Error {}

function runtime(options: { execve: boolean; execArgv?: string[] }) {
  const calls: { execve?: [string, string[], NodeJS.ProcessEnv]; flags: string[] } = { flags: [] };
  const env = { MALLOC_MMAP_THRESHOLD_: '131072' };
  const rt: Runtime = {
    execPath: '/usr/bin/node',
    execArgv: options.execArgv ?? ['--max-semi-space-size=2'],
    argv: ['/usr/bin/node', '/app/server/bin/registry.mjs', 'serve', '/etc/registry/config.yml'],
    env,
    execve: options.execve
      ? (file, args, e) => {
          calls.execve = [file, args, e];
          // As the real one: it does not return.
          throw new Replaced();
        }
      : undefined,
    setFlags: (flags) => void calls.flags.push(flags),
  };
  return { rt, calls, env };
}

describe('chooseWasmTiering', () => {
  it('starts a mirror again with the flag first, its own flags, script, arguments and environment, where Node has execve', () => {
    const { rt, calls, env } = runtime({ execve: true });
    expect(() => chooseWasmTiering(mirror, rt)).toThrow(Replaced);
    expect(calls.execve).toEqual([
      '/usr/bin/node',
      ['/usr/bin/node', LIFTOFF_ONLY, '--max-semi-space-size=2', '/app/server/bin/registry.mjs', 'serve', '/etc/registry/config.yml'],
      env,
    ]);
  });

  it('does nothing more once started with the flag (no second start)', () => {
    const { rt, calls } = runtime({ execve: true, execArgv: [LIFTOFF_ONLY, '--max-semi-space-size=2'] });
    chooseWasmTiering(mirror, rt);
    expect(calls.execve).toBeUndefined();
    expect(calls.flags).toEqual([]);
  });

  it('sets the flag at run time where Node has no execve (Node 20 applies it)', () => {
    const { rt, calls } = runtime({ execve: false });
    chooseWasmTiering(mirror, rt);
    expect(calls.flags).toEqual([LIFTOFF_ONLY]);
  });

  it('never starts a private registry again (it parses no upstream responses)', () => {
    const { rt, calls } = runtime({ execve: true });
    chooseWasmTiering(privateRegistry, rt);
    expect(calls.execve).toBeUndefined();
    expect(calls.flags).toEqual([LIFTOFF_ONLY]);
  });

  it('leaves V8 as it is with a redis section (hash-wasm needs TurboFan there)', () => {
    for (const execve of [true, false]) {
      const { rt, calls } = runtime({ execve });
      chooseWasmTiering(replica, rt);
      expect(calls.execve).toBeUndefined();
      expect(calls.flags).toEqual([]);
    }
  });
});
