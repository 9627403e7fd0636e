// bench_attn_gpu.c: softmax attention forward + backward on the CUDA backend (tiled kernels, and
// the row-wise kernels with --rowwise) at n = 1k..16k, printing time and TFLOP/s. FLOPs count
// what FlashAttention papers count, 4 B H n^2 dh forward and 2.5x that backward (dropout and
// recomputation not counted), so the figures compare directly with bench/torch_sdpa.py's, which
// runs PyTorch's scaled_dot_product_attention on the same shapes.
// usage: build/bench_attn_gpu [--rowwise] [--precision fp32|tf32|bf16] [--dh D] [--heads H]
//        [--tokens T] [--max-n N]
// (tf32 and bf16 put the tiles' products on tensor cores with tf32 operands.)
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "bench/bench_util.h"

static int attn_word(const char *arg, const char *next, void *ctx) {
    const int took = bench_precision_word(arg, next, (const char **)ctx);
    if (took) return took;
    if (strcmp(arg, "--rowwise")) return 0;
    setenv("SBMT_CUDA_ATTN", "rowwise", 1);
    return 1;
}

int main(int argc, char **argv) {
    int dh = 64, H = 8, tokens = 16384, max_n = 16384;
    const bench_int_opt opts[] = {{"--dh", &dh}, {"--heads", &H}, {"--tokens", &tokens},
                                  {"--max-n", &max_n}};
    const char *prec = "fp32";
    if (bench_parse(argc, argv, "bench_attn_gpu", opts, 4, attn_word, &prec)) return 2;
    kctx k;
    char err[SBMT_ERR_LEN];
    if (kctx_open(&k, KB_CUDA, 0, 0, err)) {
        fprintf(stderr, "bench_attn_gpu: %s\n", err);
        return 77;
    }
    bench_set_precision(&k, prec);
    const char *mode = getenv("SBMT_CUDA_ATTN") ? "rowwise" : "tiled";
    printf("# sbmt softmax attention (%s), %s, H %d, dh %d, dropout 0, %d tokens per batch\n",
           mode, prec, H, dh, tokens);
    printf("%8s %4s %12s %12s %10s %10s\n", "n", "B", "fwd_ms", "fwd+bwd_ms", "fwd_TFLOPs",
           "total_TFLOPs");
    for (int n = 1024; n <= max_n; n *= 2) {
        int B = tokens / n > 0 ? tokens / n : 1;
        kbatch bt;
        bench_full_batch(&bt, B, n);
        const size_t T = (size_t)bt.T, HD = (size_t)H * dh;
        float *qkv = bench_dev_random(&k, T * 3 * HD, 1);
        float *dout = bench_dev_random(&k, T * HD, 2);
        float *out = k_alloc(&k, sizeof(float) * T * HD), *lse = k_alloc(&k, sizeof(float) * T * H);
        float *dqkv = k_alloc(&k, sizeof(float) * T * 3 * HD);
        k_batch_upload(&k, &bt);
        kdrop d = {1, 1, 0, 0};
        const int reps = n <= 4096 ? 10 : 3;
        k_attn_softmax_fwd(&k, out, lse, qkv, &bt, H, dh, 0.0f, d);  // warm-up
        k_attn_softmax_bwd(&k, dqkv, dout, qkv, out, lse, &bt, H, dh, 0.0f, d);
        bench_sync(&k, dqkv);
        double t0 = sbmt_now();
        for (int r = 0; r < reps; r++) k_attn_softmax_fwd(&k, out, lse, qkv, &bt, H, dh, 0.0f, d);
        bench_sync(&k, out);
        double tf = (sbmt_now() - t0) / reps;
        t0 = sbmt_now();
        for (int r = 0; r < reps; r++) {
            k_attn_softmax_fwd(&k, out, lse, qkv, &bt, H, dh, 0.0f, d);
            k_attn_softmax_bwd(&k, dqkv, dout, qkv, out, lse, &bt, H, dh, 0.0f, d);
        }
        bench_sync(&k, dqkv);
        double tt = (sbmt_now() - t0) / reps;
        double ff = 4.0 * B * H * (double)n * n * dh;
        printf("%8d %4d %12.3f %12.3f %10.2f %10.2f\n", n, B, 1e3 * tf, 1e3 * tt, 1e-12 * ff / tf,
               1e-12 * 3.5 * ff / tt);
        fflush(stdout);
        k_free(&k, qkv);
        k_free(&k, dout);
        k_free(&k, out);
        k_free(&k, lse);
        k_free(&k, dqkv);
        batch_free(&bt);
    }
    kctx_close(&k);
    return 0;
}
