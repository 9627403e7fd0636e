// testdir.h: the scratch directory of a test program. testdir_make(name) creates a fresh
// $TMPDIR/sbmt_<name>_XXXXXX (TMPDIR defaults to /tmp) in `tmpdir`; testdir_remove() deletes it
// with everything in it. Meant for cmocka group setup and teardown.
#ifndef SBMT_TESTDIR_H
#define SBMT_TESTDIR_H

#include <stdio.h>
#include <stdlib.h>

static char tmpdir[256];

static inline int testdir_make(const char *name) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/sbmt_%s_XXXXXX", base && *base ? base : "/tmp", name);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static inline int testdir_remove(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

// out = tmpdir/name.
static inline void tpath(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmpdir, name);
}

#endif
