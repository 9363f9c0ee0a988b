/* evokernel's kernel harness: a small program that does in a process of the
 * target's own platform what the Python worker does through ctypes, for targets
 * whose code cannot be loaded into this Python (another ISA, run under an emulator).
 *
 *   harness RUNTIME.so KERNEL.so FUNCTION THREADS SPEC
 *
 * It loads the runtime library (Halide runtime + shim, RTLD_GLOBAL) and the kernel
 * library, and reads SPEC: one line per buffer, the inputs then the output,
 *   buffer PATH TYPE_CODE BITS RANK EXTENT...   (extents in NumPy order)
 * with each buffer's data in the raw file PATH (relative to the working directory
 * or absolute, without spaces). It prints "ready", then serves
 * commands read from stdin, one per line, answering on one line each:
 *   call     re-read the output file, call the kernel once, write the output file:
 *            "ok", or "error RC MESSAGE"
 *   time N   N back-to-back calls timed in C: "times T1 ... TN" (seconds), or the error
 * until stdin ends. A kernel that crashes takes the harness with it: its parent
 * sees the signal.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "HalideRuntime.h"

#define MAX_BUFFERS 16
#define MAX_RANK 8

typedef int (*kernel_fn)(void **);

static struct {
    void (*install_error_handler)(void);
    const char *(*last_error)(void);
    void (*clear_error)(void);
    int (*call)(kernel_fn, void **, int);
    int (*time_sets)(kernel_fn, void **, int, int, int, double *, int);
    int (*set_num_threads)(int);
} rt;

static halide_buffer_t buffers[MAX_BUFFERS];
static halide_dimension_t dims[MAX_BUFFERS][MAX_RANK];
static char paths[MAX_BUFFERS][4096];
static size_t sizes[MAX_BUFFERS];
static void *args[MAX_BUFFERS];
static int count;

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "harness: %s: %s\n", what, detail ? detail : "");
    exit(3);
}

static void *symbol(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) fail("missing symbol", name);
    return p;
}

static void load_file(int i) {
    FILE *f = fopen(paths[i], "rb");
    if (!f || fread(buffers[i].host, 1, sizes[i], f) != sizes[i]) fail("cannot read", paths[i]);
    fclose(f);
}

static void save_file(int i) {
    FILE *f = fopen(paths[i], "wb");
    if (!f || fwrite(buffers[i].host, 1, sizes[i], f) != sizes[i]) fail("cannot write", paths[i]);
    fclose(f);
}

static void read_spec(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) fail("cannot open the spec", path);
    int code, bits, rank;
    char name[4096];
    while (fscanf(f, " buffer %4095s %d %d %d", name, &code, &bits, &rank) == 4) {
        if (count == MAX_BUFFERS) fail("more buffers than the harness holds in", path);
        if (rank < 0 || rank > MAX_RANK) fail("bad rank in", path);
        memcpy(paths[count], name, sizeof name);
        halide_buffer_t *b = &buffers[count];
        long long elements = 1, extents[MAX_RANK];
        for (int d = 0; d < rank; d++) {
            if (fscanf(f, " %lld", &extents[d]) != 1) fail("bad extents in", path);
            elements *= extents[d];
        }
        long long stride = 1;
        for (int d = 0; d < rank; d++) { /* Halide's dim 0 is NumPy's last axis */
            dims[count][d].min = 0;
            dims[count][d].extent = (int32_t)extents[rank - 1 - d];
            dims[count][d].stride = (int32_t)stride;
            dims[count][d].flags = 0;
            stride *= extents[rank - 1 - d];
        }
        b->type.code = (uint8_t)code;
        b->type.bits = (uint8_t)bits;
        b->type.lanes = 1;
        b->dimensions = rank;
        b->dim = dims[count];
        sizes[count] = (size_t)elements * (size_t)(bits / 8);
        b->host = malloc(sizes[count] ? sizes[count] : 1);
        if (!b->host) fail("out of memory for", paths[count]);
        load_file(count);
        args[count] = b;
        count++;
    }
    fclose(f);
    if (count < 1) fail("no buffers in", path);
}

static void reply_error(int rc) {
    const char *msg = rt.last_error();
    printf("error %d ", rc);
    for (const char *c = msg; *c; c++) putchar(*c == '\n' || *c == '\r' ? ' ' : *c);
    putchar('\n');
}

int main(int argc, char **argv) {
    if (argc != 6) fail("usage", "harness RUNTIME.so KERNEL.so FUNCTION THREADS SPEC");
    void *runtime = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (!runtime) fail("cannot load the runtime", dlerror());
    rt.install_error_handler = symbol(runtime, "evokernel_install_error_handler");
    rt.last_error = symbol(runtime, "evokernel_last_error");
    rt.clear_error = symbol(runtime, "evokernel_clear_error");
    rt.call = symbol(runtime, "evokernel_call");
    rt.time_sets = symbol(runtime, "evokernel_time_sets");
    rt.set_num_threads = symbol(runtime, "halide_set_num_threads");
    rt.install_error_handler();
    rt.set_num_threads(atoi(argv[4]));
    void *lib = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    if (!lib) fail("cannot load the kernel", dlerror());
    char entry[512];
    snprintf(entry, sizeof entry, "%s_argv", argv[3]);
    kernel_fn fn = (kernel_fn)symbol(lib, entry);
    read_spec(argv[5]);
    printf("ready\n");
    fflush(stdout);

    char line[256];
    double *times = NULL;
    while (fgets(line, sizeof line, stdin)) {
        int calls;
        rt.clear_error();
        if (strncmp(line, "call", 4) == 0) {
            load_file(count - 1);
            int rc = rt.call(fn, args, count);
            if (rc == 0) {
                save_file(count - 1);
                printf("ok\n");
            } else {
                reply_error(rc);
            }
        } else if (sscanf(line, "time %d", &calls) == 1 && calls > 0) {
            times = realloc(times, sizeof *times * (size_t)calls);
            if (!times) fail("out of memory for", "times");
            int rc = rt.time_sets(fn, args, count, 1, calls, times, 0);  /* back to back on one set */
            if (rc == 0) {
                printf("times");
                for (int i = 0; i < calls; i++) printf(" %.9e", times[i]);
                printf("\n");
            } else {
                reply_error(rc);
            }
        } else {
            fail("unknown command", line);
        }
        fflush(stdout);
    }
    return 0;
}
