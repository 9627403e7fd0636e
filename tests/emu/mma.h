// mma.h (emulated): the part of CUDA's WMMA API (nvcuda::wmma) that kernels/cuda/tile_mma.cuh
// uses, for kernels run on the CPU through tests/cuda_emu.h: fragments of 16 x 16 x 8 with tf32
// operands (loaded from float) and of 16 x 16 x 16 with bf16 operands, float accumulators
// (filled, or loaded with a layout), loads and stores from shared or global memory, mma_sync,
// and __float_to_tf32 (round to nearest, ties away, to 10 mantissa bits, as cvt.rna.tf32.f32).
//
// What a GPU requires and the emulator checks (each a message and abort): every lane of the warp
// takes part in every call (the lanes still running meet at the warp and none may have
// returned), the pointer is 32-byte aligned relative to the block's shared memory (or
// absolutely, elsewhere) and ldm spans a multiple of 16 bytes.
//
// How the emulation differs: the element-to-lane mapping of a real fragment is unspecified, so
// code may only apply the same operation to every element (which the kernels do); here a
// fragment holds its whole tile in every lane and lane 0 does the work of the warp (loads,
// products in k order with fmaf, stores). Products of tf32 or bf16 operands are exact in fp32,
// so the only difference from the hardware is the accumulation's rounding order.
#ifndef SBMT_TESTS_EMU_MMA_H
#define SBMT_TESTS_EMU_MMA_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "tests/cuda_emu.h"
#include "tests/emu/cuda_bf16.h"

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K> struct frag_shape;
template <int M, int N, int K> struct frag_shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K> struct frag_shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K> struct frag_shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};

// The element type a fragment loads from, and the shape its precision has.
template <class T> struct frag_src { using type = T; };
template <> struct frag_src<precision::tf32> { using type = float; };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && (K == 8 || K == 16), "emulated WMMA: m16n16k8 or k16");
    static_assert(std::is_same<Use, accumulator>::value ||
                      (K == 8) == std::is_same<T, precision::tf32>::value,
                  "emulated WMMA: tf32 is m16n16k8, bf16 m16n16k16");
    static constexpr int rows = frag_shape<Use, M, N, K>::rows;
    static constexpr int cols = frag_shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    float x[num_elements];  // [rows][cols], the whole tile (see the top comment)
};

inline float __float_to_tf32(float v) {
    if (!std::isfinite(v)) return v;
    uint32_t u;
    std::memcpy(&u, &v, 4);
    u = (u + 0x1000u) & ~0x1FFFu;
    std::memcpy(&v, &u, 4);
    return v;
}

inline float emu_mma_val(float v) { return v; }
inline float emu_mma_val(__nv_bfloat16 v) { return __bfloat162float(v); }

inline void emu_mma_check(const void *p, unsigned ldm_bytes, const char *what) {
    const unsigned char *s = emu().smem.data(), *q = (const unsigned char *)p;
    const bool shared = q >= s && q < s + emu().smem.size();
    const uintptr_t off = shared ? (uintptr_t)(q - s) : (uintptr_t)q;
    if (off % 32 != 0 || ldm_bytes % 16 != 0) {
        std::fprintf(stderr, "cuda_emu: wmma::%s: pointer %s offset %lu not 32-byte aligned or "
                     "ldm of %u bytes not a multiple of 16\n", what, shared ? "shared" : "global",
                     (unsigned long)off, ldm_bytes);
        std::abort();
    }
}

// Every lane of the warp must be here: the lanes still running meet at the warp, and none of
// the warp's lanes may have returned. A load or a store is one instruction of the whole warp on a
// GPU, so no lane goes on before it is done: the lead does it between two meetings of the warp
// (emu_mma_lead, then __syncwarp), whichever order the lanes run in.
inline bool emu_mma_lead() {
    __syncwarp();
    emu_state &s = emu();
    const unsigned w = s.thread.x / 32, end = std::min<unsigned>((w + 1) * 32, s.block_dim.x);
    for (unsigned t = w * 32; t < end; t++)
        if (s.f[t].state == EMU_DONE) {
            std::fprintf(stderr, "cuda_emu: wmma call in warp %u without lane %u (returned): "
                         "WMMA needs the whole warp\n", w, t % 32);
            std::abort();
        }
    return s.thread.x % 32 == 0;
}

template <class Use, int M, int N, int K, class T, class Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout> &f,
                             const typename frag_src<T>::type *p, unsigned ldm) {
    static_assert(!std::is_same<Use, accumulator>::value, "an accumulator load takes a layout");
    emu_mma_check(p, ldm * (unsigned)sizeof(*p), "load_matrix_sync");
    if (emu_mma_lead()) {
        constexpr bool colm = std::is_same<Layout, col_major>::value;
        for (int r = 0; r < f.rows; r++)
            for (int c = 0; c < f.cols; c++)
                f.x[r * f.cols + c] =
                    emu_mma_val(colm ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]);
    }
    __syncwarp();
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ldm,
                             layout_t layout) {
    emu_mma_check(p, ldm * 4u, "load_matrix_sync");
    if (emu_mma_lead())
        for (int r = 0; r < M; r++)
            for (int c = 0; c < N; c++)
                f.x[r * N + c] =
                    layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
    __syncwarp();
}

template <int M, int N, int K>
inline void fill_fragment(fragment<accumulator, M, N, K, float> &f, float v) {
    for (int i = 0; i < f.num_elements; i++) f.x[i] = v;
}

template <int M, int N, int K, class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d,
                     const fragment<matrix_a, M, N, K, T, LA> &a,
                     const fragment<matrix_b, M, N, K, T, LB> &b,
                     const fragment<accumulator, M, N, K, float> &c) {
    if (!emu_mma_lead()) return;
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float t = c.x[i * N + j];
            for (int k = 0; k < K; k++) t = std::fmaf(a.x[i * K + k], b.x[k * N + j], t);
            out[i * N + j] = t;
        }
    std::memcpy(d.x, out, sizeof(out));
}

template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                              unsigned ldm, layout_t layout) {
    emu_mma_check(p, ldm * 4u, "store_matrix_sync");
    if (emu_mma_lead())
        for (int r = 0; r < M; r++)
            for (int c = 0; c < N; c++)
                (layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]) =
                    f.x[r * N + c];
    __syncwarp();
}

}  // namespace wmma
}  // namespace nvcuda

#endif
