// listops.c: the LRA ListOps generator (SPEC.md section 7) and an evaluator over token ids.
//
// Randomness: attempt t (t = 0, 1, 2, ... counted over the whole file) draws its 32-bit words
// from rng_make(seed, RNG_GENERATE, step = t >> 32, 0, 0, sample = (uint32)t), blocks 0, 1, ...
// four words per block, consumed in order. Per node below the maximum depth: one word w gives
// r = rng_u01(w); r > 0.25 makes a digit (next word, floor(w * 10 / 2^32)), otherwise an
// operator (next word: w >> 30 picks MIN/MAX/MED/SM) whose argument count is
// 2 + floor(w * 9 / 2^32) from the word after. At the maximum depth a digit is drawn directly.
// Trees are generated depth-first with an explicit stack and abandoned as soon as their length
// (counting the pending "]" tokens) reaches max_len, since such a tree can never be kept.
// Accepted trees (min_len < length < max_len, not seen before anywhere in the file) fill train,
// then dev, then test in attempt order, so the file is a pure function of the parameters.
// Duplicates are detected with a 128-bit hash of the token sequence (two independent 64-bit
// hashes; the chance of a false "duplicate" among 10^5 trees is below 10^-28).
#define _POSIX_C_SOURCE 200809L
#include "io/listops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/dataset.h"
#include "kernels/common.h"
#include "kernels/philox.h"

const char *const listops_symbols[LISTOPS_VOCAB] = {
    "<pad>", "[MIN", "[MAX", "[MED", "[SM", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "]"};

enum { TOK_PAD = 0, TOK_MIN = 1, TOK_MAX = 2, TOK_MED = 3, TOK_SM = 4, TOK_D0 = 5, TOK_END = 15 };
#define LO_MAX_DEPTH 10
#define LO_MAX_ARGS 10
#define LO_VALUE_P 0.25f

// ---------------------------------------------------------------------------------------------
// Evaluation

static int reduce(int op, int *v, int n) {
    int r = 0;
    switch (op) {
    case TOK_MIN:
        r = v[0];
        for (int i = 1; i < n; i++) r = v[i] < r ? v[i] : r;
        return r;
    case TOK_MAX:
        r = v[0];
        for (int i = 1; i < n; i++) r = v[i] > r ? v[i] : r;
        return r;
    case TOK_SM:
        for (int i = 0; i < n; i++) r += v[i];
        return r % 10;
    default: {  // TOK_MED: numpy median (mean of the middle pair when even), then int()
        for (int i = 1; i < n; i++) {  // insertion sort; v is this frame's private slice
            int x = v[i], j = i - 1;
            while (j >= 0 && v[j] > x) v[j + 1] = v[j], j--;
            v[j + 1] = x;
        }
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    }
    }
}

int listops_eval_ids(const int32_t *ids, int len) {
    if (!ids || len <= 0) return -1;
    int n = 0;
    while (n < len && ids[n] != TOK_PAD) n++;
    for (int i = n; i < len; i++)
        if (ids[i] != TOK_PAD) return -1;  // tokens after padding
    if (n == 0) return -1;
    // vals: argument values of the open operators, back to back; frames: each open operator
    // and where its arguments start in vals.
    int *vals = xmalloc(sizeof(int) * (size_t)n);
    int *fop = xmalloc(sizeof(int) * (size_t)n), *fstart = xmalloc(sizeof(int) * (size_t)n);
    int nv = 0, nf = 0, result = -1, have_result = 0;
    for (int i = 0; i < n; i++) {
        int t = ids[i];
        int value = -1;
        if (t >= TOK_MIN && t <= TOK_SM) {
            if (have_result) goto bad;
            fop[nf] = t;
            fstart[nf++] = nv;
            continue;
        } else if (t >= TOK_D0 && t < TOK_D0 + 10) {
            value = t - TOK_D0;
        } else if (t == TOK_END) {
            if (nf == 0) goto bad;
            nf--;
            int cnt = nv - fstart[nf];
            if (cnt < 1) goto bad;
            value = reduce(fop[nf], vals + fstart[nf], cnt);
            nv = fstart[nf];
        } else {
            goto bad;
        }
        if (nf > 0) {
            vals[nv++] = value;
        } else {
            if (have_result) goto bad;  // a second top-level expression
            result = value;
            have_result = 1;
        }
    }
    if (nf != 0 || !have_result) goto bad;
    free(vals);
    free(fop);
    free(fstart);
    return result;
bad:
    free(vals);
    free(fop);
    free(fstart);
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Generation

typedef struct {
    rng_stream s;
    uint32_t block;
    int used;
    philox4x32 buf;
} word_src;

static inline uint32_t next_word(word_src *w) {
    if (w->used == 4) {
        w->buf = rng_block(w->s, w->block++);
        w->used = 0;
    }
    return w->buf.v[w->used++];
}

static inline uint32_t uniform_below(uint32_t w, uint32_t n) {
    return (uint32_t)(((uint64_t)w * n) >> 32);
}

// Generates the tree of attempt t into out (capacity max_len + 2 tokens). Returns its length, or
// -1 when it reached max_len tokens (counting the closing tokens still owed) and was abandoned.
static int gen_tree(uint64_t seed, uint64_t t, int max_len, uint8_t *out) {
    word_src w = {rng_make(seed, RNG_GENERATE, (uint32_t)(t >> 32), 0, 0, (uint32_t)t), 0, 4,
                  {{0, 0, 0, 0}}};
    int remaining[LO_MAX_DEPTH + 1];  // arguments still to generate, per open operator
    int sp = 0, len = 0;
    for (;;) {
        int depth = sp + 1;
        int digit = depth >= LO_MAX_DEPTH || rng_u01(next_word(&w)) > LO_VALUE_P;
        if (digit) {
            out[len++] = (uint8_t)(TOK_D0 + uniform_below(next_word(&w), 10));
            while (sp > 0 && --remaining[sp - 1] == 0) {
                out[len++] = TOK_END;
                sp--;
            }
            if (sp == 0) return len;
        } else {
            out[len++] = (uint8_t)(TOK_MIN + (next_word(&w) >> 30));
            remaining[sp++] = 2 + (int)uniform_below(next_word(&w), LO_MAX_ARGS - 1);
        }
        if (len + sp >= max_len) return -1;
    }
}

static inline uint64_t mix64(uint64_t x) {  // murmur3 finaliser
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

// Two independent 64-bit hashes of a token sequence.
static void hash128(const uint8_t *tok, int len, uint64_t *h1, uint64_t *h2) {
    uint64_t a = 0x9E3779B97F4A7C15ULL ^ (uint64_t)len, b = 0xD1B54A32D192ED03ULL + (uint64_t)len;
    int i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, tok + i, 8);
        a = mix64(a ^ x) + 0x632BE59BD9B4E019ULL;
        b = mix64(b + (x * 0x8CB92BA72F3D8DD7ULL)) ^ 0x85EBCA77C2B2AE63ULL;
    }
    uint64_t x = 0;
    for (int k = 0; i < len; i++, k++) x |= (uint64_t)tok[i] << (8 * k);
    a = mix64(a ^ x ^ 0xA0761D6478BD642FULL);
    b = mix64(b + x * 0x8CB92BA72F3D8DD7ULL + 0xE7037ED1A0B428DBULL);
    *h1 = a;
    *h2 = b;
}

typedef struct {
    uint64_t *keys;  // pairs (h1, h2); h1 == 0 marks an empty slot (h1 is forced odd)
    uint64_t mask;
} hash_set;

// Inserts; returns 1 when new, 0 when already present.
static int set_insert(hash_set *s, uint64_t h1, uint64_t h2) {
    h1 |= 1;
    for (uint64_t i = h2 & s->mask;; i = (i + 1) & s->mask) {
        uint64_t *k = s->keys + 2 * i;
        if (k[0] == 0) {
            k[0] = h1;
            k[1] = h2;
            return 1;
        }
        if (k[0] == h1 && k[1] == h2) return 0;
    }
}

int listops_generate(const listops_params *p, const char *out_path, int progress, char *err) {
    if (p->train < 0 || p->dev < 0 || p->test < 0 || p->train + p->dev + p->test <= 0)
        return sbmt_errf(err, "listops: split sizes must be >= 0 and not all 0 (got %lld/%lld/%lld)",
                         (long long)p->train, (long long)p->dev, (long long)p->test);
    if (p->train + p->dev + p->test > ((int64_t)1 << 40))
        return sbmt_errf(err, "listops: too many rows requested");
    if (p->min_len < 0 || p->max_len < p->min_len + 2)
        return sbmt_errf(err, "listops: need 0 <= min_len and min_len + 2 <= max_len (got %d, %d): "
                         "lengths are kept strictly between them",
                         p->min_len, p->max_len);
    if (p->max_len > (1 << 24))
        return sbmt_errf(err, "listops: max_len %d is too large", p->max_len);
    if (p->seq_len < p->max_len - 1)
        return sbmt_errf(err, "listops: seq_len %d is shorter than the longest kept tree (%d tokens)",
                         p->seq_len, p->max_len - 1);

    const int64_t counts[SPLIT_COUNT] = {p->train, p->dev, p->test};
    const int64_t total = p->train + p->dev + p->test;
    ds_writer w;
    if (ds_writer_create(&w, out_path, "listops", LISTOPS_VOCAB, LISTOPS_CLASSES, p->seq_len, 0,
                         listops_symbols, err))
        return -1;
    char prov[256];
    snprintf(prov, sizeof prov,
             "sbmt listops: seed=%llu train=%lld dev=%lld test=%lld min_len=%d max_len=%d "
             "max_depth=%d max_args=%d",
             (unsigned long long)p->seed, (long long)p->train, (long long)p->dev,
             (long long)p->test, p->min_len, p->max_len, LO_MAX_DEPTH, LO_MAX_ARGS);
    if (ds_writer_attr_str(&w, "generator", prov, err)) {
        ds_writer_close(&w, NULL);
        return -1;
    }

    hash_set set;
    uint64_t cap = 64;
    while (cap < (uint64_t)total * 2) cap <<= 1;
    set.keys = xcalloc((size_t)cap * 2, sizeof(uint64_t));
    set.mask = cap - 1;

    const int B = 256;  // rows per write
    const size_t L = (size_t)p->seq_len;
    int32_t *ids = xmalloc(sizeof(int32_t) * L * (size_t)B);
    int32_t *labels = xmalloc(sizeof(int32_t) * (size_t)B);
    uint8_t *tok = xmalloc((size_t)p->max_len + 2);
    const uint64_t stall_limit = 20000000ULL;  // attempts without a new tree before giving up
    uint64_t t = 0, last_new = 0;
    double t0 = sbmt_now();
    int rc = -1;

    for (int s = 0; s < SPLIT_COUNT; s++) {
        if (ds_writer_split_begin(&w, s, counts[s], err)) goto out;
        int64_t done = 0, next_report = counts[s] >= 10000 ? counts[s] / 10 : counts[s];
        int fill = 0;
        while (done < counts[s]) {
            if (t - last_new > stall_limit) {
                sbmt_errf(err, "listops: found only %lld distinct trees with %d < length < %d in "
                          "%llu attempts; ask for fewer rows or wider length bounds",
                          (long long)(done + (s > 0 ? counts[0] : 0) + (s > 1 ? counts[1] : 0)),
                          p->min_len, p->max_len, (unsigned long long)t);
                goto out;
            }
            int len = gen_tree(p->seed, t++, p->max_len, tok);
            if (len <= p->min_len || len >= p->max_len) continue;
            uint64_t h1, h2;
            hash128(tok, len, &h1, &h2);
            if (!set_insert(&set, h1, h2)) continue;
            last_new = t;
            int32_t *row = ids + (size_t)fill * L;
            for (int i = 0; i < len; i++) row[i] = tok[i];
            for (size_t i = (size_t)len; i < L; i++) row[i] = TOK_PAD;
            labels[fill] = listops_eval_ids(row, len);
            CHECK(labels[fill] >= 0);
            done++;
            if (++fill == B || done == counts[s]) {
                if (ds_writer_split_rows(&w, fill, ids, NULL, labels, err)) goto out;
                fill = 0;
            }
            if (progress && (done == counts[s] || (next_report > 0 && done == next_report))) {
                fprintf(stderr, "listops: %s %lld/%lld rows (%llu trees tried, %.1f s)\n",
                        split_names[s], (long long)done, (long long)counts[s],
                        (unsigned long long)t, sbmt_now() - t0);
                next_report += counts[s] / 10;
            }
        }
        if (ds_writer_split_end(&w, err)) goto out;
    }
    rc = 0;
out:
    free(set.keys);
    free(ids);
    free(labels);
    free(tok);
    if (rc) {
        ds_writer_close(&w, NULL);
        return -1;
    }
    return ds_writer_close(&w, err);
}
