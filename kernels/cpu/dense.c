// dense.c: CPU backend of the position-wise primitives: linear layers (BLAS), LayerNorm,
// activations, dropout, embeddings, pooling, cross-entropy and AdamW. OpenMP splits rows over
// threads and each thread's BLAS call runs single-threaded, so there is one level of parallelism.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/cpu/cpu.h"
#include "kernels/dropout.h"
#include "kernels/pointwise.h"
#include "kernels/cpu/fastmath.h"
#include "kernels/kernels.h"

void *cpu_alloc(kctx *k, size_t bytes) {
    (void)k;
    return xcalloc(bytes ? bytes : 1, 1);
}

void cpu_free(kctx *k, void *p) {
    (void)k;
    free(p);
}

void cpu_upload(kctx *k, void *dst, const void *host, size_t bytes) {
    (void)k;
    if (bytes && dst != host) memcpy(dst, host, bytes);
}

void cpu_download(kctx *k, void *host, const void *src, size_t bytes) {
    (void)k;
    if (bytes && host != src) memcpy(host, src, bytes);
}

void cpu_copy(kctx *k, float *dst, const float *src, size_t n) {
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

void cpu_batch_upload(kctx *k, const kbatch *bt) {
    (void)k;  // CPU kernels read the host arrays
    (void)bt;
}

void cpu_ctx_init(kctx *k, int nthreads) {
    k->backend = KB_CPU;
    k->ops = &kops_cpu;
    k->nthreads = nthreads > 0 ? nthreads : omp_get_max_threads();
    k->simd = 1;
    openblas_set_num_threads(1);
}


void cpu_linear_fwd(kctx *k, float *out, const float *in, const float *W, const float *b, int N,
                  int nin, int nout) {
#pragma omp parallel num_threads(k->nthreads)
    {
        int r0, r1;
        split_range(N, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        if (r1 > r0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, nout, nin, 1.0f,
                        in + (size_t)r0 * nin, nin, W, nin, 0.0f, out + (size_t)r0 * nout, nout);
            if (b)
                for (int r = r0; r < r1; r++) {
                    float *o = out + (size_t)r * nout;
                    for (int j = 0; j < nout; j++) o[j] += b[j];
                }
        }
    }
}

void cpu_linear_bwd(kctx *k, float *din, float *dW, float *db, const float *dout, const float *in,
                  const float *W, int N, int nin, int nout, int accumulate) {
#pragma omp parallel num_threads(k->nthreads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int r0, r1, o0, o1;
        split_range(N, t, nt, &r0, &r1);
        if (din && r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, nin, nout, 1.0f,
                        dout + (size_t)r0 * nout, nout, W, nin, accumulate ? 1.0f : 0.0f,
                        din + (size_t)r0 * nin, nin);
        // Weight gradients reduce over rows, so threads split the output features instead.
        split_range(nout, t, nt, &o0, &o1);
        if (o1 > o0 && N > 0) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o1 - o0, nin, N, 1.0f, dout + o0, nout,
                        in, nin, 1.0f, dW + (size_t)o0 * nin, nin);
            if (db)
                for (int r = 0; r < N; r++) {
                    const float *g = dout + (size_t)r * nout;
                    for (int j = o0; j < o1; j++) db[j] += g[j];
                }
        }
    }
}

void cpu_layernorm_fwd(kctx *k, float *out, float *mean, float *rstd, const float *in,
                     const float *w, const float *b, int N, int C) {
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x = in + (size_t)r * C;
        float *y = out + (size_t)r * C;
        float m = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= (float)C;
        float var = 0.0f;
        for (int c = 0; c < C; c++) {
            float dx = x[c] - m;
            var += dx * dx;
        }
        var /= (float)C;
        float s = 1.0f / sqrtf(var + 1e-5f);
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * s * w[c] + b[c];
        mean[r] = m;
        rstd[r] = s;
    }
}

void cpu_layernorm_bwd(kctx *k, float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *mean, const float *rstd, const float *w, int N,
                     int C) {
    int nt = k->nthreads;
    float *part = xcalloc((size_t)nt * 2 * C, sizeof(float));  // per-thread dw | db partials
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *pw = part + (size_t)t * 2 * C, *pb = pw + C;
#pragma omp for schedule(static)
        for (int r = 0; r < N; r++) {
            const float *x = in + (size_t)r * C, *g = dout + (size_t)r * C;
            float *dx = din + (size_t)r * C;
            float m = mean[r], s = rstd[r];
            float sum_g = 0.0f, sum_gx = 0.0f;
            for (int c = 0; c < C; c++) {
                float xh = (x[c] - m) * s;
                float gw = g[c] * w[c];
                sum_g += gw;
                sum_gx += gw * xh;
                pw[c] += g[c] * xh;
                pb[c] += g[c];
            }
            sum_g /= (float)C;
            sum_gx /= (float)C;
            for (int c = 0; c < C; c++) {
                float xh = (x[c] - m) * s;
                dx[c] += s * (g[c] * w[c] - sum_g - xh * sum_gx);
            }
        }
    }
    for (int t = 0; t < nt; t++)
        for (int c = 0; c < C; c++) {
            dw[c] += part[(size_t)t * 2 * C + c];
            db[c] += part[(size_t)t * 2 * C + C + c];
        }
    free(part);
}

void cpu_gelu_fwd(kctx *k, float *out, const float *in, size_t n) {
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = pw_gelu(in[i]);
}

void cpu_gelu_bwd(kctx *k, float *din, const float *dout, const float *in, size_t n) {
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (size_t i = 0; i < n; i++) din[i] = dout[i] * pw_gelu_grad(in[i]);
}

void cpu_relu_fwd(kctx *k, float *out, const float *in, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = in[i] < 0.0f ? 0.0f : in[i];  // NaN passes through
}

void cpu_relu_bwd(kctx *k, float *din, const float *dout, const float *in, size_t n) {
    for (size_t i = 0; i < n; i++) din[i] = in[i] > 0.0f ? dout[i] : 0.0f;
}

void cpu_add(kctx *k, float *y, const float *x, size_t n) {
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void cpu_bias_add(kctx *k, float *x, const float *b, int N, int C) {
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (int r = 0; r < N; r++) {
        float *o = x + (size_t)r * C;
        for (int j = 0; j < C; j++) o[j] += b[j];
    }
}

void cpu_dropout(kctx *k, float *x, const kbatch *bt, int C, float p, kdrop d) {
    if (p <= 0.0f) return;
    enum { CHUNK = 4096 };
    uint32_t thr = dropout_threshold(p);
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel num_threads(k->nthreads)
    {
        float ks[CHUNK];
        uint32_t scratch[4 * (CHUNK / 8 + 2)];
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < bt->B; b++) {
            rng_stream s = rng_make(d.seed, RNG_DROPOUT, d.step, d.layer, d.slot, bt->sample[b]);
            float *xb = x + (size_t)bt->off[b] * C;
            uint32_t count = (uint32_t)bt->len[b] * (uint32_t)C;
            for (uint32_t e0 = 0; e0 < count; e0 += CHUNK) {
                int m = count - e0 < CHUNK ? (int)(count - e0) : CHUNK;
                dropout_factors(ks, e0, m, s, thr, scale, scratch);
                for (int j = 0; j < m; j++) xb[e0 + j] *= ks[j];
            }
        }
    }
}

void cpu_embed_fwd(kctx *k, float *out, const kbatch *bt, const float *tok, const float *pos, int D) {
#pragma omp parallel for num_threads(k->nthreads) schedule(dynamic, 1)
    for (int b = 0; b < bt->B; b++)
        for (int t = 0; t < bt->len[b]; t++) {
            int r = bt->off[b] + t;
            const float *te = tok + (size_t)bt->ids[r] * D, *pe = pos + (size_t)t * D;
            float *o = out + (size_t)r * D;
            for (int c = 0; c < D; c++) o[c] = te[c] + pe[c];
        }
}

void cpu_embed_bwd(kctx *k, float *dtok, float *dpos, const float *dout, const kbatch *bt, int D) {
    // Several rows share a token or a position: accumulate serially (T*D adds, negligible).
    for (int b = 0; b < bt->B; b++)
        for (int t = 0; t < bt->len[b]; t++) {
            int r = bt->off[b] + t;
            const float *g = dout + (size_t)r * D;
            float *te = dtok + (size_t)bt->ids[r] * D, *pe = dpos + (size_t)t * D;
            for (int c = 0; c < D; c++) {
                te[c] += g[c];
                pe[c] += g[c];
            }
        }
}

void cpu_mask_pool_fwd(kctx *k, float *pooled, float *x, const kbatch *bt, int D, int cls) {
    for (int b = 0; b < bt->B; b++) {
        float *pb = pooled + (size_t)b * D;
        memset(pb, 0, (size_t)D * sizeof(float));
        for (int r = bt->off[b]; r < bt->off[b + 1]; r++) {
            float *xr = x + (size_t)r * D;
            float m = bt->mask[r];
            for (int c = 0; c < D; c++) xr[c] *= m;
            if (!cls)
                for (int c = 0; c < D; c++) pb[c] += xr[c];
        }
        if (cls)
            memcpy(pb, x + (size_t)bt->off[b] * D, (size_t)D * sizeof(float));
        else
            for (int c = 0; c < D; c++) pb[c] /= (float)bt->n;  // padding included, as reference
    }
}

void cpu_mask_pool_bwd(kctx *k, float *dx, const float *dpooled, const kbatch *bt, int D, int cls) {
    for (int b = 0; b < bt->B; b++) {
        const float *g = dpooled + (size_t)b * D;
        for (int r = bt->off[b]; r < bt->off[b + 1]; r++) {
            float *d = dx + (size_t)r * D;
            float m = bt->mask[r];
            if (cls) {
                float f = r == bt->off[b] ? m : 0.0f;
                for (int c = 0; c < D; c++) d[c] = g[c] * f;
            } else {
                float f = m / (float)bt->n;
                for (int c = 0; c < D; c++) d[c] = g[c] * f;
            }
        }
    }
}

void cpu_dual_combine_fwd(kctx *k, float *out, const float *pooled, int B, int D) {
    for (int b = 0; b < B; b++) {
        const float *x0 = pooled + (size_t)2 * b * D, *x1 = x0 + D;
        float *o = out + (size_t)4 * b * D;
        for (int c = 0; c < D; c++) {
            o[c] = x0[c];
            o[D + c] = x1[c];
            o[2 * D + c] = x0[c] * x1[c];
            o[3 * D + c] = x0[c] - x1[c];
        }
    }
}

void cpu_dual_combine_bwd(kctx *k, float *dpooled, const float *dout, const float *pooled, int B,
                        int D) {
    for (int b = 0; b < B; b++) {
        const float *x0 = pooled + (size_t)2 * b * D, *x1 = x0 + D;
        const float *g = dout + (size_t)4 * b * D;
        float *d0 = dpooled + (size_t)2 * b * D, *d1 = d0 + D;
        for (int c = 0; c < D; c++) {
            d0[c] = g[c] + g[2 * D + c] * x1[c] + g[3 * D + c];
            d1[c] = g[D + c] + g[2 * D + c] * x0[c] - g[3 * D + c];
        }
    }
}

double cpu_xent_fwd(kctx *k, float *probs, const float *logits, const int32_t *labels, int B, int C,
                    int *correct) {
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        int hit;
        loss += pw_xent_row(probs + (size_t)b * C, logits + (size_t)b * C, C, labels[b], &hit);
        if (correct) *correct += hit;
    }
    return loss;
}

void cpu_xent_bwd(kctx *k, float *dlogits, const float *probs, const int32_t *labels, int B, int C,
                float scale) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            dlogits[(size_t)b * C + c] =
                (probs[(size_t)b * C + c] - (c == labels[b] ? 1.0f : 0.0f)) * scale;
}

void cpu_adamw(kctx *k, float *param, const float *grad, float *m, float *v, size_t n, float lr,
             float beta1, float beta2, float eps, float wd, float bc1, float bc2) {
    float step = lr / bc1, sbc2 = sqrtf(bc2), decay = 1.0f - lr * wd;
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (size_t i = 0; i < n; i++)
        pw_adamw(&param[i], grad[i], &m[i], &v[i], beta1, beta2, eps, step, sbc2, decay);
}

double cpu_sumsq(kctx *k, const float *x, size_t n) {
    double s = 0.0;
#pragma omp parallel for num_threads(k->nthreads) reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

void cpu_scale(kctx *k, float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

void cpu_zero(kctx *k, float *x, size_t n) { memset(x, 0, n * sizeof(float)); }
void cpu_copy2d(kctx *k, float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols) {
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * ld_dst, src + (size_t)r * ld_src, sizeof(float) * (size_t)cols);
}

void cpu_add2d(kctx *k, float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols) {
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(size_t)r * ld_dst + c] += src[(size_t)r * ld_src + c];
}
