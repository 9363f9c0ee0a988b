/* evokernel's native helper, linked with a standalone Halide runtime into one
 * shared library that is loaded once per process (RTLD_GLOBAL); every compiled
 * kernel resolves its halide_* symbols against it.
 *
 * - Errors: the AOT runtime's default handler calls abort(); ours keeps the
 *   message (per thread) and returns, so the pipeline returns an error code.
 * - Timing: the kernel is called through its generated `<name>_argv` entry point
 *   in a C loop, so Python's call overhead never enters a measurement.
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

/* Call fn(args) `iters` times, writing each call's seconds into times[].
 * Stops at the first non-zero return code and returns it. */
int evokernel_time_calls(int (*fn)(void **), void **args, int count, int iters, double *times) {
    int rc = 0;
    mark_inputs(args, count);
    for (int i = 0; i < iters && rc == 0; i++) {
        double start = now_seconds();
        rc = fn(args);
        halide_buffer_t *out = (halide_buffer_t *)args[count - 1];
        if (rc == 0 && out->device) rc = halide_device_sync(NULL, out);  /* GPU calls are asynchronous */
        times[i] = now_seconds() - start;
    }
    return finish(args, count, rc);
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

static int do_par_for(void *user_context, halide_task_t task, int min, int size, uint8_t *closure) {
    if (!on_openmp || size < 2) return halide_default_do_par_for(user_context, task, min, size, closure);
    struct openmp_loop loop = {user_context, task, min, size, 0, 0, closure};
    gomp_parallel(openmp_worker, &loop, 0, 0);  /* 0 threads: the library's own setting */
    return loop.rc;
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
