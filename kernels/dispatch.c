// dispatch.c: the k_* primitives of kernels.h and sbm.h, each forwarded to the context's
// backend (kernels/backend.h). Nothing here computes.
#include <string.h>

#include "kernels/backend.h"
#include "kernels/common.h"
#include "kernels/cpu/cpu.h"
#ifdef SBMT_HAVE_CUDA_BACKEND
#include "kernels/cuda/cuda_api.h"
#endif

const char *kbackend_name(kbackend b) { return b == KB_CUDA ? "cuda" : "cpu"; }

int kctx_open(kctx *k, kbackend backend, int nthreads, int local_rank, char *err) {
    memset(k, 0, sizeof(*k));
    if (backend == KB_CPU) {
        cpu_ctx_init(k, nthreads);
        return 0;
    }
#ifdef SBMT_HAVE_CUDA_BACKEND
    return cuda_ctx_open(k, local_rank, err);
#else
    (void)local_rank;
    return sbmt_errf(err, "this build of sbmt has no CUDA backend (configure where nvcc and the "
                          "CUDA toolkit are found; the CPU backend is the only one built)");
#endif
}

void *kctx_stream(const kctx *k) {
#ifdef SBMT_HAVE_CUDA_BACKEND
    if (k->ops && k->backend == KB_CUDA) return cuda_ctx_stream(k);
#endif
    (void)k;
    return NULL;
}

const char *kctx_missing_op(const kctx *k, int sbm) {
    const struct {
        const char *name;
        int present, sbm_only;
    } ops[] = {
        {"alloc", k->ops->alloc != NULL, 0},
        {"free", k->ops->free != NULL, 0},
        {"upload", k->ops->upload != NULL, 0},
        {"download", k->ops->download != NULL, 0},
        {"copy", k->ops->copy != NULL, 0},
        {"batch_upload", k->ops->batch_upload != NULL, 0},
        {"linear_fwd", k->ops->linear_fwd != NULL, 0},
        {"linear_bwd", k->ops->linear_bwd != NULL, 0},
        {"layernorm_fwd", k->ops->layernorm_fwd != NULL, 0},
        {"layernorm_bwd", k->ops->layernorm_bwd != NULL, 0},
        {"gelu_fwd", k->ops->gelu_fwd != NULL, 0},
        {"gelu_bwd", k->ops->gelu_bwd != NULL, 0},
        {"relu_fwd", k->ops->relu_fwd != NULL, 0},
        {"relu_bwd", k->ops->relu_bwd != NULL, 0},
        {"add", k->ops->add != NULL, 0},
        {"bias_add", k->ops->bias_add != NULL, 0},
        {"dropout", k->ops->dropout != NULL, 0},
        {"embed_fwd", k->ops->embed_fwd != NULL, 0},
        {"embed_bwd", k->ops->embed_bwd != NULL, 0},
        {"attn_softmax_fwd", k->ops->attn_softmax_fwd != NULL, 0},
        {"attn_softmax_bwd", k->ops->attn_softmax_bwd != NULL, 0},
        {"mask_pool_fwd", k->ops->mask_pool_fwd != NULL, 0},
        {"mask_pool_bwd", k->ops->mask_pool_bwd != NULL, 0},
        {"dual_combine_fwd", k->ops->dual_combine_fwd != NULL, 0},
        {"dual_combine_bwd", k->ops->dual_combine_bwd != NULL, 0},
        {"xent_fwd", k->ops->xent_fwd != NULL, 0},
        {"xent_bwd", k->ops->xent_bwd != NULL, 0},
        {"adamw", k->ops->adamw != NULL, 0},
        {"sumsq", k->ops->sumsq != NULL, 0},
        {"scale", k->ops->scale != NULL, 0},
        {"zero", k->ops->zero != NULL, 0},
        {"sbm_blocks_fwd", k->ops->sbm_blocks_fwd != NULL, 1},
        {"sbm_blocks_bwd", k->ops->sbm_blocks_bwd != NULL, 1},
        {"sbm_members_fwd", k->ops->sbm_members_fwd != NULL, 1},
        {"sbm_members_bwd", k->ops->sbm_members_bwd != NULL, 1},
        {"sbm_sample", k->ops->sbm_sample != NULL, 1},
        {"sbm_graph_stats", k->ops->sbm_graph_stats != NULL, 1},
        {"sbm_graph_csr", k->ops->sbm_graph_csr != NULL, 1},
        {"sbm_attn_fwd", k->ops->sbm_attn_fwd != NULL, 1},
        {"sbm_attn_bwd", k->ops->sbm_attn_bwd != NULL, 1},
        {"copy2d", k->ops->copy2d != NULL, 0},
        {"add2d", k->ops->add2d != NULL, 0},
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (!ops[i].present && (sbm || !ops[i].sbm_only)) return ops[i].name;
    return NULL;
}

void kctx_close(kctx *k) {
    if (k->ops && k->backend == KB_CUDA) {
#ifdef SBMT_HAVE_CUDA_BACKEND
        cuda_ctx_close(k);
#endif
    }
    memset(k, 0, sizeof(*k));
}

void kctx_init(kctx *k, kbackend backend, int nthreads) {
    char err[SBMT_ERR_LEN];
    if (kctx_open(k, backend, nthreads, 0, err)) sbmt_fatal(__FILE__, __LINE__, "%s", err);
}

void *k_alloc(kctx *k, size_t bytes) { return k->ops->alloc(k, bytes); }

void k_free(kctx *k, void *p) { k->ops->free(k, p); }

void k_upload(kctx *k, void *dst, const void *host, size_t bytes) {
    k->ops->upload(k, dst, host, bytes);
}

void k_download(kctx *k, void *host, const void *src, size_t bytes) {
    k->ops->download(k, host, src, bytes);
}

void k_copy(kctx *k, float *dst, const float *src, size_t n) { k->ops->copy(k, dst, src, n); }

void k_batch_upload(kctx *k, const kbatch *bt) { k->ops->batch_upload(k, bt); }

void k_linear_fwd(kctx *k, float *out, const float *in, const float *W, const float *b, int N,
                  int nin, int nout) {
    k->ops->linear_fwd(k, out, in, W, b, N, nin, nout);
}

void k_linear_bwd(kctx *k, float *din, float *dW, float *db, const float *dout, const float *in,
                  const float *W, int N, int nin, int nout, int accumulate) {
    k->ops->linear_bwd(k, din, dW, db, dout, in, W, N, nin, nout, accumulate);
}

void k_layernorm_fwd(kctx *k, float *out, float *mean, float *rstd, const float *in, const float *w,
                     const float *b, int N, int C) {
    k->ops->layernorm_fwd(k, out, mean, rstd, in, w, b, N, C);
}

void k_layernorm_bwd(kctx *k, float *din, float *dw, float *db, const float *dout, const float *in,
                     const float *mean, const float *rstd, const float *w, int N, int C) {
    k->ops->layernorm_bwd(k, din, dw, db, dout, in, mean, rstd, w, N, C);
}

void k_gelu_fwd(kctx *k, float *out, const float *in, size_t n) { k->ops->gelu_fwd(k, out, in, n); }

void k_gelu_bwd(kctx *k, float *din, const float *dout, const float *in, size_t n) {
    k->ops->gelu_bwd(k, din, dout, in, n);
}

void k_relu_fwd(kctx *k, float *out, const float *in, size_t n) { k->ops->relu_fwd(k, out, in, n); }

void k_relu_bwd(kctx *k, float *din, const float *dout, const float *in, size_t n) {
    k->ops->relu_bwd(k, din, dout, in, n);
}

void k_add(kctx *k, float *y, const float *x, size_t n) { k->ops->add(k, y, x, n); }

void k_bias_add(kctx *k, float *x, const float *b, int N, int C) {
    k->ops->bias_add(k, x, b, N, C);
}

void k_dropout(kctx *k, float *x, const kbatch *bt, int C, float p, kdrop d) {
    k->ops->dropout(k, x, bt, C, p, d);
}

void k_embed_fwd(kctx *k, float *out, const kbatch *bt, const float *tok, const float *pos, int D) {
    k->ops->embed_fwd(k, out, bt, tok, pos, D);
}

void k_embed_bwd(kctx *k, float *dtok, float *dpos, const float *dout, const kbatch *bt, int D) {
    k->ops->embed_bwd(k, dtok, dpos, dout, bt, D);
}

void k_attn_softmax_fwd(kctx *k, float *out, float *lse, const float *qkv, const kbatch *bt, int H,
                        int dh, float p, kdrop d) {
    k->ops->attn_softmax_fwd(k, out, lse, qkv, bt, H, dh, p, d);
}

void k_attn_softmax_bwd(kctx *k, float *dqkv, const float *dout, const float *qkv, const float *out,
                        const float *lse, const kbatch *bt, int H, int dh, float p, kdrop d) {
    k->ops->attn_softmax_bwd(k, dqkv, dout, qkv, out, lse, bt, H, dh, p, d);
}

void k_mask_pool_fwd(kctx *k, float *pooled, float *x, const kbatch *bt, int D, int cls) {
    k->ops->mask_pool_fwd(k, pooled, x, bt, D, cls);
}

void k_mask_pool_bwd(kctx *k, float *dx, const float *dpooled, const kbatch *bt, int D, int cls) {
    k->ops->mask_pool_bwd(k, dx, dpooled, bt, D, cls);
}

void k_dual_combine_fwd(kctx *k, float *out, const float *pooled, int B, int D) {
    k->ops->dual_combine_fwd(k, out, pooled, B, D);
}

void k_dual_combine_bwd(kctx *k, float *dpooled, const float *dout, const float *pooled, int B,
                        int D) {
    k->ops->dual_combine_bwd(k, dpooled, dout, pooled, B, D);
}

double k_xent_fwd(kctx *k, float *probs, const float *logits, const int32_t *labels, int B, int C,
                  int *correct) {
    return k->ops->xent_fwd(k, probs, logits, labels, B, C, correct);
}

void k_xent_bwd(kctx *k, float *dlogits, const float *probs, const int32_t *labels, int B, int C,
                float scale) {
    k->ops->xent_bwd(k, dlogits, probs, labels, B, C, scale);
}

void k_adamw(kctx *k, float *param, const float *grad, float *m, float *v, size_t n, float lr,
             float beta1, float beta2, float eps, float wd, float bc1, float bc2) {
    k->ops->adamw(k, param, grad, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2);
}

double k_sumsq(kctx *k, const float *x, size_t n) { return k->ops->sumsq(k, x, n); }

void k_scale(kctx *k, float *x, size_t n, float s) { k->ops->scale(k, x, n, s); }

void k_zero(kctx *k, float *x, size_t n) { k->ops->zero(k, x, n); }

void k_sbm_blocks_fwd(kctx *k, float *S, const float *C, int H, int kc, int d) {
    k->ops->sbm_blocks_fwd(k, S, C, H, kc, d);
}

void k_sbm_blocks_bwd(kctx *k, float *dC, const float *dS, const float *S, const float *C, int H,
                      int kc, int d) {
    k->ops->sbm_blocks_bwd(k, dC, dS, S, C, H, kc, d);
}

void k_sbm_members_fwd(kctx *k, float *Y, const float *phi, const float *C, const kbatch *bt,
                       int rows, int H, int kc, int d) {
    k->ops->sbm_members_fwd(k, Y, phi, C, bt, rows, H, kc, d);
}

void k_sbm_members_bwd(kctx *k, float *dphi, float *dC, float *dY, const float *Y, const float *phi,
                       const float *C, int rows, int H, int kc, int d) {
    k->ops->sbm_members_bwd(k, dphi, dC, dY, Y, phi, C, rows, H, kc, d);
}

void k_sbm_sample(kctx *k, sbm_graphs *gs, const float *Y, const float *S, const kbatch *bt, int H,
                  int kc, float eps, sbm_sampler sampler, uint64_t seed, uint32_t step,
                  uint32_t layer, uint32_t head0, int64_t *edges) {
    k->ops->sbm_sample(k, gs, Y, S, bt, H, kc, eps, sampler, seed, step, layer, head0, edges);
}

void k_sbm_graph_stats(kctx *k, const sbm_graphs *gs, int H, int64_t *edges, double *expected) {
    k->ops->sbm_graph_stats(k, gs, H, edges, expected);
}

int k_sbm_graph_csr(kctx *k, const sbm_graphs *gs, const kbatch *bt, int H, int u, int *rowptr,
                    int *col) {
    return k->ops->sbm_graph_csr(k, gs, bt, H, u, rowptr, col);
}

void k_sbm_attn_fwd(kctx *k, float *out, sbm_graphs *gs, const float *qkv, const kbatch *bt, int H,
                    int dh, float p, kdrop d) {
    k->ops->sbm_attn_fwd(k, out, gs, qkv, bt, H, dh, p, d);
}

void k_sbm_attn_bwd(kctx *k, float *dqkv, float *dY, float *dS, const float *dout, const float *qkv,
                    const float *out, const sbm_graphs *gs, const float *Y, const float *S,
                    const kbatch *bt, int H, int dh, int kc, float p, kdrop d, float reg) {
    k->ops->sbm_attn_bwd(k, dqkv, dY, dS, dout, qkv, out, gs, Y, S, bt, H, dh, kc, p, d, reg);
}

void k_copy2d(kctx *k, float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols) {
    k->ops->copy2d(k, dst, ld_dst, src, ld_src, rows, cols);
}

void k_add2d(kctx *k, float *dst, int ld_dst, const float *src, int ld_src, int rows, int cols) {
    k->ops->add2d(k, dst, ld_dst, src, ld_src, rows, cols);
}
