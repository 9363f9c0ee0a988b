/* Call kernels exported by examples/c_library.py from plain C.
 *
 *   cc -O2 -I OUT main.c -L OUT -lekdemo -Wl,-rpath,OUT -o demo   (shared library)
 *   cc -O2 -I OUT main.c OUT/libekdemo.a -lpthread -ldl -lm -o demo (static library)
 *   ./demo DIR
 *
 * Reads each kernel's inputs from DIR/<kernel>_<arg>.bin (float32, C order, as
 * NumPy's tofile writes them), calls the kernel and writes DIR/<kernel>_out.bin.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ekdemo.h"

static float *load(const char *dir, const char *name, size_t n) {
    char path[4096];
    float *data = malloc(n * sizeof *data);
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f || !data || fread(data, sizeof *data, n, f) != n) {
        fprintf(stderr, "cannot read %zu floats from %s\n", n, path);
        exit(1);
    }
    fclose(f);
    return data;
}

static void save(const char *dir, const char *name, const float *data, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, sizeof *data, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static int check(const char *kernel, int rc) {
    if (rc != 0) fprintf(stderr, "%s failed (%d): %s\n", kernel, rc, ekdemo_last_error());
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    ekdemo_set_num_threads(2);

    /* out = relu(conv(input, weight) + bias), NCHW */
    float *input = load(dir, "conv_input", EKDEMO_CONV_INPUT_SIZE);
    float *weight = load(dir, "conv_weight", EKDEMO_CONV_WEIGHT_SIZE);
    float *bias = load(dir, "conv_bias", EKDEMO_CONV_BIAS_SIZE);
    float *conv_out = malloc(EKDEMO_CONV_OUT_SIZE * sizeof *conv_out);
    if (check("ekdemo_conv", ekdemo_conv(input, weight, bias, conv_out))) return 1;
    save(dir, "conv_out", conv_out, EKDEMO_CONV_OUT_SIZE);

    /* out = a @ b */
    float *a = load(dir, "matmul_a", EKDEMO_MATMUL_A_SIZE);
    float *b = load(dir, "matmul_b", EKDEMO_MATMUL_B_SIZE);
    float *mm_out = malloc(EKDEMO_MATMUL_OUT_SIZE * sizeof *mm_out);
    if (check("ekdemo_matmul", ekdemo_matmul(a, b, mm_out))) return 1;
    save(dir, "matmul_out", mm_out, EKDEMO_MATMUL_OUT_SIZE);

    printf("ran ekdemo_conv and ekdemo_matmul\n");
    free(input), free(weight), free(bias), free(conv_out), free(a), free(b), free(mm_out);
    return 0;
}
