// The worker side of fill-writer.ts: hashes cache fills' bytes and writes
// them to their upload files, so that neither SHA-256 nor the file writes run
// on the event loop that serves clients. The bytes arrive in a ring of shared
// memory (no copy per message, no buffer for the garbage collector); the
// messages only say where they are. Plain JavaScript, so that the worker runs
// without a TypeScript loader (in development and tests as in dist/).
//
// Messages in (each job's in order):
//   { t: 'open', id, algorithm, file? }   file: absolute path to create, or none (hash only)
//   { t: 'data', copied }                  for each [id, off, len, cost] in `copied`: the job's next bytes
//                                          at ring[off, off + len); cost: the ring bytes they took (len,
//                                          and those skipped before off)
//   { t: 'end', id }                       all bytes sent: answer the digest
//   { t: 'abort', id }                     close the job's file, answered as done with the error 'aborted'
//                                          (the file is the caller's to delete)
// Message out, once per batch of messages handled:
//   { released, progress: [id, stored, error?][], done: [id, hex?, error?][] }
// where released counts every ring byte handed back since the start.
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';

const ring = new Uint8Array(workerData.ring);
/** id → { hash, fd, stored, error } */
const jobs = new Map();
let released = 0;
/** `released` as last told. */
let told = 0;

function open(msg, touched) {
  const job = { hash: createHash(msg.algorithm), fd: -1, stored: 0, error: undefined };
  jobs.set(msg.id, job);
  if (msg.file === undefined) return;
  try {
    mkdirSync(dirname(msg.file), { recursive: true });
    job.fd = openSync(msg.file, 'w', 0o644);
  } catch (err) {
    job.error = err.message;
    touched.set(msg.id, job);
  }
}

function close(job) {
  if (job.fd < 0) return;
  try {
    closeSync(job.fd);
  } catch {
    // Nothing to do: the caller deletes or commits the file either way.
  }
  job.fd = -1;
}

function data(id, off, len, cost, touched) {
  // The ring's bytes (and those skipped before them) go back whatever became of the job: the caller counts on them.
  released += cost;
  const job = jobs.get(id);
  if (!job) return;
  touched.set(id, job);
  if (job.error) return;
  const bytes = ring.subarray(off, off + len);
  try {
    job.hash.update(bytes);
    if (job.fd >= 0) for (let at = 0; at < bytes.length; ) at += writeSync(job.fd, bytes, at);
  } catch (err) {
    job.error = err.message;
  }
  if (!job.error) job.stored += len;
}

function handle(msg, touched, done) {
  if (msg.t === 'data') {
    const c = msg.copied;
    for (let i = 0; i < c.length; i += 4) data(c[i], c[i + 1], c[i + 2], c[i + 3], touched);
    return;
  }
  if (msg.t === 'open') return open(msg, touched);
  const job = jobs.get(msg.id);
  if (!job) {
    done.push([msg.id, undefined, msg.t === 'abort' ? 'aborted' : 'no such job']);
    return;
  }
  jobs.delete(msg.id);
  close(job);
  if (msg.t === 'abort') done.push([msg.id, undefined, 'aborted']);
  else done.push(job.error ? [msg.id, undefined, job.error] : [msg.id, job.hash.digest('hex')]);
}

parentPort.on('message', (first) => {
  /** Jobs that took bytes: id → job (an ended job too: its last progress goes before its end). */
  const touched = new Map();
  const done = [];
  handle(first, touched, done);
  // Whatever else is queued is handled before answering: one answer for many messages when the worker is behind.
  for (let next = receiveMessageOnPort(parentPort); next; next = receiveMessageOnPort(parentPort)) handle(next.message, touched, done);
  const progress = [];
  for (const [id, job] of touched) {
    progress.push(job.error ? [id, job.stored, job.error] : [id, job.stored]);
  }
  if (progress.length === 0 && done.length === 0 && released === told) return;
  told = released;
  parentPort.postMessage({ released, progress, done });
});
