// sbm_bernoulli.h: the exact dense sampler's inner step on the CPU, A_ij ~ Bernoulli(min(1,
// P_ij + eps)) with P = T1 Yk^T (T1 = Yq S), for a few query rows against all keys at once.
// P is computed 6 rows x 16 keys at a time in registers and compared there with the pairs'
// uniforms, so no block of P goes through memory (the GEMM-then-compare alternative writes,
// zeroes and rereads it).
#ifndef SBMT_SBM_BERNOULLI_H
#define SBMT_SBM_BERNOULLI_H

#include <stddef.h>
#include <stdint.h>

enum { BERN_ROWS = 6, BERN_KEYS = 16 };

// 1 when the fused kernel is compiled in (AVX2 and FMA).
int bern_fast(void);

// Floats of the packed keys for L keys and k clusters.
size_t bern_keys_floats(int L, int kc);

// Packs Yk (L rows, stride ld) into panels of 16 keys, [ceil(L/16)][kc][16] (zeros past L),
// and the keys' validity (mask != 0) into one 16-bit word per panel.
void bern_pack_keys(float *Ykp, uint16_t *valid, const float *Yk, int ld, const float *mask, int L,
                    int kc);

// For the R <= 6 query rows of T1 (row stride ldt): col[r] receives the keys j < L (ascending)
// with u_rj < thr_rj, where u_rj = words[r][j] >> 8 and thr_rj = (int)(min(1, P_rj + eps) * 2^24);
// count[r] their number. words[r] must be readable up to index ceil(L/16)*16. simd = 0 runs the
// portable loop (the reference the tests compare the fused kernel with).
void bern_rows(int *const *col, int *count, const float *T1, int ldt, int R, const float *Ykp,
               const uint16_t *valid, int L, int kc, float eps, const uint32_t *const *words,
               int simd);

#endif
