// tile_mma.cuh: the tile products of the attention kernels on tensor cores (WMMA, fp32
// accumulation): tf32 operands rounded to nearest from float tiles (train.precision = tf32, and
// the straight-through products in every tensor-core mode), or bf16 tiles (bf16). The 4 warps
// of a block share a product's 16 x 16 output blocks, and each output goes to a shared staging tile
// that the SIMT part of the kernel (masks, online softmax, dropout) reads in its own thread
// layout, since a WMMA fragment's element-to-lane mapping is unspecified. Operand rows must be
// 16 bytes apart and tiles 32-byte aligned (tile_layout pads them so).
#ifndef SBMT_CUDA_TILE_MMA_CUH
#define SBMT_CUDA_TILE_MMA_CUH

#include <type_traits>

#ifdef SBMT_TESTS_CUDA_EMU_H
#include "tests/emu/cuda_bf16.h"
#include "tests/emu/mma.h"
#else
#include <cuda_bf16.h>
#include <mma.h>
#endif

// How the attention tiles' products run (a kernel's TM): SIMT fp32; tensor cores with tf32
// operands (train.precision = tf32) or bf16 operands (bf16).
enum { TM_SIMT = 0, TM_TF32 = 1, TM_BF16 = 2 };

#ifndef MMA_NWARPS
#define MMA_NWARPS 4  // NTHREADS / 32
#endif

// WMMA's shape for an operand element type: m16n16k8 with tf32 from float, m16n16k16 for bf16.
template <class E> struct mma_kind {
    static constexpr int K = 8;
    using prec = nvcuda::wmma::precision::tf32;
};
template <> struct mma_kind<__nv_bfloat16> {
    static constexpr int K = 16;
    using prec = __nv_bfloat16;
};

// C [M][N] (row stride ldc, floats) = A B^T for A [M][K] (lda) and B [N][K] (ldb), operands of
// type E: the scores of rows against rows. TRANS_B = false: B is [K][N] (ldb) and C = A B, the
// aggregations. A warp owns one 16-row block at a time and CB of its 16-column blocks, so each
// A fragment it loads serves CB products (with fewer row blocks than warps, WR warps split a
// row block's columns).
template <int M, int N, int K, bool TRANS_B, class E>
__device__ __forceinline__ void mma_tile(float *C, int ldc, const E *A, int lda, const E *B,
                                         int ldb) {
    using namespace nvcuda;
    using prec = typename mma_kind<E>::prec;
    constexpr int KS = mma_kind<E>::K;
    constexpr bool tf32 = std::is_same<E, float>::value;
    static_assert(M % 16 == 0 && N % 16 == 0 && K % KS == 0, "WMMA tiles are 16 x 16 x KS");
    using b_layout = typename std::conditional<TRANS_B, wmma::col_major, wmma::row_major>::type;
    constexpr int BM = M / 16, BN = N / 16, NW = MMA_NWARPS;
    constexpr int WR = BM >= NW ? 1 : NW / BM;  // warps per row block
    static_assert(BM >= NW || NW % BM == 0, "row blocks must divide the warps");
    constexpr int CB = (BN + WR - 1) / WR;      // column blocks per warp
    const int w = (int)threadIdx.x / 32;
    for (int bm = w / WR; bm < BM; bm += NW / WR) {  // warp-uniform
        wmma::fragment<wmma::accumulator, 16, 16, KS, float> acc[CB];
#pragma unroll
        for (int c = 0; c < CB; c++) wmma::fill_fragment(acc[c], 0.0f);
#pragma unroll 2
        for (int k = 0; k < K; k += KS) {
            wmma::fragment<wmma::matrix_a, 16, 16, KS, prec, wmma::row_major> fa;
            wmma::load_matrix_sync(fa, A + (size_t)bm * 16 * lda + k, lda);
            if constexpr (tf32) {
#pragma unroll
                for (int i = 0; i < fa.num_elements; i++) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
            }
#pragma unroll
            for (int c = 0; c < CB; c++) {
                const int bn = w % WR + c * WR;
                if (bn >= BN) break;
                wmma::fragment<wmma::matrix_b, 16, 16, KS, prec, b_layout> fb;
                wmma::load_matrix_sync(fb, TRANS_B ? B + (size_t)bn * 16 * ldb + k
                                                   : B + (size_t)k * ldb + bn * 16, ldb);
                if constexpr (tf32) {
#pragma unroll
                    for (int i = 0; i < fb.num_elements; i++)
                        fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
                }
                wmma::mma_sync(acc[c], fa, fb, acc[c]);
            }
        }
#pragma unroll
        for (int c = 0; c < CB; c++) {
            const int bn = w % WR + c * WR;
            if (bn < BN)
                wmma::store_matrix_sync(C + (size_t)bm * 16 * ldc + bn * 16, acc[c], ldc,
                                        wmma::mem_row_major);
        }
    }
}

// C [M][n] += A B for A [M][K] (lda) and B [K][n] (ldb), n a multiple of 16 known at run time:
// the straight-through products, accumulated in place in shared memory (each warp always owns
// the same output blocks, so no barrier is needed between calls).
template <int M, int K>
__device__ __forceinline__ void mma_tile_acc(float *C, int ldc, int n, const float *A, int lda,
                                             const float *B, int ldb) {
    using namespace nvcuda;
    static_assert(M % 16 == 0 && K % 8 == 0, "WMMA tiles are 16 x 16 x 8");
    const int BN = n / 16, NB = (M / 16) * BN;
    for (int t = (int)threadIdx.x / 32; t < NB; t += MMA_NWARPS) {
        const int bm = t / BN, bn = t % BN;
        float *c = C + (size_t)bm * 16 * ldc + bn * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
        wmma::load_matrix_sync(acc, c, ldc, wmma::mem_row_major);
#pragma unroll 4
        for (int k = 0; k < K; k += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
            wmma::load_matrix_sync(fa, A + (size_t)bm * 16 * lda + k, lda);
            wmma::load_matrix_sync(fb, B + (size_t)k * ldb + bn * 16, ldb);
#pragma unroll
            for (int i = 0; i < fa.num_elements; i++) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
#pragma unroll
            for (int i = 0; i < fb.num_elements; i++) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(c, acc, ldc, wmma::mem_row_major);
    }
}

#endif
