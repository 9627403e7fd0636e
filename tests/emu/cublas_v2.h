// cublas_v2.h (emulated): the cuBLAS calls of the CUDA backend, on the CPU through CBLAS with
// cuBLAS's column-major conventions, so the backend's transposes and leading dimensions are
// tested as written. cublasGemmEx takes bf16 (CUDA_R_16BF) or fp32 operands and fp32 output.
// Arguments are checked at the call; the product is queued on the handle's stream
// (cublasSetStream) and runs when that stream does. alpha and beta are host scalars
// (CUBLAS_POINTER_MODE_HOST), read at the call as cuBLAS reads them.
#ifndef SBMT_EMU_CUBLAS_V2_H
#define SBMT_EMU_CUBLAS_V2_H

#include <cblas.h>

#include <vector>

#include "tests/emu/cuda_bf16.h"
#include "tests/emu/cuda_runtime.h"
#include "tests/emu/mma.h"

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0 } cublasMath_t;
typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType;
struct emu_blas {
    cudaStream_t stream;
};
typedef emu_blas *cublasHandle_t;

inline const char *cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "success (emulated)" : "error (emulated)";
}
inline cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new emu_blas{nullptr};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) {
    return CUBLAS_STATUS_SUCCESS;
}

// cuBLAS's argument checks (the ones a wrong call would hit): leading dimensions at least the
// stored rows of each operand.
inline bool emu_gemm_args_ok(cublasOperation_t oa, cublasOperation_t ob, int m, int n, int k,
                             int lda, int ldb, int ldc) {
    if (m < 0 || n < 0 || k < 0) return false;
    const int ra = oa == CUBLAS_OP_N ? m : k, rb = ob == CUBLAS_OP_N ? k : n;
    return lda >= (ra > 1 ? ra : 1) && ldb >= (rb > 1 ? rb : 1) && ldc >= (m > 1 ? m : 1);
}

inline void emu_sgemm(cublasOperation_t oa, cublasOperation_t ob, int m, int n, int k,
                      float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc) {
    cblas_sgemm(CblasColMajor, oa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                ob == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, A, lda, B, ldb,
                beta, C, ldc);
}

inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t oa, cublasOperation_t ob,
                                  int m, int n, int k, const float *alpha, const float *A,
                                  int lda, const float *B, int ldb, const float *beta, float *C,
                                  int ldc) {
    if (!emu_gemm_args_ok(oa, ob, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    const float al = *alpha, be = *beta;
    emu_stream_enqueue(h->stream, [=] { emu_sgemm(oa, ob, m, n, k, al, A, lda, B, ldb, be, C, ldc); });
    return CUBLAS_STATUS_SUCCESS;
}

// A column-major operand of `rows` x `cols` (as stored) with leading dimension ld, as floats.
inline std::vector<float> emu_operand(const void *p, cudaDataType t, int rows, int cols, int ld) {
    std::vector<float> v((size_t)ld * cols);
    for (size_t i = 0; i < v.size(); i++) {
        if ((int)(i % (size_t)ld) >= rows) {
            v[i] = 0.0f;  // padding rows are never read by the product
            continue;
        }
        v[i] = t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i])
                                : ((const float *)p)[i];
    }
    return v;
}

inline cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t oa, cublasOperation_t ob,
                                   int m, int n, int k, const void *alpha, const void *A,
                                   cudaDataType ta, int lda, const void *B, cudaDataType tb,
                                   int ldb, const void *beta, void *C, cudaDataType tc, int ldc,
                                   cublasComputeType_t ct, cublasGemmAlgo_t) {
    const bool tf32 = ct == CUBLAS_COMPUTE_32F_FAST_TF32;
    if (tc != CUDA_R_32F || (ct != CUBLAS_COMPUTE_32F && !tf32)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!emu_gemm_args_ok(oa, ob, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    emu_stream_enqueue(h->stream, [=] {
        std::vector<float> a =
            emu_operand(A, ta, oa == CUBLAS_OP_N ? m : k, oa == CUBLAS_OP_N ? k : m, lda);
        std::vector<float> b =
            emu_operand(B, tb, ob == CUBLAS_OP_N ? k : n, ob == CUBLAS_OP_N ? n : k, ldb);
        if (tf32) {  // the tensor cores' operands: 10 mantissa bits, rounded to nearest
            for (float &v : a) v = nvcuda::wmma::__float_to_tf32(v);
            for (float &v : b) v = nvcuda::wmma::__float_to_tf32(v);
        }
        emu_sgemm(oa, ob, m, n, k, al, a.data(), lda, b.data(), ldb, be, (float *)C, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

#endif
