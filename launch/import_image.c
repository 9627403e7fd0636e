// import_image.c: `sbmt data import-image` and `sbmt data import-pathfinder`: converters of the
// LRA image tasks' public files (CIFAR-10 binary version; the pathfinder32 release directory) to
// sbmt HDF5 datasets. The conversion itself lives in io/import_image.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/import_image.h"
#include "kernels/common.h"
#include "launch/cli.h"

static void usage_image(FILE *f) {
    fprintf(f,
            "sbmt data import-image --in DIR --out F.h5 [--dev N] [--quiet]\n"
            "  DIR: the CIFAR-10 binary version (data_batch_1.bin .. data_batch_5.bin,\n"
            "  test_batch.bin). Grayscale round(0.299 R + 0.587 G + 0.114 B), token = gray + 1\n"
            "  (vocab 257), seq_len 1024, 10 classes. dev = the last N training records\n"
            "  (default %d: 45000/5000/10000).\n",
            IMG_CIFAR_DEFAULT_DEV);
}

static void usage_pathfinder(FILE *f) {
    fprintf(f,
            "sbmt data import-pathfinder --in DIR --out F.h5 [--difficulty easy|medium|hard]\n"
            "                            [--dir NAME] [--quiet]\n"
            "  DIR: the LRA release's pathfinder32 directory. --difficulty picks curv_baseline,\n"
            "  curv_contour_length_9 or curv_contour_length_14 (default hard); --dir NAME names\n"
            "  the subdirectory directly ('.' when DIR is itself one). Reads metadata/*.npy in\n"
            "  numeric order and the 32x32 gray PNGs they list; token = pixel + 1 (vocab 257),\n"
            "  seq_len 1024, 2 classes, split 80/10/10 %% in record order.\n");
}

static const char *const quiet_switch[] = {"--quiet", NULL};

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

static void print_summary(const char *out, const img_import_stats *st) {
    printf("wrote %s: %lld/%lld/%lld rows (train/dev/test), seq_len %d, vocab %d, %.1f s\n", out,
           (long long)st->rows[SPLIT_TRAIN], (long long)st->rows[SPLIT_DEV],
           (long long)st->rows[SPLIT_TEST], IMG_SEQ_LEN, IMG_VOCAB, st->seconds);
}

int cli_import_image(int argc, char **argv) {
    const char *me = "sbmt data import-image";
    if (wants_help(argc, argv)) {
        usage_image(stdout);
        return 0;
    }
    const char *in = NULL, *out = NULL;
    long long dev = IMG_CIFAR_DEFAULT_DEV;
    int quiet = 0;
    const char *a, *s;
    int r;
    for (int i = 0; (r = cli_next_option(argc, argv, &i, me, quiet_switch, &a, &s)) != 0;) {
        if (r < 0) return 1;
        if (!s) {
            quiet = 1;
        } else if (!strcmp(a, "--in")) {
            in = s;
        } else if (!strcmp(a, "--out")) {
            out = s;
        } else if (!strcmp(a, "--dev")) {
            int64_t v;
            if (cli_parse_int(me, a, s, 0, 1LL << 30, &v)) return 1;
            dev = v;
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", me, a);
            return 1;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "%s: --in DIR and --out FILE.h5 are required\n", me);
        usage_image(stderr);
        return 1;
    }
    char err[SBMT_ERR_LEN];
    img_import_stats st;
    if (img_import_cifar10(in, out, dev, !quiet, &st, err)) {
        fprintf(stderr, "%s: error: %s\n", me, err);
        return 1;
    }
    print_summary(out, &st);
    return 0;
}

int cli_import_pathfinder(int argc, char **argv) {
    const char *me = "sbmt data import-pathfinder";
    if (wants_help(argc, argv)) {
        usage_pathfinder(stdout);
        return 0;
    }
    const char *in = NULL, *out = NULL, *difficulty = NULL, *dir = NULL;
    int quiet = 0;
    const char *a, *s;
    int r;
    for (int i = 0; (r = cli_next_option(argc, argv, &i, me, quiet_switch, &a, &s)) != 0;) {
        if (r < 0) return 1;
        if (!s) quiet = 1;
        else if (!strcmp(a, "--in")) in = s;
        else if (!strcmp(a, "--out")) out = s;
        else if (!strcmp(a, "--difficulty")) difficulty = s;
        else if (!strcmp(a, "--dir")) dir = s;
        else {
            fprintf(stderr, "%s: unknown option '%s'\n", me, a);
            return 1;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "%s: --in DIR and --out FILE.h5 are required\n", me);
        usage_pathfinder(stderr);
        return 1;
    }
    if (difficulty && dir) {
        fprintf(stderr, "%s: give --difficulty or --dir, not both\n", me);
        return 1;
    }
    const char *sub = dir;
    if (!sub) {
        sub = img_pathfinder_dir(difficulty ? difficulty : "hard");
        if (!sub) {
            fprintf(stderr, "%s: --difficulty '%s': expected easy, medium or hard\n", me,
                    difficulty);
            return 1;
        }
    }
    char err[SBMT_ERR_LEN];
    img_import_stats st;
    if (img_import_pathfinder(in, sub, out, !quiet, &st, err)) {
        fprintf(stderr, "%s: error: %s\n", me, err);
        return 1;
    }
    print_summary(out, &st);
    return 0;
}
