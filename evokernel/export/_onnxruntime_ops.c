/* evokernel ONNX Runtime custom-op library: one custom op per exported kernel and
 * the tensor shapes it is wired to, in one domain (EK_DOMAIN) that
 * RegisterCustomOps adds to the session options.
 *
 * Appended to the exported kernel functions (see _support.c). The Python exporter
 * defines EK_DOMAIN (the domain's name, unique per library) and inserts the op
 * table where it says EK_OP_TABLE.
 *
 * ONNX Runtime's headers are not needed: the few declarations below give the
 * layouts this library relies on. OrtApi is a table of function pointers that
 * only ever grows at its end, so a slot keeps its position in every release; the
 * library asks for API version EK_ORT_API_VERSION (ONNX Runtime 1.16, the first
 * whose custom ops return an error status from compute) and declares OrtCustomOp
 * as that version lays it out.
 *
 * Every compute checks each input's element type and shape against the ones the
 * op was exported for (dense float32 of exactly the ONNX shape of the value it is
 * wired to) and returns an error status otherwise: a tensor is handed to a kernel
 * only when it holds exactly the memory the kernel was tuned for.
 *
 * Threads: where ONNX Runtime gives API version 17 (ONNX Runtime 1.17 or later),
 * a kernel's parallel loops run on the session's intra-op threads
 * (KernelContext_ParallelFor), as ONNX Runtime's own kernels do: the cores are
 * never shared by two pools, and no pool wakes up per node. A parallel loop nested
 * in another runs serially in its thread. Older releases run them on the
 * library's own Halide thread pool.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* -- ONNX Runtime C API: the part used here ------------------------------------ */
typedef struct OrtStatus OrtStatus;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtCustomOpDomain OrtCustomOpDomain;
typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtValue OrtValue;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
struct ek_custom_op;

enum { EK_ORT_API_VERSION = 16, EK_ORT_PARALLEL_VERSION = 17 };
enum { EK_ORT_FAIL = 1, EK_ORT_INVALID_ARGUMENT = 2 };    /* OrtErrorCode */
enum { EK_ORT_FLOAT = 1 };                                 /* ONNXTensorElementDataType */
enum { EK_ORT_REQUIRED = 0 };                              /* OrtCustomOpInputOutputCharacteristic */
enum { EK_ORT_MEM_DEFAULT = 0 };                           /* OrtMemType */

struct ek_ort_api_base { /* OrtApiBase */
    const struct ek_ort_api *(*get_api)(uint32_t version);
    const char *(*get_version_string)(void);
};

/* OrtApi's slots by position (enums passed as int, as the C ABI passes them). */
struct ek_ort_api {
    OrtStatus *(*create_status)(int code, const char *message);                               /* 0 */
    void *slots_1_25[25];
    OrtStatus *(*create_custom_op_domain)(const char *domain, OrtCustomOpDomain **out);         /* 26 */
    OrtStatus *(*custom_op_domain_add)(OrtCustomOpDomain *domain, const struct ek_custom_op *op); /* 27 */
    OrtStatus *(*add_custom_op_domain)(OrtSessionOptions *options, OrtCustomOpDomain *domain);  /* 28 */
    void *slots_29_50[22];
    OrtStatus *(*get_tensor_mutable_data)(OrtValue *value, void **out);                         /* 51 */
    void *slots_52_59[8];
    OrtStatus *(*get_tensor_element_type)(const OrtTensorTypeAndShapeInfo *info, int *out);     /* 60 */
    OrtStatus *(*get_dimensions_count)(const OrtTensorTypeAndShapeInfo *info, size_t *out);     /* 61 */
    OrtStatus *(*get_dimensions)(const OrtTensorTypeAndShapeInfo *info, int64_t *dims, size_t n); /* 62 */
    void *slots_63_64[2];
    OrtStatus *(*get_tensor_type_and_shape)(const OrtValue *value, OrtTensorTypeAndShapeInfo **out); /* 65 */
    void *slots_66_87[22];
    OrtStatus *(*kernel_context_get_input_count)(const OrtKernelContext *context, size_t *out); /* 88 */
    OrtStatus *(*kernel_context_get_output_count)(const OrtKernelContext *context, size_t *out); /* 89 */
    OrtStatus *(*kernel_context_get_input)(const OrtKernelContext *context, size_t index,
                                           const OrtValue **out);                               /* 90 */
    OrtStatus *(*kernel_context_get_output)(OrtKernelContext *context, size_t index, const int64_t *dims,
                                            size_t rank, OrtValue **out);                       /* 91 */
    void *slot_92;
    void (*release_status)(OrtStatus *status);                                                  /* 93 */
    void *slots_94_98[5];
    void (*release_tensor_type_and_shape_info)(OrtTensorTypeAndShapeInfo *info);                /* 99 */
    void *slot_100;
    void (*release_custom_op_domain)(OrtCustomOpDomain *domain);                                /* 101 */
    void *slots_102_273[172];
    OrtStatus *(*kernel_context_parallel_for)(const OrtKernelContext *context, void (*fn)(void *, size_t),
                                              size_t total, size_t num_batch, void *data);   /* 274, version 17 */
};

#define EK_SLOT(field, index) \
    _Static_assert(offsetof(struct ek_ort_api, field) == (index) * sizeof(void *), "OrtApi slot of " #field)
EK_SLOT(create_custom_op_domain, 26);
EK_SLOT(get_tensor_mutable_data, 51);
EK_SLOT(get_tensor_element_type, 60);
EK_SLOT(get_tensor_type_and_shape, 65);
EK_SLOT(kernel_context_get_input_count, 88);
EK_SLOT(kernel_context_get_output, 91);
EK_SLOT(release_status, 93);
EK_SLOT(release_tensor_type_and_shape_info, 99);
EK_SLOT(release_custom_op_domain, 101);
EK_SLOT(kernel_context_parallel_for, 274);

/* OrtCustomOp as API version 16 lays it out; ONNX Runtime reads only the fields
 * that the `version` field says exist. */
struct ek_custom_op {
    uint32_t version;
    void *(*create_kernel)(const struct ek_custom_op *op, const struct ek_ort_api *api, const OrtKernelInfo *info);
    const char *(*get_name)(const struct ek_custom_op *op);
    const char *(*get_execution_provider_type)(const struct ek_custom_op *op);
    int (*get_input_type)(const struct ek_custom_op *op, size_t index);
    size_t (*get_input_type_count)(const struct ek_custom_op *op);
    int (*get_output_type)(const struct ek_custom_op *op, size_t index);
    size_t (*get_output_type_count)(const struct ek_custom_op *op);
    void (*kernel_compute)(void *kernel, OrtKernelContext *context);
    void (*kernel_destroy)(void *kernel);
    int (*get_input_characteristic)(const struct ek_custom_op *op, size_t index);   /* version 8 */
    int (*get_output_characteristic)(const struct ek_custom_op *op, size_t index);  /* version 8 */
    int (*get_input_memory_type)(const struct ek_custom_op *op, size_t index);      /* version 13 */
    int (*get_variadic_input_min_arity)(const struct ek_custom_op *op);             /* version 14 */
    int (*get_variadic_input_homogeneity)(const struct ek_custom_op *op);
    int (*get_variadic_output_min_arity)(const struct ek_custom_op *op);
    int (*get_variadic_output_homogeneity)(const struct ek_custom_op *op);
    OrtStatus *(*create_kernel_v2)(const struct ek_custom_op *op, const struct ek_ort_api *api,
                                   const OrtKernelInfo *info, void **kernel);          /* version 16 */
    OrtStatus *(*kernel_compute_v2)(void *kernel, OrtKernelContext *context);
};
_Static_assert(offsetof(struct ek_custom_op, kernel_compute_v2) == 18 * sizeof(void *), "OrtCustomOp layout");

/* -- the ops ------------------------------------------------------------------- */
enum { EK_MAX_TENSORS = 8, EK_MAX_RANK = 16 };

struct ek_shape { int rank; const int64_t *dims; };

struct ek_op {
    struct ek_custom_op ort; /* first: ONNX Runtime hands &ort back to every callback */
    const char *name;        /* the op's name in EK_DOMAIN */
    const char *kernel;      /* the tuned operator, for messages */
    int inputs;
    const struct ek_shape *shapes; /* the inputs', then the output's ONNX shape */
    int (*call)(float *const *tensors);
};

static const struct ek_ort_api *ek_api; /* set by RegisterCustomOps, the same table for every session */

static void *ek_create_kernel(const struct ek_custom_op *op, const struct ek_ort_api *api, const OrtKernelInfo *info);
static const char *ek_name(const struct ek_custom_op *op);
static const char *ek_cpu(const struct ek_custom_op *op);
static int ek_float(const struct ek_custom_op *op, size_t index);
static size_t ek_input_count(const struct ek_custom_op *op);
static size_t ek_one(const struct ek_custom_op *op);
static void ek_compute_v1(void *kernel, OrtKernelContext *context);
static void ek_destroy(void *kernel);
static int ek_required(const struct ek_custom_op *op, size_t index);
static int ek_default_memory(const struct ek_custom_op *op, size_t index);
static OrtStatus *ek_compute(void *kernel, OrtKernelContext *context);

#define EK_CUSTOM_OP                                                                                             \
    {EK_ORT_API_VERSION, ek_create_kernel, ek_name, ek_cpu, ek_float, ek_input_count, ek_float, ek_one,         \
     ek_compute_v1, ek_destroy, ek_required, ek_required, ek_default_memory, NULL, NULL, NULL, NULL, NULL,       \
     ek_compute}

/* EK_OP_TABLE */

static const int ek_op_count = (int)(sizeof ek_ops / sizeof ek_ops[0]);

static const struct ek_op *ek_op_of(const struct ek_custom_op *op) { return (const struct ek_op *)op; }

static void *ek_create_kernel(const struct ek_custom_op *op, const struct ek_ort_api *api, const OrtKernelInfo *info) {
    (void)info;
    if (api) __atomic_store_n(&ek_api, api, __ATOMIC_RELEASE);
    return (void *)op; /* the op is the kernel: it holds no state of its own */
}

static const char *ek_name(const struct ek_custom_op *op) { return ek_op_of(op)->name; }
static const char *ek_cpu(const struct ek_custom_op *op) { (void)op; return NULL; }
static int ek_float(const struct ek_custom_op *op, size_t index) { (void)op, (void)index; return EK_ORT_FLOAT; }
static size_t ek_input_count(const struct ek_custom_op *op) { return (size_t)ek_op_of(op)->inputs; }
static size_t ek_one(const struct ek_custom_op *op) { (void)op; return 1; }
static void ek_destroy(void *kernel) { (void)kernel; }
static int ek_required(const struct ek_custom_op *op, size_t index) { (void)op, (void)index; return EK_ORT_REQUIRED; }
static int ek_default_memory(const struct ek_custom_op *op, size_t index) {
    (void)op, (void)index;
    return EK_ORT_MEM_DEFAULT;
}

/* Only reached by an ONNX Runtime that ignores kernel_compute_v2 (none that gives
 * API version 16 does): no status can be returned from here. */
static void ek_compute_v1(void *kernel, OrtKernelContext *context) {
    OrtStatus *status = ek_compute(kernel, context);
    if (status) ek_api->release_status(status);
}

/* -- errors -------------------------------------------------------------------- */
static OrtStatus *ek_error(int code, const char *format, ...) {
    char message[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    return ek_api->create_status(code, message);
}

static void ek_format_shape(char *out, size_t size, const int64_t *dims, size_t rank) {
    size_t used = (size_t)snprintf(out, size, "[");
    for (size_t i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (used < size) snprintf(out + used, size - used, "]");
}

static const char *ek_type_name(int type) {
    static const char *const names[] = {"undefined", "float32", "uint8", "int8", "uint16", "int16", "int32",
                                        "int64", "string", "bool", "float16", "float64", "uint32", "uint64"};
    return type >= 0 && type < (int)(sizeof names / sizeof names[0]) ? names[type] : "a non-numeric type";
}

static OrtStatus *ek_mismatch(const struct ek_op *op, int index, int type, const int64_t *dims, size_t rank) {
    char want[256], got[256];
    const struct ek_shape *s = &op->shapes[index];
    ek_format_shape(want, sizeof want, s->dims, (size_t)s->rank);
    if (rank > EK_MAX_RANK)
        snprintf(got, sizeof got, "a tensor of rank %zu", rank);
    else
        ek_format_shape(got, sizeof got, dims, rank);
    return ek_error(EK_ORT_INVALID_ARGUMENT,
                    "evokernel op %s (%s): input %d must be float32 of shape %s (the shape it was tuned for), "
                    "got %s of shape %s",
                    op->name, op->kernel, index, want, ek_type_name(type), got);
}

/* -- compute ------------------------------------------------------------------- */
static int ek_same_shape(const struct ek_shape *s, const int64_t *dims, size_t rank) {
    if (rank != (size_t)s->rank) return 0;
    for (size_t i = 0; i < rank; i++)
        if (dims[i] != s->dims[i]) return 0;
    return 1;
}

/* The data of input `index` if it is float32 of the op's shape, else an error. */
static OrtStatus *ek_input(const struct ek_op *op, OrtKernelContext *context, int index, float **data) {
    const OrtValue *value = NULL;
    OrtTensorTypeAndShapeInfo *info = NULL;
    int64_t dims[EK_MAX_RANK];
    size_t rank = 0;
    int type = 0;
    OrtStatus *status = ek_api->kernel_context_get_input(context, (size_t)index, &value);
    if (status) return status;
    if (!value) return ek_error(EK_ORT_INVALID_ARGUMENT, "evokernel op %s: input %d is missing", op->name, index);
    if ((status = ek_api->get_tensor_type_and_shape(value, &info))) return status;
    status = ek_api->get_tensor_element_type(info, &type);
    if (!status) status = ek_api->get_dimensions_count(info, &rank);
    if (!status && rank <= EK_MAX_RANK) status = ek_api->get_dimensions(info, dims, rank);
    ek_api->release_tensor_type_and_shape_info(info);
    if (status) return status;
    if (type != EK_ORT_FLOAT || rank > EK_MAX_RANK || !ek_same_shape(&op->shapes[index], dims, rank))
        return ek_mismatch(op, index, type, dims, rank);
    return ek_api->get_tensor_mutable_data((OrtValue *)value, (void **)data);
}

/* -- parallel loops on ONNX Runtime's intra-op threads ------------------------------ */
static OrtStatus *(*ek_parallel_for)(const OrtKernelContext *, void (*)(void *, size_t), size_t, size_t, void *);
static __thread const OrtKernelContext *ek_context; /* the node this thread computes, while it does */
static __thread int ek_in_loop;                     /* inside an iteration of a loop run by ONNX Runtime */

struct ek_loop {
    void *user_context;
    halide_task_t task;
    int min, rc;
    uint8_t *closure;
};

static void ek_iteration(void *data, size_t i) {
    struct ek_loop *loop = data;
    int was = ek_in_loop, rc;
    ek_in_loop = 1;
    rc = loop->task(loop->user_context, loop->min + (int)i, loop->closure);
    ek_in_loop = was;
    if (rc) __atomic_store_n(&loop->rc, rc, __ATOMIC_RELAXED);
}

static int ek_do_par_for(void *user_context, halide_task_t task, int min, int size, uint8_t *closure) {
    if (ek_in_loop) { /* nested: this thread already holds one of the session's cores */
        for (int i = 0; i < size; i++) {
            int rc = task(user_context, min + i, closure);
            if (rc) return rc;
        }
        return 0;
    }
    if (!ek_context || size < 2) return halide_default_do_par_for(user_context, task, min, size, closure);
    struct ek_loop loop = {user_context, task, min, 0, closure};
    OrtStatus *status = ek_parallel_for(ek_context, ek_iteration, (size_t)size, 0, &loop);
    if (status) {
        ek_api->release_status(status);
        return halide_error_code_generic_error;
    }
    return loop.rc;
}

static OrtStatus *ek_compute(void *kernel, OrtKernelContext *context) {
    const struct ek_op *op = kernel;
    const struct ek_shape *out = &op->shapes[op->inputs];
    float *tensors[EK_MAX_TENSORS];
    OrtValue *output = NULL;
    size_t count = 0;
    OrtStatus *status = ek_api->kernel_context_get_input_count(context, &count);
    if (status) return status;
    if (count != (size_t)op->inputs)
        return ek_error(EK_ORT_INVALID_ARGUMENT, "evokernel op %s takes %d inputs, got %zu", op->name, op->inputs,
                        count);
    for (int i = 0; i < op->inputs; i++)
        if ((status = ek_input(op, context, i, &tensors[i]))) return status;
    status = ek_api->kernel_context_get_output(context, 0, out->dims, (size_t)out->rank, &output);
    if (!status) status = ek_api->get_tensor_mutable_data(output, (void **)&tensors[op->inputs]);
    if (status) return status;
    ek_context = ek_parallel_for ? context : NULL;
    int rc = op->call(tensors);
    ek_context = NULL;
    if (rc != 0)
        return ek_error(EK_ORT_FAIL, "evokernel op %s (%s) failed: %s", op->name, op->kernel,
                        EK_CAT(EK_PREFIX, _last_error)());
    return NULL;
}

/* -- registration -------------------------------------------------------------- */
static OrtStatus *ek_unsupported_runtime(const struct ek_ort_api_base *base) {
    char message[512];
    const struct ek_ort_api *first = base->get_api(1);
    const char *version = base->get_version_string ? base->get_version_string() : NULL;
    snprintf(message, sizeof message,
             "the evokernel library (custom-op domain %s) needs ONNX Runtime's C API version %d (ONNX Runtime "
             "1.16 or later); this ONNX Runtime %s does not provide it",
             EK_DOMAIN, EK_ORT_API_VERSION, version ? version : "(version unknown)");
    if (first) return first->create_status(EK_ORT_FAIL, message);
    fprintf(stderr, "%s\n", message); /* no API to report with: register nothing */
    return NULL;
}

/* Parallel loops on the intra-op threads, where `api` (version 17) has them. */
static void ek_use_onnxruntime_threads(const struct ek_ort_api *api) {
    if (!api || __atomic_load_n(&ek_parallel_for, __ATOMIC_ACQUIRE)) return;
    __atomic_store_n(&ek_parallel_for, api->kernel_context_parallel_for, __ATOMIC_RELEASE);
    halide_set_custom_do_par_for(ek_do_par_for);
}

/* Adds the domain EK_DOMAIN with every op to `options`. A domain object is made
 * per call and never released: ONNX Runtime needs it as long as any session made
 * from `options` lives, which this library cannot know. */
EK_PUBLIC OrtStatus *RegisterCustomOps(OrtSessionOptions *options, const struct ek_ort_api_base *base) {
    const struct ek_ort_api *api;
    OrtCustomOpDomain *domain = NULL;
    OrtStatus *status;
    if (!base || !base->get_api) return NULL;
    api = base->get_api(EK_ORT_API_VERSION);
    if (!api) return ek_unsupported_runtime(base);
    __atomic_store_n(&ek_api, api, __ATOMIC_RELEASE);
    ek_use_onnxruntime_threads(base->get_api(EK_ORT_PARALLEL_VERSION));
    if ((status = api->create_custom_op_domain(EK_DOMAIN, &domain))) return status;
    for (int i = 0; i < ek_op_count && !status; i++) status = api->custom_op_domain_add(domain, &ek_ops[i].ort);
    if (!status) status = api->add_custom_op_domain(options, domain);
    if (status) api->release_custom_op_domain(domain);
    return status;
}
