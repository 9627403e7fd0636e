// common.c: error formatting, fatal exits, checked allocation and a wall clock.
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

int sbmt_errf(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, SBMT_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void sbmt_fatal(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "sbmt: fatal: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

void *sbmt_malloc(size_t bytes, const char *file, int line) {
    void *p = NULL;
    // 64-byte alignment keeps SIMD loads aligned and avoids false sharing between threads.
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        sbmt_fatal(file, line, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *sbmt_calloc(size_t n, size_t size, const char *file, int line) {
    void *p = sbmt_malloc(n * size, file, line);
    memset(p, 0, n * size);
    return p;
}

double sbmt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
