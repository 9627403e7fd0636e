// kernels.h: every numerical primitive the model uses, behind one interface. The model calls
// only these (never BLAS, never loops over tensors), so a CUDA backend implements this header
// and the model runs unchanged. All tensors are row-major float32 unless stated.
//
// Sequences travel "packed": the B sequences of a batch are cut at their last non-padding
// token and stored back to back as T = sum(len_b) rows. Everything after the last real token
// is padding, which no query may attend to and which the final mask zeroes, so skipping it
// changes neither the loss nor any gradient, while cost follows the real lengths.
#ifndef SBMT_KERNELS_H
#define SBMT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KB_CPU = 0, KB_CUDA = 1 } kbackend;

struct kops;  // kernels/backend.h

typedef struct {
    kbackend backend;
    const struct kops *ops;  // the backend's implementations of every k_* primitive
    int nthreads;  // CPU: OpenMP threads; BLAS runs single-threaded inside each
    int simd;      // CPU: 1 (default) uses the AVX2 kernels where compiled in; 0 the portable
                   // loops that non-AVX2 builds run (tests compare the two)
    int device;    // CUDA: the GPU of this rank
    int bf16;      // CUDA: GEMM operands rounded to bfloat16, fp32 accumulation and outputs
                   // (train.precision = bf16); the CPU backend computes in fp32 only
    int tf32;      // CUDA: GEMMs on tensor cores with tf32 operands (train.precision = tf32).
                   // Either flag puts the attention tiles' products on tensor cores (tf32 or
                   // bf16 operands; the straight-through products tf32);
                   // the SBM sampler's own products stay fp32 (from the same memberships, the
                   // same graph in every precision)
    void *impl;    // backend state (CUDA: stream, cuBLAS handle, the batch's device arrays)
} kctx;

// Opens a backend: -1 with a message when this build or machine cannot run it (the CUDA
// backend without a CUDA build or without a device). nthreads 0: OpenMP's default. The CUDA
// backend takes GPU local_rank mod the node's device count (one device per rank).
int kctx_open(kctx *k, kbackend backend, int nthreads, int local_rank, char *err);
void kctx_close(kctx *k);
// The CUDA context's stream (a cudaStream_t, for NCCL collectives ordered with its kernels);
// NULL on the CPU.
void *kctx_stream(const kctx *k);
// kctx_open that must succeed (the CPU backend always does).
void kctx_init(kctx *k, kbackend backend, int nthreads);
// "cpu" or "cuda".
const char *kbackend_name(kbackend b);

// A batch in packed form: host metadata and arrays, which k_batch_upload mirrors into the
// backend (CPU: the same memory; CUDA: device arrays kept by the context) before kernels run.
typedef struct {
    int B;              // sequences
    int n;              // padded length (positions are 0..n-1)
    int T;              // packed rows = off[B]
    int *len;           // [B] rows of sequence b (last non-padding position + 1, >= 1)
    int *off;           // [B+1] first packed row of sequence b
    int32_t *ids;       // [T] token ids
    float *mask;        // [T] 1 where id != 0
    uint32_t *sample;   // [B] global sample index (keys every random draw of that sample)
} kbatch;

// Random streams for dropout: which tensor of which layer; combined with seed, step, sample.
typedef struct {
    uint64_t seed;
    uint32_t step;
    uint32_t layer;
    uint32_t slot;  // attention probabilities: global index of the first local head (head h
                    // of a call draws from slot + h); others: KSLOT_* below
} kdrop;
enum { KSLOT_EMBED = 0x8000, KSLOT_ATTN_OUT = 0x8001, KSLOT_FFN_HID = 0x8002,
       KSLOT_FFN_OUT = 0x8003 };

// ---- tensor memory: host memory on the CPU backend, device memory on CUDA ----
// Zero-filled; one allocation per buffer the model or the trainer owns (never per call).
void *k_alloc(kctx *k, size_t bytes);
void k_free(kctx *k, void *p);
// Host <-> backend copies of `bytes` bytes.
void k_upload(kctx *k, void *dst, const void *host, size_t bytes);
void k_download(kctx *k, void *host, const void *src, size_t bytes);
// dst[n] = src[n] within the backend.
void k_copy(kctx *k, float *dst, const float *src, size_t n);

// ---- dense layers (rows = packed tokens or batch entries) ----
// out[N,nout] = in[N,nin] W[nout,nin]^T + b[nout]   (b may be NULL)
void k_linear_fwd(kctx *k, float *out, const float *in, const float *W, const float *b, int N,
                  int nin, int nout);
// din[N,nin] (= or += when accumulate) = dout W;  dW[nout,nin] += dout^T in;  db[nout] += colsum(dout).
// din may be NULL (input needs no gradient).
void k_linear_bwd(kctx *k, float *din, float *dW, float *db, const float *dout, const float *in,
                  const float *W, int N, int nin, int nout, int accumulate);

// LayerNorm over the last dim C (eps 1e-5): out, mean[N], rstd[N].
void k_layernorm_fwd(kctx *k, float *out, float *mean, float *rstd, const float *in,
                     const float *w, const float *b, int N, int C);
// din[N,C] += ...;  dw[C] += ..., db[C] += ...
void k_layernorm_bwd(kctx *k, float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *mean, const float *rstd, const float *w, int N,
                     int C);

// GELU (erf) and ReLU; backward writes din = dout * f'(in).
void k_gelu_fwd(kctx *k, float *out, const float *in, size_t n);
void k_gelu_bwd(kctx *k, float *din, const float *dout, const float *in, size_t n);
void k_relu_fwd(kctx *k, float *out, const float *in, size_t n);
void k_relu_bwd(kctx *k, float *din, const float *dout, const float *in, size_t n);

// Makes bt's arrays (len, off, ids, mask, sample) available to the backend's kernels; the
// model calls it once per forward (backward reuses it).
void k_batch_upload(kctx *k, const kbatch *bt);

// y += x
void k_add(kctx *k, float *y, const float *x, size_t n);
// x[N, C] += b[C] on every row
void k_bias_add(kctx *k, float *x, const float *b, int N, int C);

// Dropout on packed rows x[T, C], in place; the mask of element (sample, position, c) depends only
// on (seed, step, layer, slot, global sample, position*C + c). Backward is the same call on dx.
void k_dropout(kctx *k, float *x, const kbatch *bt, int C, float p, kdrop d);

// ---- embedding ----
// out[T, D] = tok[ids] + pos[position]
void k_embed_fwd(kctx *k, float *out, const kbatch *bt, const float *tok, const float *pos, int D);
// dtok += scatter, dpos += scatter
void k_embed_bwd(kctx *k, float *dtok, float *dpos, const float *dout, const kbatch *bt, int D);

// ---- full softmax attention with key padding mask (the baseline) ----
// qkv [T, 3*H*d] holds Q | K | V per row, heads contiguous inside each; out [T, H*d];
// lse [T, H] log-sum-exp of each query row's (scaled, masked) scores, kept for backward.
// Attention-probability dropout p keyed by d (head h: slot + h). A query with no valid key outputs 0.
void k_attn_softmax_fwd(kctx *k, float *out, float *lse, const float *qkv, const kbatch *bt, int H,
                        int dh, float p, kdrop d);
// dqkv [T, 3*H*d] is overwritten.
void k_attn_softmax_bwd(kctx *k, float *dqkv, const float *dout, const float *qkv,
                        const float *out, const float *lse, const kbatch *bt, int H, int dh,
                        float p, kdrop d);

// ---- masking, pooling, classifier ----
// x[T, D] *= mask (in place); pooled[B, D] = MEAN: sum over rows / n, CLS: row of position 0.
void k_mask_pool_fwd(kctx *k, float *pooled, float *x, const kbatch *bt, int D, int cls);
// dx[T, D] = (pooling gradient) * mask
void k_mask_pool_bwd(kctx *k, float *dx, const float *dpooled, const kbatch *bt, int D, int cls);

// Dual encoder (LRA retrieval): pooled [2B, D] holds document 0 and 1 of pair b in rows 2b and
// 2b+1; out [B, 4D] = [x0, x1, x0 * x1, x0 - x1].
void k_dual_combine_fwd(kctx *k, float *out, const float *pooled, int B, int D);
// dpooled [2B, D] (overwritten) from dout [B, 4D].
void k_dual_combine_bwd(kctx *k, float *dpooled, const float *dout, const float *pooled, int B,
                        int D);

// Softmax cross-entropy: probs[B,C]; returns the summed loss; *correct += argmax hits.
double k_xent_fwd(kctx *k, float *probs, const float *logits, const int32_t *labels, int B, int C,
                  int *correct);
// dlogits = (probs - onehot) * scale
void k_xent_bwd(kctx *k, float *dlogits, const float *probs, const int32_t *labels, int B, int C,
                float scale);

// ---- optimizer and reductions ----
// AdamW step t (1-based) on n values; bias corrections with beta1^t and beta2^t as given.
void k_adamw(kctx *k, float *param, const float *grad, float *m, float *v, size_t n, float lr,
             float beta1, float beta2, float eps, float wd, float bc1, float bc2);
double k_sumsq(kctx *k, const float *x, size_t n);
void k_scale(kctx *k, float *x, size_t n, float s);
void k_zero(kctx *k, float *x, size_t n);

#endif
