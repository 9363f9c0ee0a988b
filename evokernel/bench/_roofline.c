/* The roofline's two kernels, compiled for this machine by evokernel.bench._roofline
 * (cc -O2 -march=native -ffp-contract=fast): register-resident FMA chains for the
 * peak, and a vectorised sum over per-thread segments for the read bandwidth.
 * Each call runs its kernel on `threads` pthreads and returns a value that depends
 * on every operation, so the compiler cannot drop any. */
#include <pthread.h>
#include <stddef.h>
#include <time.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif

typedef float vf __attribute__((vector_size(VBYTES)));
typedef double vd __attribute__((vector_size(VBYTES)));

#define MAX_THREADS 1024

/* Bytes in the widest vector this build uses. */
int roofline_vector_bytes(void) { return VBYTES; }

/* 12 independent chains acc = acc * a + b: enough to hide a 4-6 cycle FMA latency on
 * two FMA units, few enough to stay in 16 registers with a and b. */
#define CHAINS(T, E, NAME)                                                             \
    static double NAME(long iters, double seed) {                                      \
        T a = (T){0} + (E)(1.0 - 1e-7 * seed), b = (T){0} + (E)1e-3;                   \
        T c0 = (T){0} + (E)0.5, c1 = c0 + b, c2 = c1 + b, c3 = c2 + b;                 \
        T c4 = c3 + b, c5 = c4 + b, c6 = c5 + b, c7 = c6 + b;                          \
        T c8 = c7 + b, c9 = c8 + b, c10 = c9 + b, c11 = c10 + b;                       \
        for (long i = 0; i < iters; i++) {                                             \
            c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b;        \
            c4 = c4 * a + b; c5 = c5 * a + b; c6 = c6 * a + b; c7 = c7 * a + b;        \
            c8 = c8 * a + b; c9 = c9 * a + b; c10 = c10 * a + b; c11 = c11 * a + b;    \
        }                                                                              \
        T s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11)); \
        double total = 0;                                                              \
        for (size_t l = 0; l < sizeof(T) / sizeof(E); l++) total += s[l];              \
        return total;                                                                  \
    }

CHAINS(vf, float, fma_f32)
CHAINS(vd, double, fma_f64)

/* The FMAs one call of roofline_fma makes per thread and iteration. */
int roofline_chains(void) { return 12; }

/* Sum the floats of [data, data + bytes) `passes` times, 8 vector accumulators. */
static double read_sum(const vf *data, long bytes, long passes) {
    long n = bytes / (long)sizeof(vf);
    vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
    for (long p = 0; p < passes; p++) {
        for (long i = 0; i + 8 <= n; i += 8) {
            s0 += data[i]; s1 += data[i + 1]; s2 += data[i + 2]; s3 += data[i + 3];
            s4 += data[i + 4]; s5 += data[i + 5]; s6 += data[i + 6]; s7 += data[i + 7];
        }
    }
    vf s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
    double total = 0;
    for (size_t l = 0; l < sizeof(vf) / sizeof(float); l++) total += s[l];
    return total;
}

struct job {
    int kind; /* 0: FMA float32, 1: FMA float64, 2: read */
    long count; /* iterations, or passes */
    const char *data;
    long bytes;
    double seed, result, cpu_seconds;
};

static double thread_cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void *work(void *arg) {
    struct job *j = arg;
    double start = thread_cpu_seconds();
    if (j->kind == 0) j->result = fma_f32(j->count, j->seed);
    else if (j->kind == 1) j->result = fma_f64(j->count, j->seed);
    else j->result = read_sum((const vf *)j->data, j->bytes, j->count);
    j->cpu_seconds = thread_cpu_seconds() - start;
    return NULL;
}

/* Run `threads` jobs at once (thread t reads data + t * bytes), each thread's CPU
 * seconds into cpu_seconds[t]; returns the sum of their results, or -1 if a thread
 * could not be started. */
static double run(int kind, int threads, long count, const char *data, long bytes, double *cpu_seconds) {
    struct job jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started = 0;
    if (threads < 1 || threads > MAX_THREADS) return -1;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (struct job){kind, count, data ? data + (size_t)t * bytes : 0, bytes, t + 1.0, 0, 0};
        if (t > 0 && pthread_create(&ids[t], NULL, work, &jobs[t]) != 0) break;
        started = t + 1;
    }
    if (started == threads) work(&jobs[0]); /* the calling thread is thread 0 */
    double total = 0;
    for (int t = 1; t < started; t++) pthread_join(ids[t], NULL);
    for (int t = 0; t < started; t++) {
        total += jobs[t].result;
        cpu_seconds[t] = jobs[t].cpu_seconds;
    }
    return started == threads ? total : -1;
}

double roofline_fma(int float64, int threads, long iterations, double *cpu_seconds) {
    return run(float64 ? 1 : 0, threads, iterations, 0, 0, cpu_seconds);
}

/* `data` must be aligned to the vector width and hold threads * bytes bytes. */
double roofline_read(const char *data, long bytes, int threads, long passes, double *cpu_seconds) {
    return run(2, threads, passes, data, bytes, cpu_seconds);
}
