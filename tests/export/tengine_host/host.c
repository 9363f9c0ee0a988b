/* A stand-in for Tengine lite (1.4 - 1.5) that does to a plugin what Tengine does.
 *
 *   host PLUGIN INIT RELEASE SPEC
 *
 * - Loads PLUGIN with dlopen(RTLD_LAZY) and calls INIT, as load_tengine_plugin()
 *   does; the plugin's register_builtin_node_ops / unregister_builtin_node_ops /
 *   get_ir_graph_tensor resolve against this executable (linked with -rdynamic), as
 *   they resolve against libtengine-lite.so in a real process.
 * - Keeps a registry of node_ops per op type, in which a built-in kernel of score
 *   4000 (Tengine's reference kernels) was registered first for every op type.
 * - Builds one node from SPEC with Tengine's own structure layouts (struct node,
 *   struct tensor, struct exec_node, struct exec_graph and the op parameter
 *   structs, per tengine-abi.md; the byte offsets measured on a Tengine build are
 *   checked below), asks every registered node_ops of the op type for its score and
 *   keeps the strictly highest (the first on a tie).
 * - If a plugin kernel won: init_node, prerun, reshape (if set), run twice (two
 *   graph executions), postrun, release_node; writes the output tensor to its file.
 * - Calls RELEASE and checks that nothing the plugin registered stays registered,
 *   then dlclose()s the plugin, as unload_tengine_plugin() does.
 *
 * SPEC lines:  op TYPE | threads N | param conv|pool|fc|softmax|relu|none VALUES... |
 *              input FILE RANK DIMS... | output FILE RANK DIMS... |
 *              reshape (after prerun, the batch of the first input and the output grows
 *              by one, as when a graph is reshaped: the kernel no longer fits the node) |
 *              unload_bound (after prerun, unload the plugin as unload_tengine_plugin()
 *              does, RELEASE then dlclose, while the node is still bound: RELEASE must
 *              refuse and the plugin's code must stay mapped for the runs that follow)
 * Prints "score S plugin|builtin" and, after a plugin ran, "threads T" (the
 * process's threads: Halide's pool must follow exec_graph.num_thread); exits
 * non-zero on any failure.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node;
struct graph;
struct exec_node;
struct exec_graph;

struct node_ops {
    int (*prerun)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*run)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*reshape)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*postrun)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*init_node)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*release_node)(struct node_ops *, struct exec_node *, struct exec_graph *);
    int (*score)(struct node_ops *, struct exec_graph *, struct node *);
};

struct exec_node {
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

struct exec_graph {
    void *exec_node_list, *mem_pool, *dev;
    void *shared_mem;
    int shared_mem_size;
    void *shared_pack4_mem;
    int shared_pack4_mem_size;
    int num_thread;
    int mode;
    size_t cpu_affinity;
    void *timer;
};

struct node {
    uint16_t index;
    uint8_t dynamic_shape, input_num, output_num, node_type;
    int8_t subgraph_idx;
    uint16_t *input_tensors, *output_tensors;
    char *name;
    struct {
        uint16_t type;
        uint8_t version, same_shape;
        uint16_t param_size;
        void *param_mem;
        int (*infer_shape)(struct node *);
    } op;
    struct graph *graph;
};

struct tensor {
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
    void *dev_mem;
    uint8_t *subgraph_list;
};

struct pool_param {
    int pool_method, kernel_h, kernel_w, stride_h, stride_w, pad_h0, pad_h1, pad_w0, pad_w1, global, caffe_flavor;
    void *funct;
    int pad_h0_org, pad_h1_org, pad_w0_org, pad_w1_org;
    void *input_pad;
};

_Static_assert(offsetof(struct tensor, data_type) == 19, "measured on Tengine");
_Static_assert(offsetof(struct tensor, dim_num) == 20, "measured on Tengine");
_Static_assert(offsetof(struct tensor, elem_size) == 21, "measured on Tengine");
_Static_assert(offsetof(struct tensor, layout) == 25, "measured on Tengine");
_Static_assert(offsetof(struct tensor, elem_num) == 28, "measured on Tengine");
_Static_assert(offsetof(struct tensor, dims) == 32, "measured on Tengine");
_Static_assert(offsetof(struct tensor, data) == 64, "measured on Tengine");
_Static_assert(sizeof(struct tensor) == 112, "measured on Tengine");

/* -- the registry (Tengine's cpu device) --------------------------------------- */
#define MAX_OP 128
#define MAX_OPS 32
static struct node_ops *registry[MAX_OP][MAX_OPS];
static int registered[MAX_OP];

int register_builtin_node_ops(int op_type, struct node_ops *ops) {
    if (op_type < 0 || op_type >= MAX_OP || !ops || registered[op_type] == MAX_OPS) return -1;
    registry[op_type][registered[op_type]++] = ops;
    return 0;
}

int unregister_builtin_node_ops(int op_type, struct node_ops *ops) {
    if (op_type < 0 || op_type >= MAX_OP) return -1;
    for (int i = 0; i < registered[op_type]; i++) {
        if (registry[op_type][i] == ops) {
            memmove(&registry[op_type][i], &registry[op_type][i + 1],
                    (size_t)(registered[op_type] - i - 1) * sizeof ops);
            registered[op_type]--;
            return 0;
        }
    }
    return -1;
}

struct graph {
    struct tensor **tensors;
    int count;
};

struct tensor *get_ir_graph_tensor(struct graph *graph, int index) {
    return index >= 0 && index < graph->count ? graph->tensors[index] : NULL;
}

/* Tengine's reference kernels: score 4000 on every node of their type. */
static int builtin_score(struct node_ops *ops, struct exec_graph *g, struct node *n) {
    (void)ops, (void)g, (void)n;
    return 4000;
}
static struct node_ops builtin = {.score = builtin_score};

/* -- the node from SPEC ------------------------------------------------------- */
#define MAX_TENSORS 4

static int fail(const char *what) {
    fprintf(stderr, "host: %s\n", what);
    return 1;
}

static struct tensor *read_tensor(FILE *spec, int index, char *file, size_t file_size, int is_input) {
    struct tensor *t = calloc(1, sizeof *t);
    int rank;
    char format[32];
    snprintf(format, sizeof format, "%%%zus %%d", file_size - 1);
    if (fscanf(spec, format, file, &rank) != 2 || rank < 1 || rank > 8) return free(t), NULL;
    t->index = (uint16_t)index;
    t->dim_num = (uint8_t)rank;
    t->elem_size = 4;
    t->elem_num = 1;
    for (int i = 0; i < rank; i++) {
        if (fscanf(spec, "%d", &t->dims[i]) != 1 || t->dims[i] < 1) return free(t), NULL;
        t->elem_num *= (uint32_t)t->dims[i];
    }
    t->data = malloc((size_t)t->elem_num * 4); /* exactly the tensor's bytes */
    if (is_input) {
        FILE *f = fopen(file, "rb");
        size_t got = f ? fread(t->data, 4, t->elem_num, f) : 0;
        if (f) fclose(f);
        if (got != t->elem_num) return free(t->data), free(t), NULL;
    } else {
        memset(t->data, 0xff, (size_t)t->elem_num * 4); /* NaN: unwritten elements show */
    }
    return t;
}

/* The op's parameter struct, allocated at exactly its size ("none": no struct). */
static int read_param(FILE *spec, void **mem, int *size) {
    char kind[16];
    *mem = NULL, *size = 0;
    if (fscanf(spec, "%15s", kind) != 1) return -1;
    if (!strcmp(kind, "none")) return 0;
    if (!strcmp(kind, "relu")) {
        float *slope = malloc(sizeof *slope);
        *mem = slope, *size = sizeof *slope;
        return fscanf(spec, "%f", slope) == 1 ? 0 : -1;
    }
    if (!strcmp(kind, "pool")) {
        struct pool_param *p = calloc(1, sizeof *p);
        int *v = &p->pool_method;
        *mem = p, *size = sizeof *p;
        for (int i = 0; i < 11; i++)
            if (fscanf(spec, "%d", &v[i]) != 1) return -1;
        p->pad_h0_org = p->pad_h0, p->pad_h1_org = p->pad_h1, p->pad_w0_org = p->pad_w0, p->pad_w1_org = p->pad_w1;
        return 0;
    }
    int count = !strcmp(kind, "conv") ? 15 : !strcmp(kind, "fc") || !strcmp(kind, "softmax") ? 1 : -1;
    if (count < 0) return -1;
    int *v = malloc((size_t)count * sizeof *v); /* conv_param, fc_param, softmax_param: ints only */
    *mem = v, *size = count * (int)sizeof *v;
    for (int i = 0; i < count; i++)
        if (fscanf(spec, "%d", &v[i]) != 1) return -1;
    return 0;
}

/* Threads of this process now (the plugin's Halide pool included). */
static int count_threads(void) {
    int count = 0;
    DIR *dir = opendir("/proc/self/task");
    for (struct dirent *e; dir && (e = readdir(dir));) count += e->d_name[0] != '.';
    if (dir) closedir(dir);
    return count;
}

int main(int argc, char **argv) {
    if (argc != 5) return fail("usage: host PLUGIN INIT RELEASE SPEC");
    for (int op = 0; op < MAX_OP; op++) register_builtin_node_ops(op, &builtin); /* init_tengine() */

    void *plugin = dlopen(argv[1], RTLD_LAZY);
    if (!plugin) return fail(dlerror());
    int (*init)(void) = (int (*)(void))dlsym(plugin, argv[2]);
    int (*release)(void) = (int (*)(void))dlsym(plugin, argv[3]);
    if (!init || !release) return fail("init or release not exported");
    if (init() < 0) return fail("init failed");

    FILE *spec = fopen(argv[4], "r");
    if (!spec) return fail("cannot open spec");
    struct tensor *tensors[MAX_TENSORS] = {0};
    char files[MAX_TENSORS][512];
    struct graph graph = {tensors, 0};
    struct node node = {.graph = &graph, .output_num = 0};
    struct exec_graph exec_graph = {.num_thread = 1};
    uint16_t inputs[MAX_TENSORS], outputs[1];
    char word[16];
    int op_type = -1, param_size = 0, output = -1, reshape = 0, unload_bound = 0, unloaded = 0;
    while (fscanf(spec, "%15s", word) == 1) {
        if (!strcmp(word, "op")) {
            if (fscanf(spec, "%d", &op_type) != 1 || op_type < 0 || op_type >= MAX_OP) return fail("bad op");
        } else if (!strcmp(word, "threads")) {
            if (fscanf(spec, "%d", &exec_graph.num_thread) != 1) return fail("bad threads");
        } else if (!strcmp(word, "reshape")) {
            reshape = 1;
        } else if (!strcmp(word, "unload_bound")) {
            unload_bound = 1;
        } else if (!strcmp(word, "param")) {
            if (read_param(spec, &node.op.param_mem, &param_size)) return fail("bad param");
        } else if (!strcmp(word, "input") || !strcmp(word, "output")) {
            int is_input = word[0] == 'i';
            if (graph.count == MAX_TENSORS || (is_input && output >= 0)) return fail("too many tensors");
            tensors[graph.count] = read_tensor(spec, graph.count, files[graph.count], sizeof files[0], is_input);
            if (!tensors[graph.count]) return fail("bad tensor");
            if (is_input) inputs[node.input_num++] = (uint16_t)graph.count;
            else outputs[0] = (uint16_t)graph.count, node.output_num = 1, output = graph.count;
            graph.count++;
        } else {
            return fail("unknown spec line");
        }
    }
    fclose(spec);
    if (op_type < 0 || output < 0) return fail("spec needs op and output");
    node.op.type = (uint16_t)op_type;
    node.op.param_size = (uint16_t)param_size;
    node.input_tensors = malloc(node.input_num * sizeof *inputs); /* exactly input_num entries */
    memcpy(node.input_tensors, inputs, node.input_num * sizeof *inputs);
    node.output_tensors = malloc(sizeof *outputs);
    node.output_tensors[0] = outputs[0];

    struct node_ops *best = NULL;
    int best_score = 0;
    for (int i = 0; i < registered[op_type]; i++) {
        int score = registry[op_type][i]->score(registry[op_type][i], &exec_graph, &node);
        if (score > best_score) best = registry[op_type][i], best_score = score;
    }
    printf("score %d %s\n", best_score, best == &builtin ? "builtin" : "plugin");
    int status = 0;
    if (best && best != &builtin) {
        struct exec_node exec_node = {.ir_node = &node, .node_ops = best, .output_num = 1};
        status |= best->init_node && best->init_node(best, &exec_node, &exec_graph);
        status |= best->prerun && best->prerun(best, &exec_node, &exec_graph);
        if (reshape) tensors[0]->dims[0]++, tensors[output]->dims[0]++;
        if (unload_bound) {
            if (release() >= 0) status = fail("release succeeded while a node was bound");
            if (registered[op_type] < 2) status = fail("a refused release unregistered node_ops");
            if (dlclose(plugin)) status = fail(dlerror());
            unloaded = 1;
            printf("release refused\n");
        }
        for (int run = 0; run < 2 && !status; run++) {
            status |= best->reshape && best->reshape(best, &exec_node, &exec_graph);
            status |= best->run(best, &exec_node, &exec_graph) != 0;
        }
        status |= best->postrun && best->postrun(best, &exec_node, &exec_graph);
        status |= best->release_node && best->release_node(best, &exec_node, &exec_graph);
        if (status) fprintf(stderr, "host: a node callback failed\n");
        printf("threads %d\n", count_threads());
        struct tensor *out = tensors[output];
        FILE *f = fopen(files[output], "wb");
        if (!f || fwrite(out->data, 4, out->elem_num, f) != out->elem_num) status = fail("cannot write output");
        if (f) fclose(f);
    }

    if (release() < 0) status = fail("release failed");
    for (int op = 0; op < MAX_OP; op++)
        if (registered[op] != 1 || registry[op][0] != &builtin) status = fail("release left node_ops registered");
    if (!unloaded && dlclose(plugin)) status = fail(dlerror());

    for (int i = 0; i < graph.count; i++) free(tensors[i]->data), free(tensors[i]);
    free(node.input_tensors), free(node.output_tensors), free(node.op.param_mem);
    return status;
}
