// cuda_bf16.h (emulated): bfloat16 storage and the round-to-nearest-even conversion.
#ifndef SBMT_EMU_CUDA_BF16_H
#define SBMT_EMU_CUDA_BF16_H

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t x;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    __nv_bfloat16 b;
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu)) {
        b.x = (uint16_t)((u >> 16) | 0x40);  // NaN stays a (quiet) NaN
        return b;
    }
    u += 0x7FFFu + ((u >> 16) & 1u);
    b.x = (uint16_t)(u >> 16);
    return b;
}

inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.x << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

#endif
