// test_report.c: the metrics.jsonl reader on tricky and broken lines (unknown nested keys,
// escapes, exponents, JSON-invalid NaN), its file and line errors, the compact tick labels, and
// the SVG report: one polyline per series with one point per finite record, and an old page
// left intact by a failed write.
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
#include <math.h>

#include "io/metrics_read.h"
#include "io/report.h"
#include "kernels/common.h"
#include "testdir.h"

static int parse(const char *line, metrics_record *r, char *msg, int *col) {
    return metrics_parse_line(line, strlen(line), r, col, msg);
}

static void test_parse_fields(void **state) {
    (void)state;
    metrics_record r;
    char msg[SBMT_ERR_LEN];
    int col;
    const char *line =
        "{\"split\":\"train\",\"step\":1,\"loss\":2.293516,\"accuracy\":0.000000,\"lr\":8.000001e-05,"
        "\"tokens_per_s\":114912.6,\"model_gflop_per_s\":8.487,\"elapsed_s\":0.004,\"world\":4,"
        "\"dp\":2,\"tp\":2,\"comm_fraction\":0.3487,\"comm_mb_per_step\":0.132,"
        "\"density\":[[0.0678101,0.0686646,0.5],[0.0649414,0.0681152,0.25]],"
        "\"density_mean\":0.0673828,\"edges\":[[2222,2250,1],[2128,2232,1]]}";
    assert_int_equal(parse(line, &r, msg, &col), 0);
    assert_int_equal(r.split, METRICS_TRAIN);
    assert_true(r.step == 1.0);
    assert_float_equal(r.loss, 2.293516, 1e-12);
    assert_float_equal(r.lr, 8.000001e-05, 1e-18);
    assert_float_equal(r.tokens_per_s, 114912.6, 1e-9);
    assert_int_equal(r.layers, 2);
    assert_int_equal(r.heads, 3);
    assert_float_equal(r.density[5], 0.25, 0.0);
    assert_float_equal(r.density_mean, 0.0673828, 1e-12);
    metrics_record_free(&r);

    // A dev line: no lr, tokens_per_s or density; absent means NAN.
    assert_int_equal(parse("{\"split\":\"dev\",\"step\":20,\"loss\":2.3,\"accuracy\":0.1,\"rows\":40}",
                           &r, msg, &col), 0);
    assert_int_equal(r.split, METRICS_DEV);
    assert_true(isnan(r.lr) && isnan(r.tokens_per_s) && isnan(r.density_mean));
    assert_null(r.density);
    metrics_record_free(&r);
}

static void test_parse_tricky(void **state) {
    (void)state;
    metrics_record r;
    char msg[SBMT_ERR_LEN];
    int col;
    // Unknown keys with nested values, escapes everywhere (an escaped key that spells "step"
    // is "step"), exponents, negatives, whitespace, a key repeated (the last one counts).
    const char *line =
        " \t{ \"future\" : {\"a\":[1,{\"b\":\"c\\\"}]\"},[],{}],\"n\":null,\"t\":true,\"f\":false},"
        "\"note\":\"tab\\there \\\\ \\/ \\b\\f\\n\\r \\u00e9\\u20AC \xc3\xa9\","
        "\"split\":\"te\\u0073t\",\"s\\u0074ep\":3e2,\"loss\":2.5E-3,\"lr\":-1.5e+2,"
        "\"accuracy\":-0.0,\"tokens_per_s\":1e999,\"density_mean\":1,\"density_mean\":0.5,"
        "\"big\":-12345678901234567890123,\"arr\":[[[[]]]], \"empty\":\"\" }\r";
    assert_int_equal(parse(line, &r, msg, &col), 0);
    assert_int_equal(r.split, METRICS_TEST);
    assert_true(r.step == 300.0);
    assert_float_equal(r.loss, 2.5e-3, 1e-15);
    assert_float_equal(r.lr, -150.0, 0.0);
    assert_float_equal(r.accuracy, 0.0, 0.0);
    assert_true(isinf(r.tokens_per_s) && r.tokens_per_s > 0);  // overflow: +inf, as Python's json
    assert_float_equal(r.density_mean, 0.5, 0.0);
    metrics_record_free(&r);

    // Other split names are kept as METRICS_OTHER; an empty object still needs split and step.
    assert_int_equal(parse("{\"split\":\"val\",\"step\":0}", &r, msg, &col), 0);
    assert_int_equal(r.split, METRICS_OTHER);
    // A key that is not "loss" although it starts like it.
    assert_int_equal(parse("{\"split\":\"train\",\"step\":1,\"loss\\u0000x\":\"a\"}", &r, msg, &col),
                     0);
    assert_true(isnan(r.loss));
}

static void expect_bad(const char *line, const char *needle) {
    metrics_record r;
    char msg[SBMT_ERR_LEN] = "";
    int col = 0;
    int rc = metrics_parse_line(line, strlen(line), &r, &col, msg);
    if (rc != -1) fail_msg("accepted: %s", line);
    if (!strstr(msg, needle)) fail_msg("'%s': error '%s' does not mention '%s'", line, msg, needle);
    assert_true(col >= 1 && col <= (int)strlen(line) + 1);
    assert_null(r.density);
}

static void test_parse_errors(void **state) {
    (void)state;
    const char *ok = "{\"split\":\"train\",\"step\":1";
    char buf[512];
    // NaN and infinity are not JSON, whatever the spelling.
    expect_bad("{\"split\":\"train\",\"step\":1,\"loss\":nan}", "\"loss\": expected a number");
    expect_bad("{\"split\":\"train\",\"step\":1,\"loss\":NaN}", "\"loss\": expected a number");
    expect_bad("{\"split\":\"train\",\"step\":1,\"loss\":-inf}", "expected a digit");
    expect_bad("{\"split\":\"train\",\"step\":1,\"other\":nan}", "expected a value");
    expect_bad("{\"split\":\"train\",\"step\":1,\"other\":Infinity}", "expected a value");
    expect_bad("{\"split\":\"train\",\"step\":1,\"loss\":null}", "\"loss\": expected a number");
    expect_bad("{\"split\":\"train\",\"step\":1,\"loss\":\"2.3\"}", "\"loss\": expected a number");
    // Number grammar.
    expect_bad("{\"split\":\"train\",\"step\":01}", "expected ',' or '}' after value");
    expect_bad("{\"split\":\"train\",\"step\":1.}", "after '.'");
    expect_bad("{\"split\":\"train\",\"step\":.5}", "\"step\": expected a number");
    expect_bad("{\"split\":\"train\",\"step\":+1}", "\"step\": expected a number");
    expect_bad("{\"split\":\"train\",\"step\":1e}", "exponent");
    expect_bad("{\"split\":\"train\",\"step\":0x10}", "expected ',' or '}' after value");
    expect_bad("{\"split\":\"train\",\"step\":1e999}", "\"step\": not a finite number");
    // Structure.
    expect_bad("{\"split\":\"train\",\"step\":1,}", "expected a string key");
    expect_bad("{\"split\":\"train\" \"step\":1}", "expected ',' or '}' after value");
    expect_bad("{\"split\" \"train\"}", "expected ':' after key \"split\"");
    expect_bad("{'split':'train'}", "expected a string key");
    expect_bad("[1,2]", "expected '{'");
    expect_bad("{\"split\":\"train\",\"step\":1} x", "unexpected text after the object");
    expect_bad("{\"split\":\"train\",\"step\":1}{}", "unexpected text after the object");
    expect_bad("{\"split\":\"train\",\"step\":1,\"loss\":2.2", "expected ',' or '}' after value");
    expect_bad("{\"split\":\"train\",\"step\":1,\"loss\":2.2,\"acc", "unterminated string");
    expect_bad("{\"split\":\"train\",\"x\":[1,2}", "expected ',' or ']' in an array");
    expect_bad("{\"split\":\"train\",\"x\":{\"a\" 1}}", "expected ':' after a key");
    expect_bad("{\"split\":\"train\",\"x\":tru}", "expected a value");
    expect_bad("{\"split\":\"train\"}", "no \"step\"");
    expect_bad("{\"step\":1}", "no \"split\"");
    expect_bad("{\"split\":1,\"step\":1}", "\"split\": expected a string");
    expect_bad("", "expected '{'");
    // Strings.
    expect_bad("{\"split\":\"tr\tain\",\"step\":1}", "control character 0x09");
    expect_bad("{\"split\":\"tr\\xain\",\"step\":1}", "invalid escape");
    expect_bad("{\"split\":\"tr\\u12G4\",\"step\":1}", "4 hex digits");
    // density: [layers][heads] of numbers, rectangular.
    expect_bad("{\"split\":\"train\",\"step\":1,\"density\":[[1,2],[3]]}", "layer 1 has 1 heads");
    expect_bad("{\"split\":\"train\",\"step\":1,\"density\":[1,2]}", "array of arrays");
    expect_bad("{\"split\":\"train\",\"step\":1,\"density\":[]}", "empty array");
    expect_bad("{\"split\":\"train\",\"step\":1,\"density\":[[1,null]]}", "\"density\": expected a number");
    expect_bad("{\"split\":\"train\",\"step\":1,\"density\":[[1,2]],\"x\":nan}", "expected a value");
    // Deep nesting is refused, not a stack overflow.
    char deep[400];
    int n = snprintf(deep, sizeof(deep), "%s,\"x\":", ok);
    for (int i = 0; i < 100; i++) deep[n++] = '[';
    deep[n] = '\0';
    expect_bad(deep, "nested deeper than 64");
    // A NUL byte inside a line (len covers it) is an error, not the end of the line.
    metrics_record r;
    char msg[SBMT_ERR_LEN];
    int col;
    int m = snprintf(buf, sizeof(buf), "%s}", ok);
    buf[m] = '\0';
    buf[m + 1] = 'x';
    assert_int_equal(metrics_parse_line(buf, (size_t)m + 2, &r, &col, msg), -1);
    assert_non_null(strstr(msg, "unexpected text after the object"));
    assert_int_equal(col, m + 1);
    // The column points at the offending byte.
    assert_int_equal(parse("{\"split\":\"train\",\"step\":1 x}", &r, msg, &col), -1);
    assert_int_equal(col, 27);  // the x
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

#define TRAIN(step, loss) \
    "{\"split\":\"train\",\"step\":" #step ",\"loss\":" #loss ",\"accuracy\":0.5,\"lr\":1e-3}\n"

static void expect_file_error(const char *name, const char *text, const char *needle) {
    char path[512], err[SBMT_ERR_LEN] = "", want[700];
    tpath(path, sizeof(path), name);
    if (text) write_file(path, text);
    metrics_log log;
    assert_int_equal(metrics_read_file(path, &log, err), -1);
    assert_int_equal((int)log.n, 0);
    snprintf(want, sizeof(want), "%s%s", path, needle);
    if (!strstr(err, want)) fail_msg("error '%s' does not mention '%s'", err, want);
}

static void test_read_file(void **state) {
    (void)state;
    char path[512], err[SBMT_ERR_LEN];
    tpath(path, sizeof(path), "good.jsonl");
    // Blank lines are skipped, CRLF is whitespace, the last line may lack its newline.
    write_file(path, TRAIN(1, 2.3) "\n   \n" TRAIN(2, 2.2)
                     "{\"split\":\"dev\",\"step\":2,\"loss\":2.25,\"accuracy\":0.4}\r\n"
                     "{\"split\":\"test\",\"step\":2,\"loss\":2.24,\"accuracy\":0.45}");
    metrics_log log;
    assert_int_equal(metrics_read_file(path, &log, err), 0);
    assert_int_equal((int)log.n, 4);
    assert_int_equal(log.rec[3].split, METRICS_TEST);
    assert_float_equal(log.rec[1].loss, 2.2, 1e-12);
    metrics_log_free(&log);

    expect_file_error("damaged.jsonl", TRAIN(1, 2.3) "\n" TRAIN(2, 2.2) "{\"split\":\"tr#!@ain\n",
                      ":4: unterminated string");
    expect_file_error("garbage.jsonl", TRAIN(1, 2.3) "garbage\n" TRAIN(2, 2.2),
                      ":2: expected '{'");
    expect_file_error("cut.jsonl", TRAIN(1, 2.3) TRAIN(2, 2.2) "{\"split\":\"train\",\"step\":3,\"lo",
                      ":3: unterminated string (column 30); the last line has no newline");
    expect_file_error("empty.jsonl", "", ": no metrics records");
    expect_file_error("blank.jsonl", "\n \n\n", ": no metrics records");
    expect_file_error("missing.jsonl", NULL, ": cannot open: No such file or directory");
}

static void expect_label(double v, double step, const char *want) {
    char buf[32];
    report_tick_label(v, step, buf, sizeof(buf));
    if (strcmp(buf, want)) fail_msg("label of %g (step %g): '%s', expected '%s'", v, step, buf, want);
}

static void test_tick_labels(void **state) {
    (void)state;
    expect_label(0.0, 0.1, "0");
    expect_label(1e-17, 0.1, "0");  // rounding residue of k * step
    expect_label(0.5, 0.1, "0.5");
    expect_label(2.2, 0.02, "2.2");
    expect_label(2.24, 0.02, "2.24");
    expect_label(0.05, 0.05, "0.05");
    expect_label(1e-3, 0.0, "1e-3");
    expect_label(2.5e-4, 0.0, "2.5e-4");
    expect_label(2e-9, 0.0, "2e-9");
    expect_label(0.004, 0.002, "4e-3");
    expect_label(2000, 500, "2k");
    expect_label(1500, 500, "1.5k");
    expect_label(100000, 20000, "100k");
    expect_label(95000, 5000, "95k");
    expect_label(1e6, 0.0, "1M");
    expect_label(-20, 10, "-20");
    expect_label(60, 10, "60");
    expect_label(0.1, 0.0, "0.1");
    expect_label(10, 0.0, "10");
}

// Number of "x,y" pairs in the points of the polyline of series name in svg (-1: none; -2: two).
static int count_points(const char *svg, const char *name) {
    char key[128];
    snprintf(key, sizeof(key), "data-series=\"%s\" fill", name);
    const char *p = strstr(svg, key);
    if (!p) return -1;
    if (strstr(p + 1, key)) return -2;
    p = strstr(p, "points=\"");
    assert_non_null(p);
    p += 8;
    int n = 0, in = 0;
    for (; *p != '"'; p++) {
        if (*p != ' ' && !in) n++;
        in = *p != ' ';
        if (*p != ' ') assert_true(strchr("0123456789.,-", *p) != NULL);
    }
    return n;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = xmalloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static int tmp_files_left(void) {
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp")) n++;
    closedir(d);
    return n;
}

static void test_svg(void **state) {
    (void)state;
    char mpath[512], svg[512], err[SBMT_ERR_LEN];
    tpath(mpath, sizeof(mpath), "run.jsonl");
    tpath(svg, sizeof(svg), "page.svg");
    // tokens_per_s of step 2 overflowed (1e999 = +inf): left out of its line, and only there.
    write_file(mpath,
               "{\"split\":\"train\",\"step\":1,\"loss\":2.3,\"accuracy\":0.1,\"lr\":1e-4,"
               "\"tokens_per_s\":1000,\"density\":[[0.1,0.2]],\"density_mean\":0.15}\n"
               "{\"split\":\"train\",\"step\":2,\"loss\":2.2,\"accuracy\":0.2,\"lr\":2e-4,"
               "\"tokens_per_s\":1e999,\"density\":[[0.1,0.3]],\"density_mean\":0.2}\n"
               "{\"split\":\"train\",\"step\":3,\"loss\":2.1,\"accuracy\":0.3,\"lr\":1e-4,"
               "\"tokens_per_s\":1100,\"density\":[[0.05,0.3]],\"density_mean\":0.175}\n"
               "{\"split\":\"dev\",\"step\":3,\"loss\":2.15,\"accuracy\":0.25,\"density\":[[0.1,0.1]]}\n"
               "{\"split\":\"test\",\"step\":3,\"loss\":2.16,\"accuracy\":0.24}\n");
    report_summary sum;
    assert_int_equal(report_svg_write_summary(mpath, svg, &sum, err), 0);
    assert_int_equal((int)sum.records, 5);
    char *s = slurp(svg);
    assert_int_equal(count_points(s, "train/loss"), 3);
    assert_int_equal(count_points(s, "dev/loss"), 1);
    assert_int_equal(count_points(s, "test/loss"), 1);
    assert_int_equal(count_points(s, "train/accuracy"), 3);
    assert_int_equal(count_points(s, "test/accuracy"), 1);
    assert_int_equal(count_points(s, "train/lr"), 3);
    assert_int_equal(count_points(s, "train/tokens_per_s"), 2);
    assert_int_equal(count_points(s, "density/mean"), 3);
    assert_int_equal(count_points(s, "density/layer0/head0"), 3);  // train lines only
    assert_int_equal(count_points(s, "density/layer0/head1"), 3);
    assert_int_equal(count_points(s, "density/layer1/head0"), -1);
    assert_int_equal(sum.series, 11);
    assert_non_null(strstr(s, "data-panel=\"density\""));
    free(s);
    assert_int_equal(tmp_files_left(), 0);

    // A failed write (a damaged metrics file, an output directory that does not exist) leaves
    // the old page as it was and no temporary file.
    char *before = slurp(svg);
    write_file(mpath, TRAIN(1, 2.3) "{\"split\":\"train\",\"step\":2,\"loss\":2.2,,}\n");
    assert_int_equal(report_svg_write(mpath, svg, err), -1);
    assert_non_null(strstr(err, "run.jsonl:2: expected a string key"));
    char *after = slurp(svg);
    assert_string_equal(before, after);
    free(after);
    write_file(mpath, TRAIN(1, 2.3));
    char nodir[600];
    snprintf(nodir, sizeof(nodir), "%s/no/such/dir/page.svg", tmpdir);
    assert_int_equal(report_svg_write(mpath, nodir, err), -1);
    assert_non_null(strstr(err, "no/such/dir/page.svg"));
    // The output is a directory: the rename fails and the temporary file goes.
    assert_int_equal(report_svg_write(mpath, tmpdir, err), -1);
    assert_non_null(strstr(err, "cannot rename"));
    assert_int_equal(tmp_files_left(), 0);
    after = slurp(svg);
    assert_string_equal(before, after);
    free(after);
    free(before);

    // A softmax run: no density panel, no density series.
    write_file(mpath, TRAIN(1, 2.3) TRAIN(2, 2.2));
    assert_int_equal(report_svg_write_summary(mpath, svg, &sum, err), 0);
    s = slurp(svg);
    assert_null(strstr(s, "density"));
    assert_int_equal(count_points(s, "train/loss"), 2);
    assert_int_equal(count_points(s, "dev/loss"), -1);
    assert_int_equal(sum.series, 3);
    assert_int_equal(sum.panels, 3);
    free(s);
}

static int setup(void **state) {
    (void)state;
    return testdir_make("report");
}

static int teardown(void **state) {
    (void)state;
    return testdir_remove();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_fields), cmocka_unit_test(test_parse_tricky),
        cmocka_unit_test(test_parse_errors), cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_tick_labels),  cmocka_unit_test(test_svg),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
