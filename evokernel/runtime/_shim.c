/* evokernel's native helper, linked with a standalone Halide runtime into one
 * shared library that is loaded once per process (RTLD_GLOBAL); every compiled
 * kernel resolves its halide_* symbols against it.
 *
 * - Errors: the AOT runtime's default handler calls abort(); ours keeps the
 *   message (per thread) and returns, so the pipeline returns an error code.
 * - Timing: the kernel is called through its generated `<name>_argv` entry point
 *   in a C loop, so Python's call overhead never enters a measurement.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef void (*halide_error_handler_t)(void *, const char *);
extern halide_error_handler_t halide_set_error_handler(halide_error_handler_t handler);
extern int halide_set_num_threads(int n);

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

/* Call fn(args) `iters` times, writing each call's seconds into times[].
 * Stops at the first non-zero return code and returns it. */
int evokernel_time_calls(int (*fn)(void **), void **args, int iters, double *times) {
    for (int i = 0; i < iters; i++) {
        double start = now_seconds();
        int rc = fn(args);
        times[i] = now_seconds() - start;
        if (rc != 0) return rc;
    }
    return 0;
}
