// common.h: error reporting, checked allocation and check macros shared by every module.
// Errors that a user can cause (bad files, flags, configs) are returned as -1 with a message in
// a caller-supplied buffer of SBMT_ERR_LEN bytes, so tests can assert on them and the CLI can print
// them. Internal invariant failures (out of memory, library errors) abort via the CHECK macros
// with file, line and the failing expression.
#ifndef SBMT_COMMON_H
#define SBMT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SBMT_ERR_LEN 1024
#define SBMT_VERSION "0.1.0"

#if defined(__GNUC__)
#define SBMT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SBMT_PRINTF(a, b)
#endif

// C11 and the C++ of the CUDA files spell "does not return" differently.
#if defined(__cplusplus)
#define SBMT_NORETURN [[noreturn]]
#else
#define SBMT_NORETURN _Noreturn
#endif

// Writes a formatted message into err (SBMT_ERR_LEN bytes, may be NULL) and returns -1.
int sbmt_errf(char *err, const char *fmt, ...) SBMT_PRINTF(2, 3);

// Prints "sbmt: fatal: file:line: message" to stderr and exits with status 2.
SBMT_NORETURN void sbmt_fatal(const char *file, int line, const char *fmt, ...) SBMT_PRINTF(3, 4);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) sbmt_fatal(__FILE__, __LINE__, "check failed: %s", #cond);                   \
    } while (0)

void *sbmt_malloc(size_t bytes, const char *file, int line);
void *sbmt_calloc(size_t n, size_t size, const char *file, int line);
#define xmalloc(bytes) sbmt_malloc((bytes), __FILE__, __LINE__)
#define xcalloc(n, size) sbmt_calloc((n), (size), __FILE__, __LINE__)

// Monotonic wall-clock seconds.
double sbmt_now(void);

#endif
