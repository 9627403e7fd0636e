// fuzzlib.h: what the libFuzzer targets of tests/fuzz/ share: a scratch directory per process
// (emptied before each input, removed at exit), file writing, and a byte reader that turns the
// fuzzer's input into the choices of a structure-aware target. Header-only.
#ifndef SBMT_FUZZLIB_H
#define SBMT_FUZZLIB_H

#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ftw.h>

static char fz_root[256];

static int fz_rm_one(const char *p, const struct stat *st, int type, struct FTW *ftw) {
    (void)st;
    (void)type;
    if (ftw->level > 0) remove(p);
    return 0;
}

// Empties the scratch directory (no fork per input, unlike rm -rf).
static inline void fz_empty(void) { nftw(fz_root, fz_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static void fz_rm(void) {
    if (!fz_root[0]) return;
    fz_empty();
    rmdir(fz_root);
}

// The scratch directory, emptied (created on the first call).
static inline const char *fz_dir(void) {
    if (!fz_root[0]) {
        snprintf(fz_root, sizeof fz_root, "/tmp/sbmt_fuzz_XXXXXX");
        if (!mkdtemp(fz_root)) abort();
        atexit(fz_rm);
    } else {
        fz_empty();
    }
    return fz_root;
}

static inline void fz_path(char *out, size_t len, const char *rel) {
    snprintf(out, len, "%s/%s", fz_root, rel);
}

static inline void fz_mkdir(const char *rel) {
    char p[512];
    fz_path(p, sizeof p, rel);
    mkdir(p, 0755);
}

static inline void fz_write(const char *rel, const void *data, size_t n) {
    char p[512];
    fz_path(p, sizeof p, rel);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}

// Splits the input at 0xFF bytes into at most `max` parts (part i: data + off[i], len[i]).
static inline int fz_split(const uint8_t *d, size_t n, int max, size_t *off, size_t *len) {
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n && k < max; i++)
        if (i == n || d[i] == 0xFF) {
            off[k] = start;
            len[k] = i - start;
            k++;
            start = i + 1;
        }
    return k;
}

typedef struct {
    const uint8_t *d;
    size_t n, pos;
} fz_reader;

static inline uint32_t fz_u8(fz_reader *r) { return r->pos < r->n ? r->d[r->pos++] : 0; }
static inline uint32_t fz_u32(fz_reader *r) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | fz_u8(r);
    return v;
}
static inline float fz_f32(fz_reader *r) {
    uint32_t b = fz_u32(r);
    float f;
    memcpy(&f, &b, 4);
    return f;
}
// A short string (length from one byte, at most max - 1), NUL-terminated.
static inline void fz_str(fz_reader *r, char *out, size_t max) {
    size_t len = fz_u8(r) % max, i = 0;
    for (; i < len && r->pos < r->n; i++) out[i] = (char)r->d[r->pos++];
    out[i] = '\0';
}

#endif
