// plot.c: `sbmt plot DIR [--out F.svg]`: the SVG report of a training run (io/report.h) from
// DIR/metrics.jsonl, written to DIR/report.svg unless --out says otherwise.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/report.h"
#include "kernels/common.h"
#include "launch/cli.h"

int cli_plot(int argc, char **argv) {
    const char *me = "sbmt plot";
    const char *target = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return cli_help("plot");
        if (!strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: --out needs a file name (see sbmt help plot)\n", me);
                return 1;
            }
            out = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "%s: unknown option '%s' (see sbmt help plot)\n", me, a);
            return 1;
        } else if (target) {
            fprintf(stderr, "%s: expected one run directory, got '%s' and '%s'\n", me, target, a);
            return 1;
        } else {
            target = a;
        }
    }
    if (!target) {
        fprintf(stderr, "%s: expected a run directory (sbmt plot DIR [--out F.svg])\n", me);
        return 1;
    }
    // DIR holds metrics.jsonl; a path to the file itself works too (the page goes next to it).
    struct stat st;
    if (stat(target, &st) != 0) {
        fprintf(stderr, "%s: %s: %s (expected a run directory holding metrics.jsonl)\n", me,
                target, strerror(errno));
        return 1;
    }
    size_t n = strlen(target) + 32;
    char *metrics = xmalloc(n), *def_out = xmalloc(n);
    if (S_ISDIR(st.st_mode)) {
        snprintf(metrics, n, "%s/metrics.jsonl", target);
        snprintf(def_out, n, "%s/report.svg", target);
    } else {
        snprintf(metrics, n, "%s", target);
        const char *slash = strrchr(target, '/');
        if (slash) snprintf(def_out, n, "%.*s/report.svg", (int)(slash - target), target);
        else snprintf(def_out, n, "report.svg");
    }
    if (!out) out = def_out;
    char err[SBMT_ERR_LEN];
    report_summary sum;
    int rc = 0;
    if (report_svg_write_summary(metrics, out, &sum, err)) {
        fprintf(stderr, "%s: %s\n", me, err);
        rc = 1;
    } else {
        printf("wrote %s (%zu records, %d series)\n", out, sum.records, sum.series);
    }
    free(metrics);
    free(def_out);
    return rc;
}
