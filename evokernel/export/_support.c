/* evokernel export support, compiled into every exported C library and Tengine
 * plugin (with the Halide runtime, whose symbols stay private to the library).
 *
 * - Buffers: each exported function wraps raw pointers in halide_buffer_t headers
 *   over dense row-major (NumPy layout) arrays; Halide's dim 0 is the last axis.
 * - Errors: the runtime's default handler calls abort(); this one keeps the
 *   message (per thread) and returns, so a kernel returns its error code.
 * The prefix EK_PREFIX (a validated C identifier) names the public helpers.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "HalideRuntime.h"

#define EK_CAT2(a, b) a##b
#define EK_CAT(a, b) EK_CAT2(a, b)
#define EK_PUBLIC __attribute__((visibility("default")))

static __thread char ek_last_error[1024];

static void ek_keep_error(void *user_context, const char *msg) {
    (void)user_context;
    snprintf(ek_last_error, sizeof ek_last_error, "%s", msg);
}

__attribute__((constructor)) static void ek_install_error_handler(void) {
    halide_set_error_handler(ek_keep_error);
}

EK_PUBLIC const char *EK_CAT(EK_PREFIX, _last_error)(void) { return ek_last_error; }

EK_PUBLIC int EK_CAT(EK_PREFIX, _set_num_threads)(int n) { return halide_set_num_threads(n); }

/* A NULL array pointer: no Halide call (a NULL host would make it a bounds query). */
static int ek_null_argument(const char *function) {
    snprintf(ek_last_error, sizeof ek_last_error, "%s: an array pointer is NULL", function);
    return halide_error_code_buffer_argument_is_null;
}

/* Fill `b` (with dimension array `d`) to describe a dense array of `rank` axes
 * of extents `shape` (NumPy order) at `host`, of floats of `bits` bits. */
static halide_buffer_t *ek_buffer(halide_buffer_t *b, halide_dimension_t *d, const void *host, int rank,
                                  const int32_t *shape, uint8_t bits) {
    int32_t stride = 1;
    memset(b, 0, sizeof *b);
    for (int i = 0; i < rank; i++) {
        d[i].min = 0;
        d[i].extent = shape[rank - 1 - i];
        d[i].stride = stride;
        d[i].flags = 0;
        stride *= shape[rank - 1 - i];
    }
    b->host = (uint8_t *)host;
    b->type.code = halide_type_float;
    b->type.bits = bits;
    b->type.lanes = 1;
    b->dimensions = rank;
    b->dim = d;
    return b;
}
