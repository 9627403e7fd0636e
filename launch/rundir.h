// rundir.h: what an output directory already holds. A fresh run (no --resume) into a directory
// with an earlier run's files would append to its metrics and mix checkpoints of two runs (the
// pruning keeps the newest steps, so the new run's checkpoints could be the ones removed), so
// train refuses it unless --overwrite says to remove the earlier run first.
#ifndef SBMT_RUNDIR_H
#define SBMT_RUNDIR_H

#include <stddef.h>

// Describes the earlier run in dir into desc ("metrics.jsonl, 3 checkpoints (steps 100..300),
// final.h5, 2 TensorBoard event files"); returns how many such files there are (0: none).
int rundir_describe(const char *dir, char *desc, size_t len);

// Removes the earlier run's files: checkpoints (and their temporary files), final.h5,
// metrics.jsonl, report.svg and tb/'s event files. Nothing else in dir is touched.
int rundir_clear(const char *dir, char *err);

#endif
