// Freeing a buffer's memory now rather than at the next GC.
//
// Bytes that pass through the server arrive in chunks that Node allocates
// outside V8's heap (an HTTP body's copies, a socket's reads). A chunk is
// released only by a GC, and V8 starts one by how its own heap fills, not by
// how much such memory is waiting: tens of megabytes of chunks pile up between
// collections, and new chunks land on fresh pages instead of the ones just
// used. Code that knows it holds the last reference to a chunk frees it here.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Transfer = (this: ArrayBuffer, length: number) => ArrayBuffer;

/**
 * ArrayBuffer.prototype.transfer: native from Node 22 on. Node 20's V8 has it
 * behind --harmony-rab-gsab-transfer, a flag Node 24 no longer accepts (so it
 * cannot go on our command lines); set at run time, it applies to contexts
 * created afterwards, so the function comes from a new, empty one (it works on
 * any ArrayBuffer).
 */
function findTransfer(): Transfer | undefined {
  const native = (ArrayBuffer.prototype as { transfer?: Transfer }).transfer;
  if (typeof native === 'function') return native;
  try {
    setFlagsFromString('--harmony-rab-gsab-transfer');
    const fromContext = runInNewContext('ArrayBuffer.prototype.transfer') as unknown;
    return typeof fromContext === 'function' ? (fromContext as Transfer) : undefined;
  } catch {
    return undefined;
  }
}
// Looked up at the first use, not at start: on Node 20 it sets a flag and creates a context.
let transfer: Transfer | undefined | null = null;

/**
 * Frees a chunk's memory now rather than at the next GC: detaching its
 * ArrayBuffer releases the backing store. Only a chunk that is the whole of
 * its ArrayBuffer (not a slice of Node's shared pool).
 */
export function freeChunk(chunk: Buffer): void {
  const ab = chunk.buffer;
  if (chunk.byteOffset !== 0 || chunk.byteLength !== ab.byteLength || !(ab instanceof ArrayBuffer)) return;
  if (transfer === null) transfer = findTransfer();
  transfer?.call(ab, 0);
}
