// eval.c: `sbmt eval --ckpt F --data D --split S [--json]`: rebuilds the model from the
// configuration stored in the checkpoint, loads its tensors and evaluates one split.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "io/dataset.h"
#include "io/inspect.h"
#include "kernels/backend.h"
#include "kernels/common.h"
#include "launch/cli.h"
#include "launch/run.h"

int cli_eval(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return cli_help("eval");
    const char *ckpt = NULL, *data = NULL, *split_name = "test";
    int json = 0, threads = 0, batch = 0;
    const char *backend = "cpu";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "--ckpt") && has_val) ckpt = argv[++i];
        else if (!strcmp(a, "--data") && has_val) data = argv[++i];
        else if (!strcmp(a, "--split") && has_val) split_name = argv[++i];
        else if (!strcmp(a, "--backend") && has_val) backend = argv[++i];
        else if (!strcmp(a, "--json")) json = 1;
        else if ((!strcmp(a, "--threads") || !strcmp(a, "--batch")) && has_val) {
            int64_t v;
            if (cli_parse_int("sbmt eval", a, argv[++i], 1, 1 << 20, &v)) return 1;
            *(a[2] == 't' ? &threads : &batch) = (int)v;
        } else {
            fprintf(stderr, "sbmt eval: unknown or incomplete option '%s' (see sbmt help eval)\n", a);
            return 1;
        }
    }
    if (!ckpt || !data) {
        fprintf(stderr, "sbmt eval: --ckpt and --data are required\n");
        return 1;
    }
    int split = split_from_name(split_name);
    if (split < 0) {
        fprintf(stderr, "sbmt eval: --split '%s': expected train, dev or test\n", split_name);
        return 1;
    }
    char err[SBMT_ERR_LEN];
    sbmt_config cfg;
    ds_file ds;
    memset(&ds, 0, sizeof(ds));
    model m;
    memset(&m, 0, sizeof(m));
    int64_t step;
    uint64_t seed;
    char *text = NULL;
    int rc = 1;
    float *host = NULL;
    kctx k;
    memset(&k, 0, sizeof(k));
    if (ckpt_read_meta(ckpt, &step, &seed, &text, err)) goto done;
    config_defaults(&cfg);
    if (config_load_string(&cfg, text, ckpt, err)) goto done;
    if (ds_open(&ds, data, err)) goto done;
    if (run_resolve_config(&cfg, &ds, err)) goto done;
    if (strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
        sbmt_errf(err, "--backend '%s': expected cpu or cuda", backend);
        goto done;
    }
    char e2[SBMT_ERR_LEN];
    if (kctx_open(&k, strcmp(backend, "cuda") ? KB_CPU : KB_CUDA, threads, 0, e2)) {
        sbmt_errf(err, "--backend %s: %.900s", backend, e2);
        goto done;
    }
    const char *missing = kctx_missing_op(&k, strcmp(cfg.attention, "sbm") == 0);
    if (missing) {
        sbmt_errf(err, "--backend %s: this backend has no %s kernel yet (the checkpoint's "
                       "model.attention = %s); use --backend cpu", backend, missing, cfg.attention);
        goto done;
    }
    if (run_check_cuda_sbm(&cfg, &k, e2)) {
        sbmt_errf(err, "--backend %s: the checkpoint's %.900s", backend, e2);
        goto done;
    }
    model_dims dims = run_model_dims(&cfg);
    model_init(&m, &k, &dims, batch ? batch : (cfg.batch_size < 64 ? cfg.batch_size : 64), cfg.seed);
    // A one-process model: its table is the checkpoint's logical one.
    host = xmalloc(sizeof(float) * m.nparams);
    if (ckpt_load(ckpt, &m.table, host, NULL, NULL, err)) goto done;
    model_set_state(&m, host, NULL, NULL);
    eval_result res;
    double t0 = sbmt_now();
    if (run_evaluate(&m, &k, NULL, &ds, split, 0, &cfg, &res, err)) goto done;
    printf("%s: %s split of %s: loss %.4f | accuracy %.4f | %lld rows | step %lld | %.1f s\n", ckpt,
           split_names[split], data, res.loss, res.accuracy, (long long)res.rows, (long long)step,
           sbmt_now() - t0);
    for (int l = 0; res.nd && l < cfg.layers; l++) {
        printf("  density layer %d:", l);
        for (int h = 0; h < cfg.heads; h++) printf(" %.4f", res.density[l * cfg.heads + h]);
        printf("\n");
    }
    if (json) {
        printf("{\"split\":\"%s\",\"accuracy\":%.6f,\"loss\":%.6f,\"rows\":%lld,\"step\":%lld",
               split_names[split], res.accuracy, res.loss, (long long)res.rows, (long long)step);
        if (res.nd) {
            putchar(',');
            run_json_density(stdout, res.density, cfg.layers, cfg.heads);
        }
        printf("}\n");
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "sbmt eval: error: %s\n", err);
    free(text);
    free(host);
    if (m.params) model_free(&m);
    if (k.ops) kctx_close(&k);
    if (ds.file > 0) ds_close(&ds);
    return rc;
}

int cli_inspect(int argc, char **argv) {
    if (argc != 1) {
        fprintf(stderr, "sbmt inspect: expected one file (sbmt inspect FILE.h5)\n");
        return 1;
    }
    char err[SBMT_ERR_LEN];
    if (inspect_file(argv[0], stdout, err)) {
        fprintf(stderr, "sbmt inspect: error: %s\n", err);
        return 1;
    }
    return 0;
}
