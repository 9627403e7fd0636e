// checkpoints.h: the run directory's checkpoints: DIR/ckpt_<step>.h5 written atomically, the
// newest keep_checkpoints kept (older ones removed only after a newer one is complete), and
// the resume rule (--resume auto: newest loadable checkpoint, skipping damaged ones).
#ifndef SBMT_CHECKPOINTS_H
#define SBMT_CHECKPOINTS_H

#include <stdint.h>

#include "model/model.h"

// Steps of the complete checkpoints in dir (ckpt_<step>.h5, temporaries ignored), newest
// first; returns the count (at most max).
int ckpts_list(const char *dir, int64_t *steps, int max);
void ckpts_path(char *out, size_t len, const char *dir, int64_t step);

// Saves whole tensors (laid out by t, the model's logical table) and both Adam moments as
// DIR/ckpt_<step>.h5, then removes all but the newest `keep` checkpoints. The previous
// checkpoints stay intact if the save fails.
int ckpts_save(const char *dir, const param_table *t, const float *params, const float *adam_m,
               const float *adam_v, int64_t step, uint64_t seed, const char *config_text,
               int keep, char *err);

// Resumes: `what` is "auto" (newest loadable checkpoint of dir; none: *step = 0, a fresh
// start) or a checkpoint path. Loads this rank's slices of parameters and moments into m (from
// whole tensors, so any layout resumes any other) and sets *step. A damaged checkpoint under
// auto is skipped for the next older one (reported on stderr when verbose).
int ckpts_resume(const char *what, const char *dir, model *m, uint64_t seed, int64_t *step,
                 char *loaded_from, size_t len, int verbose, char *err);

#endif
