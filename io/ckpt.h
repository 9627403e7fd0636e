// ckpt.h: HDF5 checkpoints (SPEC.md section 6): model tensors under /model/<name>, stored whole
// as float32 in PyTorch layout, with step, seed and the resolved config text on the root.
#ifndef SBMT_CKPT_H
#define SBMT_CKPT_H

#include <stdint.h>

#include "model/params.h"

// Writes the tensors of `t` from the flat buffer `params` (and, when non-NULL, the Adam moments
// under /optim/adam_m and /optim/adam_v; both or neither) to path. Written to path + ".tmp",
// fsync'd, closed and renamed, so a crash never leaves a half-written file under the final name.
// On failure (unwritable directory, disk full) returns -1 with a message, removes the temporary
// file and leaves an existing file at path untouched. Datasets carry Fletcher32 checksums.
// Assembles the file in memory first: needs about twice the checkpoint's size in RAM while saving.
int ckpt_save(const char *path, const param_table *t, const float *params, const float *adam_m,
              const float *adam_v, int64_t step, uint64_t seed, const char *config_text, char *err);

// Reads the root attributes of a checkpoint: step, seed and a malloc'd copy of the config text.
int ckpt_read_meta(const char *path, int64_t *step, uint64_t *seed, char **config_text, char *err);

// Loads every tensor of `t` into params (and moments when non-NULL) after checking that the
// file is an sbmt checkpoint and that each name exists with the expected shape; mismatches are
// reported by name with both shapes, and tensors under /model the table lacks are rejected.
// Every check runs before any read, so a mismatch leaves the buffers untouched; a corrupted or
// truncated file is an error (-1), possibly after some tensors were already read.
int ckpt_load(const char *path, const param_table *t, float *params, float *adam_m, float *adam_v,
              char *err);

#endif
