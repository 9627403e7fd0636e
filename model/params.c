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
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    // Tensors are packed without padding: consecutive entries (wq, wk, wv) form one matrix.
    p->offset = t->total;
    t->total += p->numel;
    p->decay = decay;
    return p->offset;
}

int param_table_find(const param_table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->e[i].name, name) == 0) return i;
    return -1;
}
