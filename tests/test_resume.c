// test_resume.c: checkpoints through the sbmt binary: bit-exact resume (SIGKILL at random
// moments, checkpoint writes included, then --resume auto until done; SIGTERM), a checkpoint
// that cannot be written (blocked name, file-size limit) leaves the previous one intact, and a
// checkpoint of another model is refused rather than trained over, and a fresh run into a
// directory that holds an earlier run is refused (nothing touched) unless --overwrite.
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "kernels/common.h"
#include "testdir.h"

static const char *bin;

#define TRAIN_ARGS                                                                                 \
    "--data lo.h5 --threads 1 --set model.attention=sbm --set model.clusters=8 "                   \
    "--set model.d_model=32 --set model.d_ff=48 --set model.head_dim=16 --set data.seq_len=64 "    \
    "--set train.batch_size=8 --set train.steps=200 --set train.warmup=20 --set train.lr=2e-3 "     \
    "--set train.eval_every=0 --set train.log_every=5 --set train.keep_checkpoints=2 "             \
    "--set train.seed=11"

static int sh(const char *fmt, ...) SBMT_PRINTF(1, 2);
static int sh(const char *fmt, ...) {
    char cmd[8192], full[8704];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "cd %s && %s", tmpdir, cmd);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int setup(void **state) {
    (void)state;
    bin = getenv("SBMT_BIN");
    if (!bin) return -1;
    if (testdir_make("test_resume")) return -1;
    return sh("%s data listops --out lo.h5 --train 400 --dev 40 --test 40 --min-len 10 "
              "--max-len 60 --seq-len 64 --seed 2 --quiet",
              bin);
}

static int teardown(void **state) {
    (void)state;
    return testdir_remove();
}

typedef struct {
    int count;
    int ok;
    const char *other;
} cmp_ctx;

static herr_t cmp_visit(hid_t obj, const char *name, const H5O_info_t *info, void *data) {
    cmp_ctx *c = data;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t f2 = H5Fopen(c->other, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d1 = H5Dopen2(obj, name, H5P_DEFAULT), d2 = H5Dopen2(f2, name, H5P_DEFAULT);
    if (d1 < 0 || d2 < 0) {
        c->ok = 0;
    } else {
        hid_t sp = H5Dget_space(d1);
        hssize_t n = H5Sget_simple_extent_npoints(sp);
        float *a = xmalloc(sizeof(float) * (size_t)n), *b = xmalloc(sizeof(float) * (size_t)n);
        if (H5Dread(d1, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a) < 0 ||
            H5Dread(d2, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) < 0 ||
            memcmp(a, b, sizeof(float) * (size_t)n) != 0) {
            print_message("tensor %s differs\n", name);
            c->ok = 0;
        }
        c->count++;
        free(a);
        free(b);
        H5Sclose(sp);
    }
    if (d1 >= 0) H5Dclose(d1);
    if (d2 >= 0) H5Dclose(d2);
    H5Fclose(f2);
    return 0;
}

// Every tensor of a's /model and /optim equals b's, bit for bit.
static void assert_same_checkpoint(const char *a, const char *b) {
    char pa[512], pb[512];
    tpath(pa, sizeof(pa), a);
    tpath(pb, sizeof(pb), b);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(pa, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    cmp_ctx c = {0, 1, pb};
    H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, cmp_visit, &c);
    H5Fclose(f);
    print_message("%s vs %s: %d tensors compared\n", a, b, c.count);
    assert_true(c.count > 20);  // model, adam_m and adam_v trees
    assert_true(c.ok);
}

static void reference_run(void) {
    static int done;
    if (done) return;
    assert_int_equal(sh("%s train " TRAIN_ARGS " --set train.checkpoint_every=0 --out ref "
                        "> ref.log 2>&1", bin), 0);
    done = 1;
}

static void test_kill_and_resume(void **state) {
    (void)state;
    reference_run();
    srand(12345);
    int kills = 0, finished = 0, attempts = 0, in_write = 0;
    char logf[300];
    while (!finished && attempts < 100) {
        attempts++;
        tpath(logf, sizeof(logf), "kill.log");
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (chdir(tmpdir)) _exit(120);
            FILE *lf = freopen(logf, "a", stdout);
            (void)lf;
            dup2(fileno(stdout), 2);
            execl("/bin/sh", "sh", "-c",
                  "exec \"$0\" train " TRAIN_ARGS
                  " --set train.checkpoint_every=1 --out killed --resume auto",
                  bin, (char *)NULL);
            _exit(121);
        }
        // Random moment: startup, training or (often, with a checkpoint every step) a write.
        struct timespec ts = {0, (long)(5 + rand() % 250) * 1000000L};
        nanosleep(&ts, NULL);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            assert_true(WIFEXITED(st));
            assert_int_equal(WEXITSTATUS(st), 0);
            finished = 1;
            break;
        }
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            finished = 1;
            break;
        }
        kills++;
        // A temporary file left behind: the kill landed inside a checkpoint write.
        if (sh("ls killed/*.tmp > /dev/null 2>&1") == 0) in_write++;
        // After every kill the newest complete checkpoint (if any) must load.
        int rc = sh("f=$(ls killed/ckpt_*.h5 2>/dev/null | sort | tail -1); "
                    "[ -z \"$f\" ] || %s inspect \"$f\" > /dev/null", bin);
        assert_int_equal(rc, 0);
    }
    if (!finished) {
        // Let it finish undisturbed.
        assert_int_equal(sh("%s train " TRAIN_ARGS " --set train.checkpoint_every=1 --out killed "
                            "--resume auto >> kill.log 2>&1", bin), 0);
    }
    print_message("SIGKILLs: %d (%d inside a checkpoint write), runs: %d\n", kills, in_write,
                  attempts);
    assert_true(kills >= 15);
    assert_same_checkpoint("ref/final.h5", "killed/final.h5");
    // metrics.jsonl reads as one run: train steps strictly increasing, ending at the last step
    // (lines of steps past a resume point are dropped on resume).
    assert_int_equal(sh("grep '\"split\":\"train\"' killed/metrics.jsonl | "
                        "sed 's/.*\"step\":\\([0-9]*\\).*/\\1/' > steps.txt && "
                        "sort -n -u steps.txt | cmp -s - steps.txt && test $(tail -1 steps.txt) -eq 200"),
                     0);
}

static void test_sigterm_checkpoints(void **state) {
    (void)state;
    reference_run();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (chdir(tmpdir)) _exit(120);
        execl("/bin/sh", "sh", "-c",
              "exec \"$0\" train " TRAIN_ARGS " --set train.checkpoint_every=0 --out term "
              "> term.log 2>&1", bin, (char *)NULL);
        _exit(121);
    }
    // The signal goes in once training runs (its first progress line): earlier, during start-up
    // on a loaded machine, it would find the default action, not the trainer's handler.
    int st = 0, started = 0, reaped = 0;
    for (int i = 0; i < 2000 && !started && !reaped; i++) {
        reaped = waitpid(pid, &st, WNOHANG) == pid;
        started = !reaped && sh("grep -q '^step ' term.log") == 0;
        struct timespec ts = {0, 5 * 1000000L};
        if (!started && !reaped) nanosleep(&ts, NULL);
    }
    if (!reaped) {
        if (started) kill(pid, SIGTERM);
        waitpid(pid, &st, 0);
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) skip();  // finished before the signal
    assert_true(WIFEXITED(st));
    assert_int_equal(sh("grep -q 'resume with --resume auto' term.log && ls term/ckpt_*.h5 > /dev/null"), 0);
    assert_int_equal(sh("%s train " TRAIN_ARGS " --set train.checkpoint_every=0 --out term "
                        "--resume auto >> term.log 2>&1", bin), 0);
    assert_same_checkpoint("ref/final.h5", "term/final.h5");
}

static void test_failed_write_keeps_previous(void **state) {
    (void)state;
    reference_run();
    // A directory where the next checkpoint's temporary file goes: its save must fail.
    assert_int_equal(sh("mkdir -p blocked/ckpt_00000006.h5.tmp"), 0);
    int rc = sh("%s train " TRAIN_ARGS " --set train.checkpoint_every=3 --out blocked "
                "> blocked.log 2>&1", bin);
    assert_int_not_equal(rc, 0);
    assert_int_equal(sh("grep -q 'ckpt_00000006.h5.tmp' blocked.log"), 0);
    assert_int_equal(sh("%s inspect blocked/ckpt_00000003.h5 > /dev/null", bin), 0);
    assert_int_equal(sh("cp blocked/ckpt_00000003.h5 before.h5 && rmdir blocked/ckpt_00000006.h5.tmp"), 0);
    // A file-size limit (as on a full disk): the write fails with a message, nothing is lost.
    rc = sh("(ulimit -f 40; exec %s train " TRAIN_ARGS " --set train.checkpoint_every=3 "
            "--out blocked --resume auto) > full.log 2>&1", bin);
    assert_int_not_equal(rc, 0);
    assert_int_equal(sh("grep -q 'File too large' full.log"), 0);
    assert_int_equal(sh("cmp -s before.h5 blocked/ckpt_00000003.h5"), 0);
    assert_int_not_equal(sh("ls blocked/*.tmp > /dev/null 2>&1"), 0);
    // Then it resumes and ends where an uninterrupted run does.
    assert_int_equal(sh("%s train " TRAIN_ARGS " --set train.checkpoint_every=3 --out blocked "
                        "--resume auto >> blocked.log 2>&1", bin), 0);
    assert_same_checkpoint("ref/final.h5", "blocked/final.h5");
    // Only the newest keep_checkpoints = 2 remain.
    assert_int_equal(sh("test $(ls blocked/ckpt_*.h5 | wc -l) -eq 2"), 0);
}

static void test_other_model_refused(void **state) {
    (void)state;
    reference_run();
    int rc = sh("%s train " TRAIN_ARGS " --set model.layers=3 --out ref --resume auto "
                "> other.log 2>&1", bin);
    assert_int_not_equal(rc, 0);
    assert_int_equal(sh("grep -q 'model.layers differs' other.log"), 0);
    rc = sh("%s train " TRAIN_ARGS " --out fresh --resume lo.h5 > other2.log 2>&1", bin);
    assert_int_not_equal(rc, 0);
    assert_int_equal(sh("grep -q 'lo.h5' other2.log"), 0);
}

// A fresh run (no --resume) into an earlier run's directory: refused, every file as it was;
// with --overwrite the earlier run's files go (a checkpoint of a later step too, which would
// otherwise outlive the new run's pruning and win --resume auto), the user's own stay.
static void test_fresh_run_into_earlier_run(void **state) {
    (void)state;
    reference_run();
    assert_int_equal(sh("rm -rf again && cp -r ref again && cp ref/final.h5 again/ckpt_00099999.h5 "
                        "&& echo mine > again/notes.txt && (cd again && find . -type f | sort | "
                        "xargs md5sum) > before.md5"), 0);
    int rc = sh("%s train " TRAIN_ARGS " --set train.checkpoint_every=0 --out again "
                "> again.log 2>&1", bin);
    assert_int_not_equal(rc, 0);
    assert_int_equal(sh("grep -q 'again holds an earlier run (metrics.jsonl, [0-9]* checkpoint "
                        "files* (steps [0-9]*..99999), final.h5' again.log && grep -q -- '--overwrite' "
                        "again.log && grep -q -- '--resume auto' again.log"), 0);
    assert_int_equal(sh("test $(grep -c 'error' again.log) -eq 1 && ! grep -q '^step ' again.log"), 0);
    assert_int_equal(sh("(cd again && find . -type f | sort | xargs md5sum) | cmp -s - before.md5"), 0);
    rc = sh("%s train " TRAIN_ARGS " --set train.checkpoint_every=0 --out again --overwrite "
            "> again2.log 2>&1", bin);
    assert_int_equal(rc, 0);
    assert_int_equal(sh("grep -q 'removed the earlier run in again' again2.log"), 0);
    assert_int_equal(sh("test ! -e again/ckpt_00099999.h5 && test \"$(cat again/notes.txt)\" = mine"), 0);
    // The metrics are the new run's alone, and it trained what a run into an empty one does.
    assert_int_equal(sh("test $(wc -l < again/metrics.jsonl) -eq $(wc -l < ref/metrics.jsonl)"), 0);
    assert_same_checkpoint("ref/final.h5", "again/final.h5");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_and_resume),
        cmocka_unit_test(test_sigterm_checkpoints),
        cmocka_unit_test(test_failed_write_keeps_previous),
        cmocka_unit_test(test_other_model_refused),
        cmocka_unit_test(test_fresh_run_into_earlier_run),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
