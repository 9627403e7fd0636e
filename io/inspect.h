// inspect.h: a human-readable summary of any sbmt HDF5 file (`sbmt inspect F`).
#ifndef SBMT_INSPECT_H
#define SBMT_INSPECT_H

#include <stdio.h>

// Checkpoints: format, version, step, seed, config, every tensor with its shape and the
// optimizer state present. Datasets: task, sizes, splits with their rows and on-disk types.
// Returns -1 with err naming the file for anything that is not a readable sbmt HDF5 file.
int inspect_file(const char *path, FILE *out, char *err);

#endif
