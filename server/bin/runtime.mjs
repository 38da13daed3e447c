// How the server's Node process is started wherever we start it for real:
// `npm start` (package.json), the container image (server/Dockerfile), the
// bin run as a program (its #! line) and the bench's "ours". Those three
// files cannot import this one; test/unit/build.test.ts keeps them in step.

/**
 * V8 flags. --optimize-for-size: V8's heap heuristics for memory over speed, and
 * a young generation of 1 MB semi-spaces (it implies --max-semi-space-size=1).
 * The full bench, side by side with --max-semi-space-size=2 alone: the mirror
 * phase's peak 93 MB against 99, 64 concurrent cold fills 147 against 167, 63.4
 * at start against 65.7, the throughput rows (GET, push, cold and warm mirror
 * pulls) the same within the machine's noise (cold pull: median 183 MB/s in
 * both, and as many CPU-seconds per GB), request rates 5 to 15 % lower on some
 * rows, still 4 to 15 times distribution's. Before it, --max-semi-space-size=2
 * (MB): the young generation otherwise grows
 * to 2 × 16 MB, pages that stay resident once touched. At 2 MB the server
 * started 4 MB smaller (79 MB against 83) and peaked 15 to 25 MB lower through
 * a 200 MB push and GET, with no CPU difference above the noise of a shared
 * 2-core machine (1 MB: no smaller; 4 MB: the peak in between).
 * --single-threaded-gc: the heap is small (15 to 20 MB), so marking it on
 * V8's helper threads saves little pause time, while on a busy host those
 * threads compete with the event loop and the fill worker for the cores: a
 * 300 MB cold mirror pull on 2 cores took a median of 0.89 s with it against
 * 1.03 s without (5 runs each; the process's CPU 0.99 against 1.20 s), and
 * the bench's cold-pull row went from 0.74x to 0.86x of distribution.
 * --heap-growing-percent=20: after a full GC, V8 lets the old generation grow
 * to 1.2 times what survived before the next one (by default, a factor that
 * starts higher and adapts). Under many small requests (32 connections of
 * authenticated manifest GETs), objects of requests in flight are promoted at
 * every young GC, and the old generation grew to 31 MB for 17 MB alive: the
 * server peaked at 102 to 105 MB, and at 83 to 87 MB with the flag, serving as
 * many requests (12,000 to 14,000 req/s in both, 2 runs of 3 each); the bench's
 * auth phase peak went from 106 to 92 MB, the push and mirror rows unchanged.
 */
export const NODE_FLAGS = ['--optimize-for-size', '--single-threaded-gc', '--heap-growing-percent=20'];

/**
 * Environment. MALLOC_MMAP_THRESHOLD_ pins glibc's threshold at its default
 * (128 KB) and so turns off its "dynamic" raising: after the first large
 * buffer is freed, glibc would serve the next ones from its heap, and
 * memory freed there stays in RSS (100 stalled downloads left 60 MB behind
 * after they closed). Held at 128 KB, blob buffers are mmapped and go back
 * to the system when they are freed.
 */
export const NODE_ENV = { MALLOC_MMAP_THRESHOLD_: '131072' };
