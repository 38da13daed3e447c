// Appending a stream to a file through two reusable buffers.
//
// An upload arrives as thousands of small chunks, each a fresh copy the HTTP
// parser made (8 to 64 KB, malloc'ed outside V8's heap). Left to the GC they
// pile up: a young GC comes only when the JS heap's young space fills, which
// at 300 MB/s is tens of megabytes of chunks later, and chunks still queued in
// a WriteStream at that moment are promoted and wait for a full GC. So each
// chunk is copied into one of two 1 MiB buffers as it arrives, the file is
// written from those, and a caller that owns the chunks has each freed at once
// (freeChunk). A 50 MB push + GET took the server's VmHWM from 64 to 103 MB
// before, to 82 MB now; 5 more 500 MB pushes added 30 MB before, 2 MB now.
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { freeChunk } from './free-chunk.ts';
import { streamChunks } from './stream-chunks.ts';

const BUFFER_SIZE = 1024 * 1024;
/** Buffers kept for the next appends; few, since each stays allocated for good. */
const POOL_MAX = 4;
const pool: Buffer[] = [];

export interface AppendToFileOptions {
  /** Called with every chunk before its bytes are copied. */
  tap?: (chunk: Buffer) => void;
  /** The chunks are the caller's alone (an HTTP request body): free each once its bytes are copied. */
  freeChunks?: boolean;
}

/**
 * Appends `source` to the file open for appending as `fh`; resolves with the
 * number of bytes written. If the source fails, the bytes received before it
 * failed are written first, then the error is thrown.
 */
export async function appendToFile(fh: FileHandle, source: Readable, options: AppendToFileOptions = {}): Promise<number> {
  const buffers = [takeBuffer(), takeBuffer()];
  let current = 0;
  let filled = 0;
  let written = 0;
  // One write in flight at a time, from the buffer that is not being filled.
  let inFlight: Promise<void> = Promise.resolve();
  const flush = async () => {
    await inFlight;
    if (filled === 0) return;
    const buffer = buffers[current];
    const length = filled;
    inFlight = writeAll(fh, buffer, length);
    // A failed write is thrown by the next flush; until then it must not count as unhandled.
    inFlight.catch(() => {});
    written += length;
    current ^= 1;
    filled = 0;
  };
  try {
    try {
      for await (const chunk of streamChunks(source)) {
        options.tap?.(chunk);
        for (let from = 0; from < chunk.length; ) {
          const n = chunk.copy(buffers[current], filled, from);
          filled += n;
          from += n;
          if (filled === BUFFER_SIZE) await flush();
        }
        if (options.freeChunks) freeChunk(chunk);
      }
    } finally {
      // What was received reaches the file, also when the source failed: its error comes after.
      await flush();
      await inFlight;
    }
    return written;
  } finally {
    // A buffer goes back only once no write reads from it.
    const giveBack = () => {
      for (const b of buffers) if (pool.length < POOL_MAX) pool.push(b);
    };
    inFlight.then(giveBack, giveBack);
  }
}

function takeBuffer(): Buffer {
  return pool.pop() ?? Buffer.allocUnsafeSlow(BUFFER_SIZE);
}

async function writeAll(fh: FileHandle, buffer: Buffer, length: number): Promise<void> {
  for (let offset = 0; offset < length; ) {
    const { bytesWritten } = await fh.write(buffer, offset, length - offset);
    offset += bytesWritten;
  }
}

