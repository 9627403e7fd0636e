// params.h: the flat parameter buffer and its name/shape table (names and shapes of SPEC.md
// section 6). Parameters, gradients and both Adam moments share this one layout, so an
// optimizer step or an all-reduce is a single loop or call over one contiguous buffer.
#ifndef SBMT_PARAMS_H
#define SBMT_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define PARAM_NAME_LEN 96
#define PARAM_MAX_DIM 4

typedef struct {
    char name[PARAM_NAME_LEN];  // e.g. "layers/0/attn/wq/weight" (relative to /model/)
    int ndim;
    int64_t shape[PARAM_MAX_DIM];
    size_t offset;  // in floats, into the flat buffer
    size_t numel;
    int decay;      // 1: AdamW weight decay applies (matrices), 0: biases, norms, embeddings
    // Head parallelism (SPEC.md section 5): the rank holds a slice of the logical tensor.
    int shard;      // -1: replicated on every tp rank; 0 or 1: the dimension split over tp
    int tp_sum;     // 1: replicated, but each tp rank computes its gradient from its own heads
                    // (phi), so gradients are summed over the tp group
    int64_t gshape[PARAM_MAX_DIM];  // logical shape (= shape when shard is -1)
} param_entry;

typedef struct {
    param_entry *e;
    int n, cap;
    size_t total;  // floats
} param_table;

void param_table_init(param_table *t);
void param_table_free(param_table *t);
// Appends an entry at the current end of the buffer; returns its offset. Shape terminated by ndim.
size_t param_table_add(param_table *t, const char *name, int ndim, const int64_t *shape, int decay);
// Marks the last added entry as split over tp ranks along `dim` (its shape is the local slice;
// the logical shape multiplies that dim by tp), or as replicated with a tp-summed gradient.
void param_table_shard(param_table *t, int dim, int tp);
void param_table_tp_sum(param_table *t);
// Index of the entry with this name, or -1.
int param_table_find(const param_table *t, const char *name);

#endif
