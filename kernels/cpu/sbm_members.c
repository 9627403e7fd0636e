// sbm_members.c: CPU backend of the SBM block matrices S_h = softmax(C_h C_h^T) and the
// memberships Y = sigmoid(phi C_h^T) of SPEC.md section 2, forward and backward.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/fastmath.h"
#include "kernels/sbm.h"

void cpu_sbm_blocks_fwd(kctx *k, float *S, const float *C, int H, int kc, int d) {
    for (int h = 0; h < H; h++) {
        const float *Ch = C + (size_t)h * kc * d;
        float *Sh = S + (size_t)h * kc * kc;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kc, kc, d, 1.0f, Ch, d, Ch, d, 0.0f,
                    Sh, kc);
        size_t kk = (size_t)kc * kc;
        float mx = -INFINITY;
        for (size_t i = 0; i < kk; i++) mx = Sh[i] > mx ? Sh[i] : mx;
        double sum = 0.0;
        for (size_t i = 0; i < kk; i++) {
            Sh[i] = expf(Sh[i] - mx);
            sum += Sh[i];
        }
        float inv = (float)(1.0 / sum);
        for (size_t i = 0; i < kk; i++) Sh[i] *= inv;
    }
}

void cpu_sbm_blocks_bwd(kctx *k, float *dC, const float *dS, const float *S, const float *C, int H,
                      int kc, int d) {
    size_t kk = (size_t)kc * kc;
    float *dM = xmalloc(sizeof(float) * kk);
    for (int h = 0; h < H; h++) {
        const float *Sh = S + h * kk, *dSh = dS + h * kk, *Ch = C + (size_t)h * kc * d;
        double dot = 0.0;
        for (size_t i = 0; i < kk; i++) dot += (double)Sh[i] * dSh[i];
        for (size_t i = 0; i < kk; i++) dM[i] = Sh[i] * (dSh[i] - (float)dot);
        // M = C C^T: dC = (dM + dM^T) C.
        float *dCh = dC + (size_t)h * kc * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kc, d, kc, 1.0f, dM, kc, Ch, d,
                    1.0f, dCh, d);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kc, d, kc, 1.0f, dM, kc, Ch, d, 1.0f,
                    dCh, d);
    }
    free(dM);
}


void cpu_sbm_members_fwd(kctx *k, float *Y, const float *phi, const float *C, const kbatch *bt,
                       int rows, int H, int kc, int d) {
    const int Hk = H * kc, Hd = H * d, T = bt->T;
#pragma omp parallel num_threads(k->nthreads)
    {
        int r0, r1;
        split_range(rows, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        if (r1 > r0) {
            for (int h = 0; h < H; h++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, kc, d, 1.0f,
                            phi + (size_t)r0 * Hd + h * d, Hd, C + (size_t)h * kc * d, d, 0.0f,
                            Y + (size_t)r0 * Hk + h * kc, Hk);
            for (int r = r0; r < r1; r++) {
                float *y = Y + (size_t)r * Hk;
                if (bt->mask[r % T] == 0.0f) {
                    memset(y, 0, sizeof(float) * Hk);
                    continue;
                }
                for (int c = 0; c < Hk; c++) y[c] = 1.0f / (1.0f + fast_expf(-y[c]));
            }
        }
    }
}

void cpu_sbm_members_bwd(kctx *k, float *dphi, float *dC, float *dY, const float *Y,
                       const float *phi, const float *C, int rows, int H, int kc, int d) {
    const int Hk = H * kc, Hd = H * d;
    const int nt = k->nthreads;
    float *part = xcalloc((size_t)nt * H * kc * d, sizeof(float));
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), r0, r1;
        split_range(rows, t, omp_get_num_threads(), &r0, &r1);
        if (r1 > r0) {
            // Padded rows have Y = 0, hence dZ = 0: they contribute nothing below.
            for (size_t i = (size_t)r0 * Hk; i < (size_t)r1 * Hk; i++)
                dY[i] *= Y[i] * (1.0f - Y[i]);
            for (int h = 0; h < H; h++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, d, kc, 1.0f,
                            dY + (size_t)r0 * Hk + h * kc, Hk, C + (size_t)h * kc * d, d, 0.0f,
                            dphi + (size_t)r0 * Hd + h * d, Hd);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kc, d, r1 - r0, 1.0f,
                            dY + (size_t)r0 * Hk + h * kc, Hk, phi + (size_t)r0 * Hd + h * d, Hd,
                            1.0f, part + ((size_t)t * H + h) * kc * d, d);
            }
        }
    }
    size_t n = (size_t)H * kc * d;
    for (int t = 0; t < nt; t++)
        for (size_t i = 0; i < n; i++) dC[i] += part[t * n + i];
    free(part);
}
