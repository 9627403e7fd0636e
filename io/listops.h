// listops.h: the LRA ListOps generator of SPEC.md section 7, deterministic for a seed.
#ifndef SBMT_LISTOPS_H
#define SBMT_LISTOPS_H

#include <stdint.h>

// Token ids: 0 padding, then these 15 symbols in this order (id = index + 1).
#define LISTOPS_VOCAB 16
#define LISTOPS_CLASSES 10
extern const char *const listops_symbols[LISTOPS_VOCAB];  // [0] = "<pad>"

typedef struct {
    int64_t train, dev, test;
    int min_len, max_len;  // token length strictly between these
    int seq_len;           // padded length; must be >= max_len - 1
    uint64_t seed;
} listops_params;

// Generates all three splits (no duplicates across the whole file) into an sbmt dataset file.
// progress != 0 prints a line to stderr now and then. Returns 0 or -1 with err set.
int listops_generate(const listops_params *p, const char *out_path, int progress, char *err);

// Evaluates a token sequence (ids as above, padding ignored); returns the label or -1 if malformed.
int listops_eval_ids(const int32_t *ids, int len);

#endif
