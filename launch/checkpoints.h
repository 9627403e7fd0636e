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

// Saves the model and its Adam moments as DIR/ckpt_<step>.h5, then removes all but the newest
// `keep` checkpoints. The previous checkpoints stay intact if the save fails.
int ckpts_save(const char *dir, const model *m, int64_t step, uint64_t seed,
               const char *config_text, int keep, char *err);

// Resumes: `what` is "auto" (newest loadable checkpoint of dir; none: *step = 0, a fresh
// start) or a checkpoint path. Loads parameters and moments into m and sets *step.
// A damaged checkpoint under auto is reported on stderr and the next older one is tried.
int ckpts_resume(const char *what, const char *dir, model *m, uint64_t seed, int64_t *step,
                 char *loaded_from, size_t len, char *err);

#endif
