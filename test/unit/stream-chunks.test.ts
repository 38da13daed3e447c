// A stream's chunks one by one: the very buffers pushed, in order, also those
// that piled up while the consumer was busy (for-await would hand those out
// copied into one); the stream's end, error or early close reach the consumer;
// leaving the loop early destroys the stream; a busy consumer pauses it.
import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { streamChunks } from '../../server/src/storage/stream-chunks.ts';

/** A byte stream the test feeds by hand. */
function source(): Readable {
  return new Readable({ read() {} });
}

describe('streamChunks', () => {
  it('yields each pushed buffer itself, in order, also those that waited while the consumer was busy', async () => {
    const stream = source();
    const pushed = [Buffer.from('a'), Buffer.from('bb'), Buffer.from('ccc'), Buffer.from('dddd')];
    stream.push(pushed[0]);
    const got: Buffer[] = [];
    for await (const chunk of streamChunks(stream)) {
      got.push(chunk);
      if (got.length === 1) {
        // Three more arrive while this chunk is in hand: for-await would read them as one copied buffer.
        for (const c of pushed.slice(1)) stream.push(c);
        stream.push(null);
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    expect(got.length).toBe(4);
    got.forEach((chunk, i) => expect(chunk).toBe(pushed[i]));
  });

  it('ends at once for a stream that has already ended', async () => {
    const stream = Readable.from([]);
    await once(stream.resume(), 'end');
    const got: Buffer[] = [];
    for await (const chunk of streamChunks(stream)) got.push(chunk);
    expect(got).toEqual([]);
  });

  it('hands out what arrived before an error, then throws the error', async () => {
    const stream = source();
    const first = Buffer.from('first');
    stream.push(first);
    setImmediate(() => stream.destroy(new Error('upstream reset')));
    const got: Buffer[] = [];
    await expect(
      (async () => {
        for await (const chunk of streamChunks(stream)) got.push(chunk);
      })(),
    ).rejects.toThrow('upstream reset');
    expect(got).toEqual([first]);
  });

  it('throws when the stream closes before its end', async () => {
    const stream = source();
    setImmediate(() => stream.destroy());
    await expect(
      (async () => {
        for await (const _ of streamChunks(stream)) expect.unreachable();
      })(),
    ).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('destroys the stream when the consumer leaves the loop early, and stops listening to it', async () => {
    const stream = source();
    stream.push(Buffer.from('x'));
    for await (const _ of streamChunks(stream)) break;
    expect(stream.destroyed).toBe(true);
    expect(stream.listenerCount('data')).toBe(0);
  });

  it('pauses the stream while the consumer is busy, so what it holds stays bounded', async () => {
    let reads = 0;
    const stream = new Readable({
      highWaterMark: 4,
      read() {
        reads++;
        this.push(Buffer.alloc(1, reads));
      },
    });
    const chunks = streamChunks(stream);
    await chunks.next();
    const readsThen = reads;
    // The consumer holds its chunk for a while: the stream fills its buffer (highWaterMark) and stops reading.
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(stream.isPaused()).toBe(true);
    expect(reads - readsThen).toBeLessThanOrEqual(5);
    expect(stream.readableLength).toBeLessThanOrEqual(5);
    await chunks.return();
    expect(stream.destroyed).toBe(true);
  });

  it('reads an HTTP request body whole, chunk by chunk, as a server receives it', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 4096) body.writeUInt32BE(i, i);
    const server = http.createServer(async (req, res) => {
      const parts: Buffer[] = [];
      for await (const chunk of streamChunks(req)) {
        parts.push(chunk);
        // A slow consumer, as the storage is: chunks pile up in the request meanwhile.
        if (parts.length % 8 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
      }
      res.end(String(Buffer.concat(parts).equals(body)));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}/`, { method: 'PUT', body });
      expect(await res.text()).toBe('true');
    } finally {
      server.close();
    }
  });
});
