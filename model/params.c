// params.c: the parameter name/shape table.
#include "model/params.h"

#include <string.h>

#include "kernels/common.h"

void param_table_init(param_table *t) { memset(t, 0, sizeof(*t)); }

void param_table_free(param_table *t) {
    free(t->e);
    memset(t, 0, sizeof(*t));
}

size_t param_table_add(param_table *t, const char *name, int ndim, const int64_t *shape, int decay) {
    CHECK(ndim >= 1 && ndim <= PARAM_MAX_DIM);
    CHECK(strlen(name) < PARAM_NAME_LEN);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->e = realloc(t->e, (size_t)t->cap * sizeof(param_entry));
        CHECK(t->e != NULL);
    }
    param_entry *p = &t->e[t->n++];
    memset(p, 0, sizeof(*p));
    strcpy(p->name, name);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = p->gshape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    // Tensors are packed without padding: consecutive entries (wq, wk, wv) form one matrix.
    p->offset = t->total;
    t->total += p->numel;
    p->decay = decay;
    p->shard = -1;
    return p->offset;
}

void param_table_shard(param_table *t, int dim, int tp) {
    CHECK(t->n > 0);
    param_entry *p = &t->e[t->n - 1];
    CHECK(dim >= 0 && dim < p->ndim);
    p->shard = dim;
    p->gshape[dim] = p->shape[dim] * tp;
}

void param_table_tp_sum(param_table *t) {
    CHECK(t->n > 0);
    t->e[t->n - 1].tp_sum = 1;
}

int param_table_find(const param_table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->e[i].name, name) == 0) return i;
    return -1;
}
