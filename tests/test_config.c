// test_config.c: INI parsing, --set overrides, rejection of bad keys/values, validation and the
// resolved-config round trip used by checkpoints.
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/config.h"
#include "kernels/common.h"

static int load(sbmt_config *c, const char *text, char *err) {
    config_defaults(c);
    return config_load_string(c, text, "t.ini", err);
}

static void test_parse_and_set(void **state) {
    (void)state;
    sbmt_config c;
    char err[SBMT_ERR_LEN] = "";
    const char *ini = "# comment\n[model]\nattention = softmax ; trailing\nd_model=32\n\n"
                      "[train]\nlr = 2.5e-4\ncycle_momentum = off\nseed = 18446744073709551615\n"
                      "[data]\npath = /tmp/x y.h5\n";
    assert_int_equal(load(&c, ini, err), 0);
    assert_string_equal(c.attention, "softmax");
    assert_int_equal(c.d_model, 32);
    assert_float_equal(c.lr, 2.5e-4f, 1e-12);
    assert_int_equal(c.cycle_momentum, 0);
    assert_true(c.seed == UINT64_MAX);
    assert_string_equal(c.path, "/tmp/x y.h5");
    assert_int_equal(c.heads, 2);  // untouched default
    assert_int_equal(config_set(&c, "model.heads=4", err), 0);
    assert_int_equal(c.heads, 4);
    assert_int_equal(config_set(&c, " train.batch_size = 7 ", err), 0);
    assert_int_equal(c.batch_size, 7);
}

static void expect_error(const char *ini, const char *needle) {
    sbmt_config c;
    char err[SBMT_ERR_LEN] = "";
    assert_int_equal(load(&c, ini, err), -1);
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void test_rejects(void **state) {
    (void)state;
    expect_error("[model]\nwidth = 3\n", "unknown key 'width' in [model]");
    expect_error("[modle]\n", "unknown section [modle]");
    expect_error("[model]\nd_model = 3x\n", "model.d_model: '3x' is not an integer");
    expect_error("[model]\nd_model = 0\n", "out of range");
    expect_error("[model]\ndropout = 1.5\n", "model.dropout");
    expect_error("[model]\nattention = dense\n", "not one of softmax|sbm");
    expect_error("[train]\nlr = nan\n", "not a finite number");
    expect_error("[train]\nseed = -1\n", "non-negative");
    expect_error("d_model = 3\n", "before any [section]");
    expect_error("[model]\njunk\n", "expected 'key = value'");
    // Line numbers count blank lines.
    expect_error("[model]\n\n\nheads = x\n", "t.ini:4");
    sbmt_config c;
    char err[SBMT_ERR_LEN];
    config_defaults(&c);
    assert_int_equal(config_set(&c, "lr=1", err), -1);
    assert_non_null(strstr(err, "section.key=value"));
    assert_int_equal(config_set(&c, "train.nope=1", err), -1);
    assert_non_null(strstr(err, "unknown key 'nope'"));
    assert_int_equal(config_load_file(&c, "/nonexistent/x.ini", err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.ini"));
}

static void test_validate(void **state) {
    (void)state;
    sbmt_config c;
    char err[SBMT_ERR_LEN];
    config_defaults(&c);
    assert_int_equal(config_validate(&c, err), 0);
    c.warmup = c.steps;
    assert_int_equal(config_validate(&c, err), -1);
    assert_non_null(strstr(err, "train.warmup"));
    config_defaults(&c);
    c.seq_len = 100;  // shorter than generated sequences
    assert_int_equal(config_validate(&c, err), -1);
    assert_non_null(strstr(err, "data.seq_len"));
    config_defaults(&c);
    strcpy(c.task, "text");  // cannot be generated
    assert_int_equal(config_validate(&c, err), -1);
    assert_non_null(strstr(err, "data.path"));
}

static void test_round_trip(void **state) {
    (void)state;
    sbmt_config a, b;
    char err[SBMT_ERR_LEN];
    config_defaults(&a);
    strcpy(a.attention, "softmax");
    a.lr = 3.3e-4f;
    a.seed = 123456789012345ULL;
    a.cycle_momentum = 0;
    strcpy(a.path, "data/x.h5");
    char *text = config_to_string(&a);
    config_defaults(&b);
    assert_int_equal(config_load_string(&b, text, "ckpt", err), 0);
    free(text);
    assert_memory_equal(&a, &b, sizeof(a));
}

static void test_shipped_configs(void **state) {
    (void)state;
    const char *src = getenv("SBMT_SOURCE_DIR");
    if (!src) skip();
    const char *names[] = {"listops.ini", "listops-small.ini"};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/configs/%s", src, names[i]);
        sbmt_config c;
        char err[SBMT_ERR_LEN] = "";
        config_defaults(&c);
        if (config_load_file(&c, path, err) || config_validate(&c, err)) fail_msg("%s", err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_set),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_shipped_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
