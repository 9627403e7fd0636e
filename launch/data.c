// data.c: `sbmt data listops ...`: the built-in LRA ListOps generator.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/listops.h"
#include "kernels/common.h"
#include "launch/cli.h"

int cli_data(int argc, char **argv) {
    if (argc >= 1) {
        const char *k = argv[0];
        if (!strcmp(k, "import-listops")) return cli_import_listops(argc - 1, argv + 1);
        if (!strcmp(k, "import-text")) return cli_import_text(argc - 1, argv + 1);
        if (!strcmp(k, "import-retrieval")) return cli_import_retrieval(argc - 1, argv + 1);
        if (!strcmp(k, "import-image")) return cli_import_image(argc - 1, argv + 1);
        if (!strcmp(k, "import-pathfinder")) return cli_import_pathfinder(argc - 1, argv + 1);
    }
    if (argc < 1 || strcmp(argv[0], "listops") != 0) {
        fprintf(stderr, "sbmt data: expected listops (the generator) or import-listops, "
                        "import-text, import-retrieval, import-image, import-pathfinder "
                        "(converters of the LRA release files; see sbmt help data)\n");
        return 1;
    }
    const char *me = "sbmt data listops";
    listops_params p = {96000, 2000, 2000, 500, 2000, 2048, 1};
    const char *out = NULL;
    int quiet = 0;
    static const char *const switches[] = {"--quiet", NULL};
    const char *a, *s;
    int r;
    for (int i = 1; (r = cli_next_option(argc, argv, &i, me, switches, &a, &s)) != 0;) {
        int64_t v;
        if (r < 0) return 1;
        if (!s) quiet = 1;
        else if (!strcmp(a, "--out")) out = s;
        else if (!strcmp(a, "--train")) { if (cli_parse_int(me, a, s, 0, 1 << 30, &p.train)) return 1; }
        else if (!strcmp(a, "--dev")) { if (cli_parse_int(me, a, s, 0, 1 << 30, &p.dev)) return 1; }
        else if (!strcmp(a, "--test")) { if (cli_parse_int(me, a, s, 0, 1 << 30, &p.test)) return 1; }
        else if (!strcmp(a, "--min-len")) { if (cli_parse_int(me, a, s, 0, 1 << 24, &v)) return 1; p.min_len = (int)v; }
        else if (!strcmp(a, "--max-len")) { if (cli_parse_int(me, a, s, 2, 1 << 24, &v)) return 1; p.max_len = (int)v; }
        else if (!strcmp(a, "--seq-len")) { if (cli_parse_int(me, a, s, 1, 1 << 24, &v)) return 1; p.seq_len = (int)v; }
        else if (!strcmp(a, "--seed")) { if (cli_parse_int(me, a, s, 0, INT64_MAX, &v)) return 1; p.seed = (uint64_t)v; }
        else {
            fprintf(stderr, "%s: unknown option '%s'\n", me, a);
            return 1;
        }
    }
    if (!out) {
        fprintf(stderr, "sbmt data listops: --out FILE.h5 is required\n");
        return 1;
    }
    char err[SBMT_ERR_LEN];
    double t0 = sbmt_now();
    if (listops_generate(&p, out, !quiet, err)) {
        fprintf(stderr, "sbmt data listops: error: %s\n", err);
        return 1;
    }
    printf("wrote %s: %lld/%lld/%lld rows, lengths in (%d, %d), seq_len %d, seed %llu, %.1f s\n",
           out, (long long)p.train, (long long)p.dev, (long long)p.test, p.min_len, p.max_len,
           p.seq_len, (unsigned long long)p.seed, sbmt_now() - t0);
    return 0;
}

int cli_help(const char *cmd) {
    if (!strcmp(cmd, "data")) {
        printf("sbmt data listops --out F.h5 [--train N] [--dev N] [--test N] [--min-len A]\n"
               "                  [--max-len B] [--seq-len L] [--seed S] [--quiet]\n"
               "  LRA ListOps (SPEC.md section 7); defaults: 96000/2000/2000, 500..2000, 2048, 1\n"
               "Converters of the LRA release files (each takes --help):\n"
               "sbmt data import-listops    --in DIR --out F.h5 [--seq-len N] [--truncate]\n"
               "sbmt data import-text       --in aclImdb --out F.h5 [--seq-len N] [--dev-from-train N]\n"
               "sbmt data import-retrieval  --in DIR --out F.h5 [--seq-len N]\n"
               "sbmt data import-image      --in cifar-10-batches-bin --out F.h5 [--dev N]\n"
               "sbmt data import-pathfinder --in pathfinder32 --out F.h5 [--difficulty easy|medium|hard]\n");
    } else if (!strcmp(cmd, "train")) {
        printf("sbmt train --config C.ini [--data F.h5] [--out DIR] [--threads N] [--resume auto|F]\n"
               "           [--overwrite] [--set s.k=v ...]\n"
               "  Without a dataset (no --data, no data.path) ListOps is generated under data/.\n"
               "  Writes DIR/metrics.jsonl (one JSON object per line), DIR/report.svg (the\n"
               "  curves, refreshed at every evaluation), DIR/tb/ (TensorBoard events; off with\n"
               "  train.tensorboard=false), DIR/ckpt_<step>.h5 every train.checkpoint_every\n"
               "  steps (the newest train.keep_checkpoints kept) and DIR/final.h5. --resume\n"
               "  auto continues from the newest complete checkpoint in DIR (a fresh start if\n"
               "  there is none). A DIR that holds an earlier run is refused without --resume;\n"
               "  --overwrite removes that run's files (checkpoints, final.h5, metrics, events)\n"
               "  and starts afresh. SIGTERM/SIGINT/SIGUSR1 checkpoint and stop with exit\n"
               "  status 75.\n"
               "  Distributed: mpirun -n N sbmt train ... (or srun --mpi=pmix); dist.tp = T ranks\n"
               "  split the heads, dp = N / T split train.batch_size; train.micro_batch = M\n"
               "  accumulates gradients over passes of M examples. --threads defaults to the\n"
               "  node's cores / its ranks.\n");
    } else if (!strcmp(cmd, "inspect")) {
        printf("sbmt inspect FILE.h5\n  Format, version, step, config and tensors of a checkpoint,\n"
               "  or the attributes and splits of a dataset.\n");
    } else if (!strcmp(cmd, "eval")) {
        printf("sbmt eval --ckpt F.h5 --data D.h5 [--split train|dev|test] [--json] [--threads N]\n"
               "          [--batch N] [--backend cpu|cuda]\n"
               "  With --json the last line is {\"split\", \"accuracy\", \"loss\", ...}.\n");
    } else if (!strcmp(cmd, "plot")) {
        printf("sbmt plot DIR [--out F.svg]\n"
               "  One self-contained SVG page (any browser opens it) from DIR/metrics.jsonl:\n"
               "  loss, accuracy (test as a marker), learning rate, tokens/s and, for SBM\n"
               "  models, the attention density of every layer and head. DIR may also be the\n"
               "  metrics.jsonl file itself. Default output DIR/report.svg, which sbmt train\n"
               "  also refreshes at every evaluation. A malformed line is an error naming the\n"
               "  file and line; an existing page is then left as it was.\n");
    } else {
        fprintf(stderr, "sbmt help: unknown command '%s' (data, train, eval, inspect, plot)\n",
                cmd);
        return 1;
    }
    return 0;
}
