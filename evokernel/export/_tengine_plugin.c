/* evokernel Tengine plugin: node_ops for the exported kernels (Tengine lite 1.4+).
 *
 * Appended to the exported kernel functions (see _support.c). The Python
 * exporter inserts the kernel table where it says EK_KERNEL_TABLE and defines
 * EK_INIT / EK_RELEASE (validated C identifiers).
 *
 * A kernel scores only a node whose parameters, tensor shapes and dtype match it
 * exactly, and run() checks the match again (a reshape may have changed shapes):
 * it never computes a node it was not tuned for. Tengine's tensors are dense NCHW
 * float32, the operators' NumPy layout, and its weights are [c_out, c_in/group,
 * kh, kw] (convolution) and [num_output, k] (fc), as the operators' are: tensor
 * memory is handed to the kernels as it is.
 *
 * Release refuses (returns -1, unregisters nothing) while any exec node is bound
 * to one of its node_ops (between init_node and release_node), and keeps the
 * library mapped so the dlclose that follows in unload_tengine_plugin cannot pull
 * the code from under a live graph. Graphs are postrun and destroyed before unload.
 */
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>

#ifdef EK_TENGINE_HEADERS /* the real headers, from Tengine's source/ directory */
#include "device/cpu/cpu_graph.h"
#include "device/cpu/cpu_module.h"
#include "device/cpu/cpu_node.h"
#include "graph/graph.h"
#include "graph/node.h"
#include "graph/tensor.h"
#include "operator/prototype/convolution_param.h"
#include "operator/prototype/fc_param.h"
#include "operator/prototype/pooling_param.h"
#include "operator/prototype/relu_param.h"
#include "operator/prototype/softmax_param.h"
#else /* the layouts this plugin relies on, as declared by Tengine lite 1.4 - 1.5 (x86-64) */
struct node;
struct graph;
struct exec_node;
struct exec_graph;

struct node_ops { /* device/cpu/cpu_node.h */
    int (*prerun)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*run)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*reshape)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*postrun)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*init_node)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*release_node)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*score)(struct node_ops *, struct exec_graph *, struct node *);
};

struct exec_node { /* device/cpu/cpu_node.h */
    struct node *ir_node;
    struct node_ops *node_ops;
    void *ops_priv;
    int8_t inplace_map_num;
    int8_t output_num;
    union { uint8_t *inplace_map_ptr; uint8_t inplace_map[4]; };
    union { int8_t block_id[4]; int8_t *block_id_ptr; };
    int shared_mem_size;
    int shared_pack4_mem_size;
};

struct exec_graph { /* device/cpu/cpu_graph.h */
    struct vector *exec_node_list;
    struct mem_pool *mem_pool;
    struct cpu_device *dev;
    void *shared_mem;
    int shared_mem_size;
    void *shared_pack4_mem;
    int shared_pack4_mem_size;
    int num_thread;
    int mode;
    size_t cpu_affinity;
    void *timer;
};

struct op { /* operator/op.h */
    uint16_t type;
    uint8_t version;
    uint8_t same_shape;
    uint16_t param_size;
    void *param_mem;
    int (*infer_shape)(struct node *);
};

struct node { /* graph/node.h */
    uint16_t index;
    uint8_t dynamic_shape;
    uint8_t input_num;
    uint8_t output_num;
    uint8_t node_type;
    int8_t subgraph_idx;
    uint16_t *input_tensors;
    uint16_t *output_tensors;
    char *name;
    struct op op;
    struct graph *graph;
};

struct tensor { /* graph/tensor.h */
    uint16_t index;
    int16_t producer;
    int16_t *consumer;
    uint8_t reshaped, consumer_num, tensor_type, data_type, dim_num, elem_size, subgraph_num, free_host_mem,
        internal_allocated, layout;
    uint16_t quant_param_num;
    uint32_t elem_num;
    int dims[8];
    void *data;
    char *name;
    union { float *scale_list; float scale; };
    union { int zero_point; int *zp_list; };
    struct dev_mem *dev_mem;
    uint8_t *subgraph_list;
};

struct conv_param {
    int kernel_h, kernel_w, stride_h, stride_w, pad_h0, pad_h1, pad_w0, pad_w1, dilation_h, dilation_w,
        input_channel, output_channel, group, activation, wino_off;
};
struct pool_param {
    int pool_method, kernel_h, kernel_w, stride_h, stride_w, pad_h0, pad_h1, pad_w0, pad_w1, global, caffe_flavor;
    void *funct;
    int pad_h0_org, pad_h1_org, pad_w0_org, pad_w1_org;
    void *input_pad;
};
struct fc_param { int num_output; };
struct softmax_param { int axis; };
struct relu_param { float negative_slope; };

/* byte offsets measured on a Tengine build (tengine-abi.md) */
_Static_assert(offsetof(struct tensor, data_type) == 19, "tensor.data_type");
_Static_assert(offsetof(struct tensor, dim_num) == 20, "tensor.dim_num");
_Static_assert(offsetof(struct tensor, layout) == 25, "tensor.layout");
_Static_assert(offsetof(struct tensor, elem_num) == 28, "tensor.elem_num");
_Static_assert(offsetof(struct tensor, dims) == 32, "tensor.dims");
_Static_assert(offsetof(struct tensor, data) == 64, "tensor.data");
_Static_assert(sizeof(struct tensor) == 112, "sizeof(struct tensor)");

int register_builtin_node_ops(int op_type, struct node_ops *ops);
int unregister_builtin_node_ops(int op_type, struct node_ops *ops);
struct tensor *get_ir_graph_tensor(struct graph *graph, int index);
#endif

enum { EK_CONV, EK_FC, EK_POOL, EK_SOFTMAX, EK_RELU, EK_RELU6 };
enum { EK_SCORE = 8000 }; /* above Tengine's own x86 kernels (6000), below OPS_SCORE_STATIC */

/* Expected dims of one tensor: rank > 0 compares every dim; rank 0 compares the
 * element count (dims[0]) and, unless -1, the leading dim (dims[1]): dense
 * tensors of equal count hold the same memory whatever their rank. */
struct ek_shape { int rank; int dims[8]; };

struct ek_kernel {
    struct node_ops ops; /* first: Tengine hands &ops back to every callback */
    int op_type, family, inputs;
    int p[12]; /* family parameters, see ek_params_match */
    struct ek_shape shapes[4]; /* the inputs, then the output */
    int (*call)(float *const *tensors);
};

static int ek_prerun(struct node_ops *, struct exec_node *, struct exec_graph *);
static int ek_run(struct node_ops *, struct exec_node *, struct exec_graph *);
static int ek_nothing(struct node_ops *, struct exec_node *, struct exec_graph *);
static int ek_bind(struct node_ops *, struct exec_node *, struct exec_graph *);
static int ek_unbind(struct node_ops *, struct exec_node *, struct exec_graph *);
static int ek_score(struct node_ops *, struct exec_graph *, struct node *);
#define EK_OPS {ek_prerun, ek_run, NULL, ek_nothing, ek_bind, ek_unbind, ek_score}

static int ek_bound; /* exec nodes between init_node and release_node */

/* EK_KERNEL_TABLE */

static const int ek_kernel_count = (int)(sizeof ek_kernels / sizeof ek_kernels[0]);

static struct tensor *ek_tensor(struct node *node, int i) {
    int index = i < node->input_num ? node->input_tensors[i] : node->output_tensors[i - node->input_num];
    return get_ir_graph_tensor(node->graph, index);
}

static long ek_count(const struct tensor *t) {
    long n = 1;
    for (int i = 0; i < t->dim_num; i++) n *= t->dims[i];
    return n;
}

static int ek_shape_match(const struct ek_shape *s, const struct tensor *t, int any_layout) {
    if (!t || t->data_type != 0 || t->elem_size != 4 || t->dim_num < 1 || t->dim_num > 8) return 0;
    if (!any_layout && t->layout != 0) return 0;
    if (s->rank == 0) return ek_count(t) == s->dims[0] && (s->dims[1] < 0 || t->dims[0] == s->dims[1]);
    if (t->dim_num != s->rank) return 0;
    for (int i = 0; i < s->rank; i++)
        if (t->dims[i] != s->dims[i]) return 0;
    return 1;
}

static int ek_params_match(const struct ek_kernel *k, struct node *node) {
    const int *p = k->p;
    const void *mem = node->op.param_mem;
    if (!mem && k->family != EK_RELU6) return 0;
    switch (k->family) {
    case EK_CONV: { /* p: kh kw sh sw ph pw dh dw group activation(-1: none) c_out */
        const struct conv_param *c = mem;
        int act = c->activation < 0 ? -1 : c->activation;
        return c->kernel_h == p[0] && c->kernel_w == p[1] && c->stride_h == p[2] && c->stride_w == p[3] &&
               c->pad_h0 == p[4] && c->pad_h1 == p[4] && c->pad_w0 == p[5] && c->pad_w1 == p[5] &&
               c->dilation_h == p[6] && c->dilation_w == p[7] && c->group == p[8] && act == p[9] &&
               c->output_channel == p[10];
    }
    case EK_FC: /* p: num_output */
        return ((const struct fc_param *)mem)->num_output == p[0];
    case EK_POOL: { /* p: method kh kw sh sw ph pw covers_input (kernel = input, no padding) */
        const struct pool_param *q = mem;
        if (q->pool_method != p[0]) return 0;
        if (q->global) return p[7];
        if (q->kernel_h != p[1] || q->kernel_w != p[2] || q->stride_h != p[3] || q->stride_w != p[4] ||
            q->pad_h0 != p[5] || q->pad_w0 != p[6])
            return 0;
        /* max: Tengine clips windows to the input, as -inf padding does, and the output
         * shape (checked) fixes how far they reach (pad_h1 follows from it); avg: no
         * padding, so windows are whole and every flavour divides by the kernel area */
        return p[0] == 0 || (q->pad_h1 == 0 && q->pad_w1 == 0);
    }
    case EK_SOFTMAX: { /* p: rows, row length: softmax over an axis with nothing inside it */
        const struct tensor *in = ek_tensor(node, 0), *out = ek_tensor(node, 1);
        int axis = ((const struct softmax_param *)mem)->axis;
        long outer = 1, inner = 1;
        if (axis < 0) axis += in->dim_num;
        if (axis < 0 || axis >= in->dim_num || out->dim_num != in->dim_num) return 0;
        for (int i = 0; i < in->dim_num; i++) {
            if (out->dims[i] != in->dims[i]) return 0;
            if (i < axis) outer *= in->dims[i];
            if (i > axis) inner *= in->dims[i];
        }
        return inner == 1 && outer == p[0] && in->dims[axis] == p[1];
    }
    case EK_RELU:
        return ((const struct relu_param *)mem)->negative_slope == 0.0f;
    case EK_RELU6:
        return 1;
    }
    return 0;
}

static int ek_match(const struct ek_kernel *k, struct node *node) {
    if (!node || node->op.type != k->op_type || node->input_num != k->inputs || node->output_num != 1) return 0;
    for (int i = 0; i <= k->inputs; i++)
        if (!ek_shape_match(&k->shapes[i], ek_tensor(node, i), k->family == EK_RELU || k->family == EK_RELU6))
            return 0;
    return ek_params_match(k, node);
}

static int ek_score(struct node_ops *ops, struct exec_graph *graph, struct node *node) {
    (void)graph;
    return ek_match((const struct ek_kernel *)ops, node) ? EK_SCORE : 0;
}

static int ek_nothing(struct node_ops *ops, struct exec_node *node, struct exec_graph *graph) {
    (void)ops, (void)node, (void)graph;
    return 0;
}

static int ek_bind(struct node_ops *ops, struct exec_node *node, struct exec_graph *graph) {
    (void)ops, (void)node, (void)graph;
    __atomic_add_fetch(&ek_bound, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static int ek_unbind(struct node_ops *ops, struct exec_node *node, struct exec_graph *graph) {
    (void)ops, (void)node, (void)graph;
    __atomic_sub_fetch(&ek_bound, 1, __ATOMIC_SEQ_CST);
    return 0;
}

/* Mark this library never to be unmapped (a later dlclose leaves its code in place). */
static void ek_stay_mapped(void) {
    Dl_info self;
    if (dladdr((void *)&ek_bound, &self) && self.dli_fname) {
        void *handle = dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
        (void)handle; /* the reference is kept on purpose */
    }
}

static int ek_prerun(struct node_ops *ops, struct exec_node *node, struct exec_graph *graph) {
    (void)graph;
    return ek_match((const struct ek_kernel *)ops, node->ir_node) ? 0 : -1;
}

static int ek_run(struct node_ops *ops, struct exec_node *node, struct exec_graph *graph) {
    static int threads; /* the count last given to Halide's pool */
    const struct ek_kernel *k = (const struct ek_kernel *)ops;
    float *tensors[4];
    if (!ek_match(k, node->ir_node)) return -1; /* reshaped since prerun: not ours to compute */
    for (int i = 0; i <= k->inputs; i++) {
        tensors[i] = ek_tensor(node->ir_node, i)->data;
        if (!tensors[i]) return -1;
    }
    if (graph && graph->num_thread > 0 && graph->num_thread != __atomic_load_n(&threads, __ATOMIC_RELAXED)) {
        halide_set_num_threads(graph->num_thread);
        __atomic_store_n(&threads, graph->num_thread, __ATOMIC_RELAXED);
    }
    return k->call(tensors) == 0 ? 0 : -1;
}

EK_PUBLIC int EK_INIT(void) {
    for (int i = 0; i < ek_kernel_count; i++) {
        if (register_builtin_node_ops(ek_kernels[i].op_type, &ek_kernels[i].ops) < 0) {
            while (i-- > 0) unregister_builtin_node_ops(ek_kernels[i].op_type, &ek_kernels[i].ops);
            return -1;
        }
    }
    return 0;
}

EK_PUBLIC int EK_RELEASE(void) {
    int rc = 0;
    if (__atomic_load_n(&ek_bound, __ATOMIC_SEQ_CST) > 0) { /* a graph still runs our node_ops */
        ek_stay_mapped();
        return -1;
    }
    for (int i = ek_kernel_count - 1; i >= 0; i--)
        if (unregister_builtin_node_ops(ek_kernels[i].op_type, &ek_kernels[i].ops) < 0) rc = -1;
    return rc;
}
