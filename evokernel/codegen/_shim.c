/* evokernel's native helper, linked with a standalone Halide runtime into one
 * shared library that is loaded once per process (RTLD_GLOBAL); every compiled
 * kernel resolves its halide_* symbols against it.
 *
 * - Errors: the AOT runtime's default handler calls abort(); ours keeps the
 *   message (per thread) and returns, so the pipeline returns an error code.
 * - Timing: the kernel is called through its generated `<name>_argv` entry point
 *   in a C loop, so Python's call overhead never enters a measurement; on one
 *   set of buffers or on copies in turn, its inputs rewritten by the caller
 *   before each call or not.
 * - GPU targets: the arrays are host memory. Inputs are marked host-dirty so
 *   Halide copies them to the device; after the call (or the timed calls, which
 *   keep the data on the device) the output (the last buffer) is copied back and
 *   every device allocation is released, so NumPy sees the result and the next
 *   call starts clean. On CPU targets buffers have no device and this costs nothing.
 * - Parallel loops on another library's OpenMP threads: once given that
 *   library's GOMP_parallel, a thread that turns `evokernel_openmp_calls` on runs
 *   its kernels' parallel loops on the same OpenMP team as that library's own
 *   work (PyTorch's), so two thread pools never share the cores, one of them
 *   spinning; every other call keeps Halide's pool.
 * - Parallel loops on a pool that spins a while after each loop (`evokernel_spin`),
 *   so kernels called in a row, with a little other work between them, find its
 *   threads awake; Halide's own pool sleeps almost at once.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "HalideRuntime.h"

static __thread char last_error[4096];

static void keep_error(void *user_context, const char *msg) {
    (void)user_context;
    snprintf(last_error, sizeof last_error, "%s", msg);
}

void evokernel_install_error_handler(void) { halide_set_error_handler(keep_error); }

const char *evokernel_last_error(void) { return last_error; }

void evokernel_clear_error(void) { last_error[0] = 0; }

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void mark_inputs(void **args, int count) {
    for (int i = 0; i < count - 1; i++) ((halide_buffer_t *)args[i])->flags |= halide_buffer_flag_host_dirty;
}

/* Copy the output back to the host and free every device allocation; keeps the first error. */
static int finish(void **args, int count, int rc) {
    halide_buffer_t *out = (halide_buffer_t *)args[count - 1];
    if (rc == 0 && out->device) rc = halide_copy_to_host(NULL, out);
    for (int i = 0; i < count; i++) {
        halide_buffer_t *buf = (halide_buffer_t *)args[i];
        if (buf->device) {
            int err = halide_device_free(NULL, buf);
            if (rc == 0) rc = err;
        }
    }
    return rc;
}

/* One call of fn on `count` buffers (inputs, then the output). */
int evokernel_call(int (*fn)(void **), void **args, int count) {
    mark_inputs(args, count);
    return finish(args, count, fn(args));
}

/* Write every cache line of each input's host memory (the value it holds), so the
 * inputs sit in this thread's cache and in no other core's, as a layer that just
 * computed them on this thread leaves them. */
static void rewrite_inputs(void **args, int count) {
    for (int i = 0; i < count - 1; i++) {
        const halide_buffer_t *buf = (const halide_buffer_t *)args[i];
        if (!buf->host || buf->device) continue;
        size_t bytes = (size_t)((buf->type.bits + 7) / 8);
        for (int d = 0; d < buf->dimensions; d++) bytes *= (size_t)buf->dim[d].extent;
        volatile uint8_t *p = buf->host;
        for (size_t at = 0; at < bytes; at += 64) p[at] = p[at];
        if (bytes) p[bytes - 1] = p[bytes - 1];
    }
}

/* Call fn `iters` times, in turn on each of `sets` sets of `count` buffers (`args`
 * holds them set after set), writing each call's seconds into times[]. With enough
 * sets, each call finds its output and inputs where the calls before left them, out
 * of the cores' own caches, as a layer of a network finds the buffer it writes and
 * its weights. With `fresh`, each call's inputs are rewritten by this thread first
 * (untimed): a kernel whose threads each read all of an input pays for bringing it
 * to their cores, as it does after the layer before it in a network. Stops at the
 * first non-zero return code and returns it. */
int evokernel_time_sets(int (*fn)(void **), void **args, int count, int sets, int iters, double *times,
                        int fresh) {
    int rc = 0;
    for (int s = 0; s < sets; s++) mark_inputs(args + (size_t)s * count, count);
    for (int i = 0; i < iters && rc == 0; i++) {
        void **set = args + (size_t)(i % sets) * count;
        if (fresh) rewrite_inputs(set, count);
        double start = now_seconds();
        rc = fn(set);
        halide_buffer_t *out = (halide_buffer_t *)set[count - 1];
        if (rc == 0 && out->device) rc = halide_device_sync(NULL, out);  /* GPU calls are asynchronous */
        times[i] = now_seconds() - start;
    }
    for (int s = 0; s < sets; s++) rc = finish(args + (size_t)s * count, count, rc);
    return rc;
}

/* -- parallel loops on OpenMP ---------------------------------------------------------- */
typedef void (*gomp_parallel_t)(void (*)(void *), void *, unsigned, unsigned);
static gomp_parallel_t gomp_parallel;
static __thread int on_openmp;

struct openmp_loop {
    void *user_context;
    halide_task_t task;
    int min, size, next, rc;
    uint8_t *closure;
};

/* Each thread of the team takes the loop's next iteration until none is left. */
static void openmp_worker(void *data) {
    struct openmp_loop *loop = (struct openmp_loop *)data;
    int was = on_openmp;
    on_openmp = 1;  /* a nested parallel loop stays on OpenMP (a team of one) */
    for (int i; (i = __atomic_fetch_add(&loop->next, 1, __ATOMIC_RELAXED)) < loop->size;) {
        int rc = loop->task(loop->user_context, loop->min + i, loop->closure);
        if (rc != 0) __atomic_store_n(&loop->rc, rc, __ATOMIC_RELAXED);
    }
    on_openmp = was;
}

static int openmp_par_for(void *user_context, halide_task_t task, int min, int size, uint8_t *closure) {
    struct openmp_loop loop = {user_context, task, min, size, 0, 0, closure};
    gomp_parallel(openmp_worker, &loop, 0, 0);  /* 0 threads: the library's own setting */
    return loop.rc;
}

static int spin_par_for(void *user_context, halide_task_t task, int min, int size, uint8_t *closure);
static double spin_seconds;  /* > 0: parallel loops run on the spinning pool below */

static int do_par_for(void *user_context, halide_task_t task, int min, int size, uint8_t *closure) {
    if (on_openmp && size >= 2) return openmp_par_for(user_context, task, min, size, closure);
    if (spin_seconds > 0) return spin_par_for(user_context, task, min, size, closure);
    return halide_default_do_par_for(user_context, task, min, size, closure);
}

/* Take `fn` (an OpenMP runtime's GOMP_parallel) for the calls that ask for it. */
void evokernel_use_openmp(void *fn) {
    gomp_parallel = (gomp_parallel_t)fn;
    halide_set_custom_do_par_for(do_par_for);
}

/* Turn this thread's OpenMP calls on (1) or off (0); returns the previous setting. */
int evokernel_openmp_calls(int on) {
    int was = on_openmp;
    on_openmp = on && gomp_parallel != NULL;
    return was;
}

/* -- a pool whose workers spin between parallel loops ----------------------------------- *
 * Halide's own workers sleep a few microseconds after a loop, so a kernel called again
 * after a little other work (Python, the next layer's bookkeeping) first waits for
 * the kernel to wake them. These spin for `spin_seconds` after each loop, then sleep
 * on a futex. One caller at a time uses the pool; the caller takes iterations too and
 * alone would finish the loop, so a worker that is late (or missing, in a forked
 * child) never blocks it. A loop nested in an iteration, or one started while another
 * thread holds the pool, runs without it (serially, or on Halide's pool). */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define SPIN_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define SPIN_PAUSE() __asm__ __volatile__("yield")
#else
#define SPIN_PAUSE() ((void)0)
#endif

static struct {        /* the loop in flight: written only while no iteration of it can be claimed */
    void *user_context;
    halide_task_t task;
    uint8_t *closure;
    int min, size;
} spin_loop;
static uint64_t spin_claim;      /* generation << 32 | the next iteration to claim */
static uint32_t spin_generation; /* futex word, one more per loop */
static int spin_done, spin_rc, spin_sleepers, spin_held, spin_workers, spin_threads;
static __thread int in_spin_iteration;

/* Claim and run iterations of loop `generation` until none is left. */
static void spin_run(uint32_t generation) {
    for (;;) {
        uint64_t claim = __atomic_load_n(&spin_claim, __ATOMIC_ACQUIRE);
        if ((uint32_t)(claim >> 32) != generation) return;
        int next = (int)(uint32_t)claim, size = __atomic_load_n(&spin_loop.size, __ATOMIC_RELAXED);
        halide_task_t task = __atomic_load_n(&spin_loop.task, __ATOMIC_RELAXED);
        void *user_context = __atomic_load_n(&spin_loop.user_context, __ATOMIC_RELAXED);
        uint8_t *closure = __atomic_load_n(&spin_loop.closure, __ATOMIC_RELAXED);
        int min = __atomic_load_n(&spin_loop.min, __ATOMIC_RELAXED);
        if (next >= size) return;
        /* success proves the loop was still `generation`, so the fields read above are its own */
        if (!__atomic_compare_exchange_n(&spin_claim, &claim, claim + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;
        in_spin_iteration = 1;
        int rc = task(user_context, min + next, closure);
        in_spin_iteration = 0;
        if (rc) __atomic_store_n(&spin_rc, rc, __ATOMIC_RELAXED);
        __atomic_add_fetch(&spin_done, 1, __ATOMIC_RELEASE);
    }
}

static void *spin_worker(void *unused) {
    (void)unused;
    uint32_t seen = __atomic_load_n(&spin_generation, __ATOMIC_ACQUIRE);
    for (;;) {
        double until = now_seconds() + spin_seconds;
        uint32_t generation;
        while ((generation = __atomic_load_n(&spin_generation, __ATOMIC_ACQUIRE)) == seen) {
            if (now_seconds() < until) {
                SPIN_PAUSE();
                continue;
            }
            __atomic_add_fetch(&spin_sleepers, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&spin_generation, __ATOMIC_SEQ_CST) == seen)
                syscall(SYS_futex, &spin_generation, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
            __atomic_sub_fetch(&spin_sleepers, 1, __ATOMIC_SEQ_CST);
            until = now_seconds() + spin_seconds;
        }
        seen = generation;
        spin_run(generation);
    }
    return NULL;
}

static void spin_start_workers(void) {
    while (spin_workers < spin_threads - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, spin_worker, NULL);
        pthread_attr_destroy(&attr);
        if (failed) break;  /* fewer helpers: the caller still finishes every loop */
        spin_workers++;
    }
}

static int spin_par_for(void *user_context, halide_task_t task, int min, int size, uint8_t *closure) {
    if (size < 2 || in_spin_iteration || spin_threads < 2) {  /* serially, on this thread */
        for (int i = 0; i < size; i++) {
            int rc = task(user_context, min + i, closure);
            if (rc) return rc;
        }
        return 0;
    }
    if (__atomic_exchange_n(&spin_held, 1, __ATOMIC_ACQUIRE))  /* another thread's loop */
        return halide_default_do_par_for(user_context, task, min, size, closure);
    spin_start_workers();
    __atomic_store_n(&spin_loop.user_context, user_context, __ATOMIC_RELAXED);
    __atomic_store_n(&spin_loop.task, task, __ATOMIC_RELAXED);
    __atomic_store_n(&spin_loop.closure, closure, __ATOMIC_RELAXED);
    __atomic_store_n(&spin_loop.min, min, __ATOMIC_RELAXED);
    __atomic_store_n(&spin_loop.size, size, __ATOMIC_RELAXED);
    spin_done = spin_rc = 0;
    uint32_t generation = spin_generation + 1;
    __atomic_store_n(&spin_claim, (uint64_t)generation << 32, __ATOMIC_RELEASE);
    __atomic_store_n(&spin_generation, generation, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&spin_sleepers, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, &spin_generation, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    spin_run(generation);
    while (__atomic_load_n(&spin_done, __ATOMIC_ACQUIRE) < size) SPIN_PAUSE();
    int rc = __atomic_load_n(&spin_rc, __ATOMIC_RELAXED);
    __atomic_store_n(&spin_held, 0, __ATOMIC_RELEASE);
    return rc;
}

/* Run parallel loops on `threads` threads (the caller and threads - 1 workers) that
 * spin `seconds` after each loop before they sleep; 0 seconds: Halide's own pool. */
void evokernel_spin(int threads, double seconds) {
    spin_threads = threads;
    spin_seconds = seconds;
    halide_set_custom_do_par_for(do_par_for);
}
