// How the server's Node process is started wherever we start it for real:
// `npm start` (package.json), the container image (server/Dockerfile), the
// bin run as a program (its #! line) and the bench's "ours". Those three
// files cannot import this one; test/unit/build.test.ts keeps them in step.

/**
 * V8 flags. --max-semi-space-size=2 (MB): the young generation otherwise grows
 * to 2 × 16 MB, pages that stay resident once touched. At 2 MB the server
 * started 4 MB smaller (79 MB against 83) and peaked 15 to 25 MB lower through
 * a 200 MB push and GET, with no CPU difference above the noise of a shared
 * 2-core machine (1 MB: no smaller; 4 MB: the peak in between).
 */
export const NODE_FLAGS = ['--max-semi-space-size=2'];

/**
 * Environment. MALLOC_MMAP_THRESHOLD_ pins glibc's threshold at its default
 * (128 KB) and so turns off its "dynamic" raising: after the first large
 * buffer is freed, glibc would serve the next ones from its heap, and
 * memory freed there stays in RSS (100 stalled downloads left 60 MB behind
 * after they closed). Held at 128 KB, blob buffers are mmapped and go back
 * to the system when they are freed.
 */
export const NODE_ENV = { MALLOC_MMAP_THRESHOLD_: '131072' };
