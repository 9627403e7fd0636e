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
// Index of the entry with this name, or -1.
int param_table_find(const param_table *t, const char *name);

#endif
