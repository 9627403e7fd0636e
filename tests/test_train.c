// test_train.c: end-to-end through the sbmt binary: a short ListOps run whose loss falls and
// whose test accuracy beats the majority class, metrics.jsonl, eval --json on final.h5, and
// the CLI's named errors and non-zero exits for bad input.
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/dataset.h"
#include "kernels/common.h"
#include "testdir.h"

static const char *bin;

// Runs a shell command in the scratch dir; returns its exit status, output in *out (malloc'd).
static int run(const char *cmd, char **out) {
    char full[8192];
    snprintf(full, sizeof(full), "cd %s && %s 2>&1", tmpdir, cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (len + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int setup(void **state) {
    (void)state;
    bin = getenv("SBMT_BIN");
    if (!bin) return -1;
    return testdir_make("test_train");
}

static int teardown(void **state) {
    (void)state;
    return testdir_remove();
}

static double json_num(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) fail_msg("no %s in %s", key, line);
    return atof(p + strlen(pat));
}

static void test_train_learns(void **state) {
    (void)state;
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof(cmd),
             "%s data listops --out lo.h5 --train 6000 --dev 300 --test 500 --min-len 10 "
             "--max-len 60 --seq-len 64 --seed 3 --quiet",
             bin);
    assert_int_equal(run(cmd, NULL), 0);
    snprintf(cmd, sizeof(cmd),
             "%s train --data lo.h5 --out run --threads 2 --set model.attention=softmax "
             "--set data.seq_len=64 --set train.batch_size=32 --set train.steps=400 "
             "--set train.warmup=40 --set train.lr=2e-3 --set train.eval_every=200 "
             "--set train.log_every=50 --set train.seed=5",
             bin);
    int rc = run(cmd, &out);
    if (rc) fail_msg("train failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "step 400/400"));
    assert_non_null(strstr(out, "tok/s"));
    free(out);

    // Majority-class rate of the test split.
    char path[512], err[SBMT_ERR_LEN];
    tpath(path, sizeof(path), "lo.h5");
    ds_file ds;
    assert_int_equal(ds_open(&ds, path, err), 0);
    int64_t nt = ds.rows[SPLIT_TEST];
    int64_t *rows = xmalloc(sizeof(int64_t) * nt);
    int32_t *ids = xmalloc(sizeof(int32_t) * nt * 64), *lab = xmalloc(sizeof(int32_t) * nt);
    for (int64_t i = 0; i < nt; i++) rows[i] = i;
    assert_int_equal(ds_read_rows(&ds, SPLIT_TEST, rows, (int)nt, ids, NULL, lab, err), 0);
    int counts[10] = {0}, maxc = 0;
    for (int64_t i = 0; i < nt; i++) counts[lab[i]]++;
    for (int c = 0; c < 10; c++)
        if (counts[c] > maxc) maxc = counts[c];
    double majority = (double)maxc / nt;
    ds_close(&ds);
    free(rows);
    free(ids);
    free(lab);

    // metrics.jsonl: train lines with falling loss, dev and test lines.
    tpath(path, sizeof(path), "run/metrics.jsonl");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    double first_loss = -1, last_loss = -1, test_acc = -1;
    int ntrain = 0, ndev = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strstr(line, "\"split\":\"train\"")) {
            double l = json_num(line, "loss");
            if (first_loss < 0) first_loss = l;
            last_loss = l;
            assert_true(json_num(line, "tokens_per_s") > 0);
            assert_true(json_num(line, "lr") > 0);
            ntrain++;
        } else if (strstr(line, "\"split\":\"dev\"")) {
            ndev++;
        } else if (strstr(line, "\"split\":\"test\"")) {
            test_acc = json_num(line, "accuracy");
        }
    }
    fclose(f);
    print_message("loss %.3f -> %.3f, test accuracy %.3f, majority %.3f\n", first_loss, last_loss,
                  test_acc, majority);
    assert_int_equal(ntrain, 8);
    assert_int_equal(ndev, 2);
    assert_true(last_loss < first_loss - 0.1);
    assert_true(test_acc > majority + 0.03);

    // eval --json reproduces the test figure from final.h5.
    snprintf(cmd, sizeof(cmd), "%s eval --ckpt run/final.h5 --data lo.h5 --split test --json", bin);
    rc = run(cmd, &out);
    if (rc) fail_msg("eval failed:\n%s", out);
    char *last = strrchr(out, '{');
    assert_non_null(last);
    assert_non_null(strstr(last, "\"split\":\"test\""));
    assert_true(fabs(json_num(last, "accuracy") - test_acc) < 1e-9);
    free(out);
}

static void expect_fail(const char *args, const char *needle);

// Dual encoder end to end: pairs whose label says whether the two documents are identical (the
// [x0, x1, x0*x1, x0-x1] head input makes that easy to learn).
static void test_train_dual(void **state) {
    (void)state;
    enum { NT = 1200, ND = 200, L = 32, V = 20 };
    char path[512], err[SBMT_ERR_LEN];
    tpath(path, sizeof(path), "pairs.h5");
    ds_writer w;
    assert_int_equal(ds_writer_create(&w, path, "retrieval", V, 2, L, 1, NULL, err), 0);
    uint32_t st = 7;
    for (int split = 0; split < 3; split++) {
        int rows = split == 0 ? NT : ND;
        int32_t *a = xcalloc((size_t)rows * L, sizeof(int32_t)), *b = xcalloc((size_t)rows * L, 4);
        int32_t *lab = xmalloc(sizeof(int32_t) * rows);
        for (int r = 0; r < rows; r++) {
            int len = 8 + (int)((st = st * 1664525u + 1013904223u) >> 28);
            lab[r] = (int)((st = st * 1664525u + 1013904223u) >> 31);
            for (int t = 0; t < len; t++) {
                a[r * L + t] = 1 + (int)((st = st * 1664525u + 1013904223u) % (V - 2));
                b[r * L + t] = lab[r] ? a[r * L + t]
                                      : 1 + (int)((st = st * 1664525u + 1013904223u) % (V - 2));
            }
        }
        assert_int_equal(ds_writer_split(&w, split, rows, a, b, lab, err), 0);
        free(a), free(b), free(lab);
    }
    assert_int_equal(ds_writer_close(&w, err), 0);
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof(cmd),
             "%s train --data pairs.h5 --out dual --threads 2 --set data.seq_len=32 "
             "--set model.d_model=32 --set model.d_ff=64 --set model.head_dim=16 "
             "--set model.clusters=8 --set train.batch_size=16 --set train.steps=300 "
             "--set train.warmup=30 --set train.lr=3e-3 --set train.eval_every=0 "
             "--set train.log_every=100 --set train.seed=3",
             bin);
    int rc = run(cmd, &out);
    if (rc) fail_msg("dual train failed (%d):\n%s", rc, out);
    free(out);
    snprintf(cmd, sizeof(cmd), "%s eval --ckpt dual/final.h5 --data pairs.h5 --split test --json",
             bin);
    rc = run(cmd, &out);
    if (rc) fail_msg("dual eval failed:\n%s", out);
    char *last = strrchr(out, '{');
    double acc = json_num(last, "accuracy");
    print_message("dual encoder test accuracy %.3f (chance 0.5)\n", acc);
    assert_true(acc > 0.8);
    assert_non_null(strstr(last, "\"density\""));
    free(out);
    // A dual checkpoint on single-sequence data is refused.
    snprintf(cmd, sizeof(cmd),
             "%s data listops --out lo32.h5 --train 20 --dev 5 --test 5 --min-len 5 --max-len 30 "
             "--seq-len 32 --quiet",
             bin);
    assert_int_equal(run(cmd, NULL), 0);
    expect_fail("eval --ckpt dual/final.h5 --data lo32.h5 --split test", "dual encoder");
}

static int run_in_dir(const char *data_args) {
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "%s data %s", bin, data_args);
    return run(cmd, NULL);
}

static void expect_fail(const char *args, const char *needle) {
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof(cmd), "%s %s", bin, args);
    int rc = run(cmd, &out);
    if (rc == 0 || !strstr(out, needle))
        fail_msg("'%s': exit %d, output does not mention '%s':\n%s", args, rc, needle, out);
    free(out);
}

static void test_cli_errors(void **state) {
    (void)state;
    expect_fail("frobnicate", "unknown command 'frobnicate'");
    expect_fail("train --set model.heads=x", "model.heads: 'x' is not an integer");
    expect_fail("train --set model.nope=1", "unknown key 'nope' in [model]");
    expect_fail("train --config /nonexistent.ini", "/nonexistent.ini: cannot open config");
    expect_fail("train --bogus 1", "unknown or incomplete option '--bogus'");
    expect_fail("train --data /nonexistent.h5 --set data.seq_len=64", "/nonexistent.h5");
    expect_fail("train --data lo.h5 --set data.seq_len=128", "seq_len is 64");
    expect_fail("eval --ckpt lo.h5 --data lo.h5", "lo.h5");
    expect_fail("eval --ckpt run/final.h5 --data lo.h5 --split nope", "--split 'nope'");
    expect_fail("train --data lo.h5 --set data.seq_len=64 --set train.backend=tpu",
                "train.backend: 'tpu' is not one of cpu|cuda");
    // Without CUDA in the build, without a device, or (today) without attention kernels on it:
    // refused, naming the setting, whichever applies on this machine.
    expect_fail("train --data lo.h5 --set data.seq_len=64 --set train.backend=cuda",
                "train.backend = cuda: ");
    expect_fail("eval --ckpt run/final.h5 --data lo.h5 --backend cuda", "--backend cuda: ");
    expect_fail("train --data lo.h5 --set data.seq_len=64 --set train.precision=bf16",
                "train.precision = bf16 needs train.backend = cuda");
    expect_fail("train --data lo.h5 --set data.seq_len=64 --set train.precision=fp16",
                "train.precision: 'fp16' is not one of fp32|tf32|bf16");
    expect_fail("train --data lo.h5 --set data.seq_len=64 --set dist.tp=3",
                "dist.tp = 3 does not divide model.heads = 2");
    // An empty split is an error for eval and for train, which evaluates it.
    assert_int_equal(run_in_dir("listops --out empty.h5 --train 40 --dev 0 --test 10 --min-len 10 "
                                "--max-len 60 --seq-len 64 --seed 2 --quiet"), 0);
    expect_fail("train --data empty.h5 --set data.seq_len=64 --set train.steps=2 --set train.warmup=1",
                "empty.h5: the 'dev' split has 0 rows");
    expect_fail("eval --ckpt run/final.h5 --data empty.h5 --split dev",
                "empty.h5: the 'dev' split has 0 rows");
    // A non-finite gradient (injected by a test hook; the loss is finite) stops training before
    // the optimizer step.
    {
        char cmd[4096], *out = NULL;
        snprintf(cmd, sizeof(cmd),
                 "SBMT_TEST_NAN_GRAD_STEP=2 %s train --data lo.h5 --set data.seq_len=64 --set "
                 "train.steps=4 --set train.batch_size=4 --set train.warmup=1 --out nangrad", bin);
        int rc = run(cmd, &out);
        if (rc == 0 || !strstr(out, "step 2: the gradient norm is nan"))
            fail_msg("non-finite gradient: exit %d:\n%s", rc, out);
        free(out);
    }
    expect_fail("data listops --out x.h5 --train abc", "--train 'abc'");
    expect_fail("data listops --out x.h5 --min-len 100 --max-len 50 --seq-len 64", "min_len");
    char *out = NULL;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s --version", bin);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, "sbmt "));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_learns),
        cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_train_dual),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
