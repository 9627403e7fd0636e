// rundir.c: an output directory's earlier run: found, described, and removed on --overwrite.
#define _POSIX_C_SOURCE 200809L
#include "launch/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/common.h"

#define TB_EVENTS "events.out.tfevents."

static int is_file(const char *dir, const char *name) {
    char p[4600];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

// ckpt_<digits>.h5 (with_tmp: or its temporary, ckpt_<digits>.h5.tmp); *step set.
static int is_ckpt(const char *name, int with_tmp, long long *step) {
    char tail[16];
    if (sscanf(name, "ckpt_%lld%15s", step, tail) != 2) return 0;
    return !strcmp(tail, ".h5") || (with_tmp && !strcmp(tail, ".h5.tmp"));
}

static int count_events(const char *dir) {
    char tb[4200];
    snprintf(tb, sizeof(tb), "%s/tb", dir);
    DIR *d = opendir(tb);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += !strncmp(e->d_name, TB_EVENTS, strlen(TB_EVENTS));
    closedir(d);
    return n;
}

int rundir_describe(const char *dir, char *desc, size_t len) {
    int n = 0, nck = 0;
    long long lo = INT64_MAX, hi = -1;
    desc[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        if (is_ckpt(e->d_name, 0, &s) && is_file(dir, e->d_name)) {
            nck++;
            lo = s < lo ? s : lo;
            hi = s > hi ? s : hi;
        }
    }
    closedir(d);
    size_t at = 0;
#define ADD(...) at += (size_t)snprintf(desc + at, at < len ? len - at : 0, __VA_ARGS__)
    if (is_file(dir, "metrics.jsonl")) {
        ADD("metrics.jsonl");
        n++;
    }
    if (nck) {
        ADD("%s%d checkpoint file%s (steps %lld..%lld)", n ? ", " : "", nck, nck == 1 ? "" : "s",
            lo, hi);
        n += nck;
    }
    if (is_file(dir, "final.h5")) {
        ADD("%sfinal.h5", n ? ", " : "");
        n++;
    }
    const int nev = count_events(dir);
    if (nev) {
        ADD("%s%d TensorBoard event file%s in tb/", n ? ", " : "", nev, nev == 1 ? "" : "s");
        n += nev;
    }
#undef ADD
    return n;
}

static int remove_file(const char *path, char *err) {
    if (unlink(path) && errno != ENOENT)
        return sbmt_errf(err, "%s: cannot remove (--overwrite): %s", path, strerror(errno));
    return 0;
}

int rundir_clear(const char *dir, char *err) {
    char p[4600];
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        int rc = 0;
        while (rc == 0 && (e = readdir(d))) {
            long long s;
            if (!is_ckpt(e->d_name, 1, &s) || !is_file(dir, e->d_name)) continue;
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            rc = remove_file(p, err);
        }
        closedir(d);
        if (rc) return -1;
    }
    static const char *const files[] = {"final.h5", "metrics.jsonl", "report.svg"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        if (remove_file(p, err)) return -1;
    }
    char tb[4200];
    snprintf(tb, sizeof(tb), "%s/tb", dir);
    d = opendir(tb);
    if (!d) return 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (strncmp(e->d_name, TB_EVENTS, strlen(TB_EVENTS))) continue;
        snprintf(p, sizeof(p), "%s/%s", tb, e->d_name);
        rc = remove_file(p, err);
    }
    closedir(d);
    return rc;
}
