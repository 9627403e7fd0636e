// dbatch.h: the packed batch as CUDA kernels see it (device arrays, host counts), mirrored from
// a kbatch by k_batch_upload. Plain data, so kernel headers that take one also compile for
// tests/cuda_emu.h's host emulation. Internal to kernels/cuda/.
#ifndef SBMT_CUDA_DBATCH_H
#define SBMT_CUDA_DBATCH_H

#include <stdint.h>

struct dbatch {
    int B, n, T;
    const int *len, *off;  // [B], [B+1]
    const int32_t *ids;    // [T]
    const float *mask;     // [T]
    const uint32_t *sample;  // [B]
};

#endif
