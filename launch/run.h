// run.h: pieces shared by the train and eval commands: resolving the configuration against a
// dataset, building the model dimensions, and evaluating a model on a split.
#ifndef SBMT_RUN_H
#define SBMT_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "io/config.h"
#include "dist/dist.h"
#include "io/dataset.h"
#include "kernels/kernels.h"
#include "model/model.h"

// Checks the dataset against the configuration (seq_len, vocab, classes, dual) and fills the
// 0 ("from the dataset") fields of cfg. Fails naming both sources.
int run_resolve_config(sbmt_config *cfg, const ds_file *ds, char *err);
// What the configuration asks of a CUDA backend that it cannot give (SBM attention draws every
// graph by the dense rule and takes heads of 16, 32 or 64): -1 with the setting named, else 0.
int run_check_cuda_sbm(const sbmt_config *cfg, const kctx *k, char *err);
model_dims run_model_dims(const sbmt_config *cfg);

#define EVAL_MAX_DENS 1024

typedef struct {
    double loss;      // mean cross-entropy (+ the density regulariser for sbm)
    double accuracy;  // fraction correct
    int64_t rows;     // rows evaluated
    int nd;           // layers * heads with a density (sbm), else 0
    double density[EVAL_MAX_DENS];  // [L, H] sampled edges / (rows * n * n)
} eval_result;

// Writes `"density":[[..],..],"density_mean":x` for L x H densities (no leading comma).
void run_json_density(FILE *f, const double *dens, int layers, int heads);

// Evaluates rows [0, max_rows) of a split (max_rows <= 0: all) in batches of at most
// m->max_batch, without dropout. With dist, dp ranks split the rows and the sums are reduced,
// so every rank gets the result one process would give. dist may be NULL (one process).
int run_evaluate(model *m, kctx *k, dist_ctx *dist, ds_file *ds, int split, int64_t max_rows,
                 const sbmt_config *cfg, eval_result *res, char *err);

// Reads the rows `rows[0..count)` of a split into ids_buf ([count, seq_len] ids, then as many
// for the second documents of a dual dataset) and labels [count].
int run_read_rows(ds_file *ds, int split, const int64_t *rows, int count, const sbmt_config *cfg,
                  int32_t *ids_buf, int32_t *labels, char *err);
// run_read_rows on tp rank 0 only, then a broadcast to its tp group (whose ranks compute on the
// same examples); a read error is agreed on within the group first. Collective over the tp group.
int run_share_rows(dist_ctx *dist, ds_file *ds, int split, const int64_t *rows, int count,
                   const sbmt_config *cfg, int32_t *ids_buf, int32_t *labels, char *err);
// Packs examples [first, first + count) of a buffer of `total` examples filled by run_read_rows
// into bt (dual: documents become sequences 2i and 2i+1, keyed by 2 row and 2 row + 1).
void run_pack_rows(const int32_t *ids_buf, int total, int first, int count, const int64_t *rows,
                   const sbmt_config *cfg, kbatch *bt);

#endif
