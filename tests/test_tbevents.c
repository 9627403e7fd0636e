// test_tbevents.c: the TensorBoard event writer: CRC-32C against published check values, the
// exact bytes of a record and of an Event, the reader's detection of damage, and the cut back of
// a resumed run's files (steps past the checkpoint and a torn tail dropped, the rest intact).
// TensorBoard's own reader is exercised by tests/test_tensorboard.sh.
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <sys/stat.h>

#include "io/tbevents.h"
#include "kernels/common.h"
#include "tests/testdir.h"

static int setup(void **state) { return testdir_make("tbevents"); }
static int teardown(void **state) { return testdir_remove(); }

static void test_crc32c(void **state) {
    // RFC 3720 B.4 and the common "123456789" check value.
    assert_int_equal(tb_crc32c("123456789", 9), 0xE3069283u);
    uint8_t zeros[32] = {0}, ones[32];
    memset(ones, 0xFF, sizeof(ones));
    assert_int_equal(tb_crc32c(zeros, 32), 0x8A9136AAu);
    assert_int_equal(tb_crc32c(ones, 32), 0x62A8AB43u);
    uint8_t inc[32];
    for (int i = 0; i < 32; i++) inc[i] = (uint8_t)i;
    assert_int_equal(tb_crc32c(inc, 32), 0x46DD794Eu);
    assert_int_equal(tb_crc32c("", 0), 0u);
    uint32_t c = tb_crc32c("123456789", 9);
    assert_int_equal(tb_masked_crc32c("123456789", 9), ((c >> 15) | (c << 17)) + 0xA282EAD8u);
}

// The single events file in run_dir/tb (its path into out); fails the test unless exactly one.
static void only_file(const char *run_dir, char *out, size_t n) {
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/tb", run_dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "events.out.tfevents.", 20)) {
            snprintf(out, n, "%s/%s", dir, e->d_name);
            count++;
        }
    closedir(d);
    assert_int_equal(count, 1);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

typedef struct {
    int64_t steps[64];
    size_t lens[64];
    int n;
} walk;

static int collect(const uint8_t *data, size_t len, int64_t step, void *ctx) {
    walk *w = ctx;
    if (w->n < 64) {
        w->steps[w->n] = step;
        w->lens[w->n] = len;
    }
    w->n++;
    return 0;
}

static void write_steps(tb_writer *w, int from, int to) {
    char err[SBMT_ERR_LEN];
    for (int s = from; s <= to; s++) {
        tb_scalar v[2] = {{"train/loss", 1.0 / s}, {"density/layer0/head1", 0.25}};
        assert_int_equal(tb_write(w, s, v, 2, err), 0);
    }
}

static void test_record_bytes(void **state) {
    char run[512], err[SBMT_ERR_LEN], path[1024];
    tpath(run, sizeof(run), "bytes");
    assert_int_equal(mkdir(run, 0755), 0);
    tb_writer w;
    assert_int_equal(tb_open(&w, run, 0, 0, err), 0);
    tb_scalar v = {"a/b", 0.5};
    assert_int_equal(tb_write(&w, 300, &v, 1, err), 0);
    tb_close(&w);
    only_file(run, path, sizeof(path));
    size_t n;
    uint8_t *b = slurp(path, &n);
    // Record 1: file_version. Event = 09 <8 bytes wall time> 1a 0d "brain.Event:2" (24 bytes).
    uint64_t len1 = 0;
    for (int i = 0; i < 8; i++) len1 |= (uint64_t)b[i] << (8 * i);
    assert_int_equal(len1, 24);
    assert_int_equal(b[12], 0x09);
    assert_int_equal(b[21], 0x1a);
    assert_int_equal(b[22], 13);
    assert_memory_equal(b + 23, "brain.Event:2", 13);
    uint32_t hc = tb_masked_crc32c(b, 8);
    assert_memory_equal(b + 8, &hc, 4);  // little-endian host
    uint32_t dc = tb_masked_crc32c(b + 12, 24);
    assert_memory_equal(b + 36, &dc, 4);
    // Record 2: 09 <wall> 10 ac 02 (step 300 as a varint) 2a 0c | 0a 0a | 0a 03 "a/b" 15 <0.5f>
    const uint8_t *e = b + 40 + 12;
    uint64_t len2 = 0;
    for (int i = 0; i < 8; i++) len2 |= (uint64_t)b[40 + i] << (8 * i);
    const uint8_t want[] = {0x10, 0xac, 0x02, 0x2a, 0x0c, 0x0a, 0x0a, 0x0a, 0x03,
                            'a',  '/',  'b',  0x15, 0x00, 0x00, 0x00, 0x3f};
    assert_int_equal(len2, 9 + sizeof(want));
    assert_int_equal(e[0], 0x09);
    assert_memory_equal(e + 9, want, sizeof(want));
    assert_int_equal(n, 40 + 12 + len2 + 4);
    double wall;
    memcpy(&wall, e + 1, 8);
    assert_true(wall > 1.7e9 && wall < 4e9);  // seconds since 1970, now
    free(b);
}

static void test_reader_detects_damage(void **state) {
    char run[512], err[SBMT_ERR_LEN], path[1024];
    tpath(run, sizeof(run), "damage");
    assert_int_equal(mkdir(run, 0755), 0);
    tb_writer w;
    assert_int_equal(tb_open(&w, run, 0, 0, err), 0);
    write_steps(&w, 1, 5);
    tb_close(&w);
    only_file(run, path, sizeof(path));
    size_t n;
    uint8_t *good = slurp(path, &n);
    walk wk = {0};
    int torn = -1;
    assert_int_equal(tb_read_records(path, collect, &wk, &torn, err), 6);
    assert_int_equal(torn, 0);
    for (int i = 0; i < 6; i++) assert_int_equal(wk.steps[i], i);
    size_t rec = 12 + wk.lens[1] + 4, first = 12 + wk.lens[0] + 4;
    // Every byte of the third record flipped in turn: the walk stops after two good records.
    for (size_t off = first + 2 * rec; off < first + 3 * rec; off++) {
        uint8_t *bad = malloc(n);
        memcpy(bad, good, n);
        bad[off] ^= 0x10;
        FILE *f = fopen(path, "wb");
        fwrite(bad, 1, n, f);
        fclose(f);
        free(bad);
        int64_t got = tb_read_records(path, NULL, NULL, &torn, err);
        assert_int_equal(torn, 1);
        // A flipped length byte can make the length check fail before anything else.
        assert_int_equal(got, 3);
    }
    // Cut anywhere inside the last record: torn, five records left.
    for (size_t cut = n - rec + 1; cut < n; cut += 7) {
        FILE *f = fopen(path, "wb");
        fwrite(good, 1, cut, f);
        fclose(f);
        assert_int_equal(tb_read_records(path, NULL, NULL, &torn, err), 5);
        assert_int_equal(torn, 1);
    }
    free(good);
    assert_int_equal(tb_read_records("/nonexistent/x", NULL, NULL, &torn, err), -1);
    assert_non_null(strstr(err, "/nonexistent/x"));
}

static void test_resume_cuts_back(void **state) {
    char run[512], err[SBMT_ERR_LEN], path[1024], again[1024];
    tpath(run, sizeof(run), "resume");
    assert_int_equal(mkdir(run, 0755), 0);
    tb_writer w;
    assert_int_equal(tb_open(&w, run, 0, 0, err), 0);
    write_steps(&w, 1, 9);
    tb_close(&w);
    only_file(run, path, sizeof(path));
    // A killed writer: half a record at the end.
    size_t n;
    uint8_t *b = slurp(path, &n);
    FILE *f = fopen(path, "ab");
    fwrite(b + 40, 1, 20, f);
    fclose(f);
    free(b);
    // Resume at step 4: steps 5..9 and the torn tail go, the same file continues.
    assert_int_equal(tb_open(&w, run, 1, 4, err), 0);
    write_steps(&w, 5, 6);
    tb_close(&w);
    only_file(run, again, sizeof(again));
    assert_string_equal(path, again);
    walk wk = {0};
    int torn;
    assert_int_equal(tb_read_records(path, collect, &wk, &torn, err), 7);
    assert_int_equal(torn, 0);
    for (int i = 0; i < 7; i++) assert_int_equal(wk.steps[i], i);
    // Resuming at a later step than any record leaves the file byte for byte as it was.
    b = slurp(path, &n);
    assert_int_equal(tb_open(&w, run, 1, 100, err), 0);
    tb_close(&w);
    size_t n2;
    uint8_t *b2 = slurp(path, &n2);
    assert_int_equal(n, n2);
    assert_memory_equal(b, b2, n);
    free(b);
    free(b2);
    // No .tmp left behind.
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_null(fopen(tmp, "rb"));
}

// Resuming a run that has no event file yet (killed before its first, or trained with
// train.tensorboard = false until now) starts one.
static void test_resume_without_files(void **state) {
    char run[512], err[SBMT_ERR_LEN], path[1024];
    tpath(run, sizeof(run), "resume_empty");
    assert_int_equal(mkdir(run, 0755), 0);
    tb_writer w;
    assert_int_equal(tb_open(&w, run, 1, 7, err), 0);
    write_steps(&w, 8, 9);
    tb_close(&w);
    only_file(run, path, sizeof(path));
    int torn;
    assert_int_equal(tb_read_records(path, NULL, NULL, &torn, err), 3);
    assert_int_equal(torn, 0);
}

static void test_open_errors(void **state) {
    char err[SBMT_ERR_LEN];
    tb_writer w;
    assert_int_equal(tb_open(&w, "/nonexistent/run", 0, 0, err), -1);
    assert_non_null(strstr(err, "/nonexistent/run/tb"));
    // A closed writer ignores writes (train.tensorboard = false shares the call sites).
    tb_scalar v = {"x", 1};
    assert_int_equal(tb_write(&w, 1, &v, 1, err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_record_bytes),
        cmocka_unit_test(test_reader_detects_damage),
        cmocka_unit_test(test_resume_cuts_back),
        cmocka_unit_test(test_resume_without_files),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
