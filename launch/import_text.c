// import_text.c: `sbmt data import-listops|import-text|import-retrieval ...`: converters of the
// LRA release files of the three text tasks (formats and conventions in io/import_text.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/import_text.h"
#include "kernels/common.h"
#include "launch/cli.h"

enum { IMP_LISTOPS, IMP_TEXT, IMP_RETRIEVAL };

static const char *const imp_names[3] = {"import-listops", "import-text", "import-retrieval"};

static void imp_usage(int kind, FILE *f) {
    if (kind == IMP_LISTOPS)
        fprintf(f, "sbmt data import-listops --in DIR --out F.h5 [--seq-len N] [--truncate] [--quiet]\n"
                   "  DIR holds basic_train.tsv, basic_val.tsv, basic_test.tsv (lra_release/"
                   "listops-1000);\n"
                   "  seq_len default %d; a longer expression is an error unless --truncate.\n",
                LRA_LISTOPS_SEQ_LEN);
    else if (kind == IMP_TEXT)
        fprintf(f, "sbmt data import-text --in aclImdb_DIR --out F.h5 [--seq-len N]\n"
                   "                      [--dev-from-train N] [--quiet]\n"
                   "  DIR/{train,test}/{neg,pos}/*.txt; byte-level ids (byte + 1, vocab 257),\n"
                   "  cut/padded to seq_len (default %d). dev = a copy of test (as LRA), or N\n"
                   "  reviews taken out of train with --dev-from-train N.\n",
                LRA_TEXT_SEQ_LEN);
    else
        fprintf(f, "sbmt data import-retrieval --in DIR --out F.h5 [--seq-len N] [--quiet]\n"
                   "  DIR holds new_aan_pairs.{train,eval,test}.tsv (lra_release/tsv_data);\n"
                   "  byte-level ids (byte + 1, vocab 257), each text cut/padded to seq_len\n"
                   "  (default %d); dual dataset (input_ids, input_ids_1).\n",
                LRA_RETRIEVAL_SEQ_LEN);
}

static int imp_main(int kind, int argc, char **argv) {
    const char *cmd = imp_names[kind];
    char me[64];
    snprintf(me, sizeof me, "sbmt data %s", cmd);
    const char *in = NULL, *out = NULL;
    lra_import_opts o = {0, 0, 0, 1};
    static const char *const sw_listops[] = {"--help", "-h", "--quiet", "--truncate", NULL};
    static const char *const sw_other[] = {"--help", "-h", "--quiet", NULL};
    const char *const *sw = kind == IMP_LISTOPS ? sw_listops : sw_other;
    const char *a, *s;
    int r;
    for (int i = 0; (r = cli_next_option(argc, argv, &i, me, sw, &a, &s)) != 0;) {
        int64_t v;
        if (r < 0) {
            imp_usage(kind, stderr);
            return 1;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            imp_usage(kind, stdout);
            return 0;
        }
        if (!s) {
            if (!strcmp(a, "--quiet")) o.progress = 0;
            else o.truncate = 1;
        } else if (!strcmp(a, "--in")) in = s;
        else if (!strcmp(a, "--out")) out = s;
        else if (!strcmp(a, "--seq-len")) {
            if (cli_parse_int(me, a, s, 1, 1 << 24, &v)) return 1;
            o.seq_len = (int)v;
        } else if (kind == IMP_TEXT && !strcmp(a, "--dev-from-train")) {
            if (cli_parse_int(me, a, s, 1, 1 << 30, &v)) return 1;
            o.dev_from_train = v;
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", me, a);
            imp_usage(kind, stderr);
            return 1;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "sbmt data %s: %s is required\n", cmd, !in ? "--in DIR" : "--out F.h5");
        imp_usage(kind, stderr);
        return 1;
    }
    char err[SBMT_ERR_LEN];
    lra_import_stats st;
    int rc = kind == IMP_LISTOPS ? lra_import_listops(in, out, &o, &st, err)
             : kind == IMP_TEXT  ? lra_import_text(in, out, &o, &st, err)
                                 : lra_import_retrieval(in, out, &o, &st, err);
    if (rc) {
        fprintf(stderr, "sbmt data %s: error: %s\n", cmd, err);
        return 1;
    }
    const char *unit = kind == IMP_LISTOPS ? "tokens" : "bytes";
    const char *what = kind == IMP_LISTOPS ? "expressions" : kind == IMP_TEXT ? "reviews" : "texts";
    printf("wrote %s: train/dev/test %lld/%lld/%lld rows%s, seq_len %d, longest %lld %s, "
           "truncated %lld/%lld/%lld %s, %.1f s\n",
           out, (long long)st.rows[0], (long long)st.rows[1], (long long)st.rows[2],
           kind == IMP_TEXT && !o.dev_from_train ? " (dev = a copy of test)" : "", st.seq_len,
           (long long)st.max_len, unit, (long long)st.truncated[0], (long long)st.truncated[1],
           (long long)st.truncated[2], what, st.seconds);
    return 0;
}

int cli_import_listops(int argc, char **argv) { return imp_main(IMP_LISTOPS, argc, argv); }
int cli_import_text(int argc, char **argv) { return imp_main(IMP_TEXT, argc, argv); }
int cli_import_retrieval(int argc, char **argv) { return imp_main(IMP_RETRIEVAL, argc, argv); }
