// test_import_image.c: the LRA image-task converters (io/import_image.c, launch/import_image.c):
// CIFAR-10 binary batches and pathfinder32 PNG + metadata trees built here in the real formats,
// converted, read back with ds_open/ds_read_rows and compared exactly (gray values, labels, split
// assignment, metadata file order); malformed inputs rejected with errors that name the file and
// record/line; the CLI run once through SBMT_BIN.
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <png.h>

#include "io/dataset.h"
#include "io/import_image.h"
#include "kernels/common.h"
#include "testdir.h"

static int setup(void **state) {
    (void)state;
    return testdir_make("test_import_image");
}

static int teardown(void **state) {
    (void)state;
    return testdir_remove();
}


static int file_exists(const char *p) { return access(p, F_OK) == 0; }

static void mkdirs(const char *path) {
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static void assert_has(const char *err, const char *needle) {
    if (!strstr(err, needle)) fprintf(stderr, "expected '%s' in: %s\n", needle, err);
    assert_non_null(strstr(err, needle));
}

static void read_split(ds_file *ds, int split, int64_t n, int32_t *ids, int32_t *labels) {
    char err[SBMT_ERR_LEN];
    int64_t *rows = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) rows[i] = i;
    int rc = ds_read_rows(ds, split, rows, (int)n, ids, NULL, labels, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    free(rows);
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10

static const char *const batch_names[6] = {"data_batch_1.bin", "data_batch_2.bin",
                                           "data_batch_3.bin", "data_batch_4.bin",
                                           "data_batch_5.bin", "test_batch.bin"};

// Pixel c (0 R, 1 G, 2 B) at i of record r of file f; record 0 of file 0 holds hand-picked values.
static const int special[8][3] = {{255, 0, 0},     {0, 255, 0},   {0, 0, 255}, {0, 0, 250},
                                  {200, 200, 200}, {255, 255, 255}, {0, 0, 0},  {10, 20, 30}};
static const int special_gray[8] = {76, 150, 29, 29, 200, 255, 0, 18};  // by hand

static int cifar_px(int f, int r, int c, int i) {
    if (f == 0 && r == 0 && i < 8) return special[i][c];
    return (f * 37 + r * 11 + c * 101 + i * (3 + 2 * c)) & 255;
}
static int cifar_label(int f, int r) { return (f * 3 + r * 7) % 10; }

// Writes the six batch files with counts[f] records each into dir. bad_label_file/rec (>= 0) puts
// label 11 there; trunc_file (>= 0) drops that file's last byte; omit_file (>= 0) skips a file.
static void make_cifar(const char *dir, const int counts[6], int bad_label_file, int bad_label_rec,
                       int trunc_file, int omit_file) {
    mkdirs(dir);
    for (int f = 0; f < 6; f++) {
        if (f == omit_file) continue;
        size_t n = (size_t)counts[f] * IMG_CIFAR_RECORD;
        uint8_t *buf = malloc(n);
        for (int r = 0; r < counts[f]; r++) {
            uint8_t *rec = buf + (size_t)r * IMG_CIFAR_RECORD;
            rec[0] = (uint8_t)(f == bad_label_file && r == bad_label_rec ? 11 : cifar_label(f, r));
            for (int c = 0; c < 3; c++)
                for (int i = 0; i < IMG_SEQ_LEN; i++)
                    rec[1 + c * IMG_SEQ_LEN + i] = (uint8_t)cifar_px(f, r, c, i);
        }
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, batch_names[f]);
        write_bytes(p, buf, f == trunc_file ? n - 1 : n);
        free(buf);
    }
}

static const int cifar_counts[6] = {2, 2, 2, 2, 3, 3};  // 11 training records, 3 test

static void test_gray601(void **state) {
    (void)state;
    for (int i = 0; i < 8; i++)
        assert_int_equal(img_gray601(special[i][0], special[i][1], special[i][2]), special_gray[i]);
    for (int v = 0; v < 256; v++) assert_int_equal(img_gray601(v, v, v), v);
}

// The expected (file, record) of row `row` of a split, with 11 training records and dev 4.
static void cifar_source(int split, int row, int *f, int *r) {
    int g = split == SPLIT_TRAIN ? row : split == SPLIT_DEV ? 7 + row : -1;
    if (g < 0) {
        *f = 5;
        *r = row;
        return;
    }
    for (*f = 0; g >= cifar_counts[*f]; (*f)++) g -= cifar_counts[*f];
    *r = g;
}

static void test_cifar_roundtrip(void **state) {
    (void)state;
    char dir[512], out[512], err[SBMT_ERR_LEN];
    tpath(dir, sizeof dir, "cifar");
    tpath(out, sizeof out, "image.h5");
    make_cifar(dir, cifar_counts, -1, -1, -1, -1);
    img_import_stats st;
    int rc = img_import_cifar10(dir, out, 4, 0, &st, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(st.rows[SPLIT_TRAIN], 7);
    assert_int_equal(st.rows[SPLIT_DEV], 4);
    assert_int_equal(st.rows[SPLIT_TEST], 3);

    ds_file ds;
    rc = ds_open(&ds, out, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(ds.task, "image");
    assert_int_equal(ds.vocab_size, IMG_VOCAB);
    assert_int_equal(ds.num_classes, 10);
    assert_int_equal(ds.seq_len, 1024);
    assert_int_equal(ds.dual, 0);
    const int64_t want[3] = {7, 4, 3};
    int32_t *ids = malloc(sizeof(int32_t) * 8 * IMG_SEQ_LEN), labels[8];
    for (int s = 0; s < SPLIT_COUNT; s++) {
        assert_int_equal(ds.rows[s], want[s]);
        read_split(&ds, s, want[s], ids, labels);
        for (int row = 0; row < want[s]; row++) {
            int f, r;
            cifar_source(s, row, &f, &r);
            assert_int_equal(labels[row], cifar_label(f, r));
            for (int i = 0; i < IMG_SEQ_LEN; i++) {
                int g = img_gray601(cifar_px(f, r, 0, i), cifar_px(f, r, 1, i),
                                    cifar_px(f, r, 2, i));
                assert_int_equal(ids[(size_t)row * IMG_SEQ_LEN + i], g + 1);
            }
        }
    }
    // Hand-computed tokens of the first training image.
    read_split(&ds, SPLIT_TRAIN, 1, ids, labels);
    for (int i = 0; i < 8; i++) assert_int_equal(ids[i], special_gray[i] + 1);
    assert_int_equal(labels[0], 0);
    free(ids);
    ds_close(&ds);

    // dev 0 gives an empty dev split; dev larger than the training batches is rejected.
    char out0[512];
    tpath(out0, sizeof out0, "image_dev0.h5");
    assert_int_equal(img_import_cifar10(dir, out0, 0, 0, &st, err), 0);
    assert_int_equal(st.rows[SPLIT_TRAIN], 11);
    assert_int_equal(st.rows[SPLIT_DEV], 0);
    char out1[512];
    tpath(out1, sizeof out1, "image_bigdev.h5");
    assert_int_equal(img_import_cifar10(dir, out1, IMG_CIFAR_DEFAULT_DEV, 0, &st, err), -1);
    assert_has(err, "5000");
    assert_has(err, "11 records");
    assert_false(file_exists(out1));
}

static void test_cifar_errors(void **state) {
    (void)state;
    char dir[512], out[512], err[SBMT_ERR_LEN];
    tpath(out, sizeof out, "bad_image.h5");

    tpath(dir, sizeof dir, "cifar_trunc");
    make_cifar(dir, cifar_counts, -1, -1, 2, -1);
    assert_int_equal(img_import_cifar10(dir, out, 4, 0, NULL, err), -1);
    assert_has(err, "data_batch_3.bin");
    assert_has(err, "not a multiple of the 3073-byte record");
    assert_false(file_exists(out));

    tpath(dir, sizeof dir, "cifar_label");
    make_cifar(dir, cifar_counts, 1, 1, -1, -1);
    assert_int_equal(img_import_cifar10(dir, out, 4, 0, NULL, err), -1);
    assert_has(err, "data_batch_2.bin");
    assert_has(err, "record 1 ");
    assert_has(err, "label 11");
    assert_false(file_exists(out));

    tpath(dir, sizeof dir, "cifar_label_test");  // found while streaming the last split
    make_cifar(dir, cifar_counts, 5, 2, -1, -1);
    assert_int_equal(img_import_cifar10(dir, out, 4, 0, NULL, err), -1);
    assert_has(err, "test_batch.bin: record 2 ");
    assert_false(file_exists(out));
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    assert_false(file_exists(tmp));

    tpath(dir, sizeof dir, "cifar_missing");
    make_cifar(dir, cifar_counts, -1, -1, -1, 5);
    assert_int_equal(img_import_cifar10(dir, out, 4, 0, NULL, err), -1);
    assert_has(err, "test_batch.bin");
    assert_has(err, "missing");
    assert_false(file_exists(out));
}

// ---------------------------------------------------------------------------------------------
// Pathfinder32

enum { PNG_GRAY8, PNG_GRAY4, PNG_RGB_GRAY, PNG_PALETTE_GRAY, PNG_RGB_COLOUR, PNG_SMALL };

// Intended gray value of pixel i of sample n (as stored by the chosen PNG kind).
static int pf_px(int n, int i) { return (n * 29 + i * 3 + (i >> 5) * 7) & 255; }
static int pf_kind(int n) {
    return n == 1 ? PNG_RGB_GRAY : n == 2 ? PNG_PALETTE_GRAY : n == 3 ? PNG_GRAY4 : PNG_GRAY8;
}
static int pf_expect(int n, int i) {
    return pf_kind(n) == PNG_GRAY4 ? (pf_px(n, i) & 15) * 17 : pf_px(n, i);
}

static void write_png(const char *path, int n, int kind) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    assert_non_null(png);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng write failed for %s", path);
    png_init_io(png, fp);
    int side = kind == PNG_SMALL ? 16 : 32;
    int ctype = kind == PNG_RGB_GRAY || kind == PNG_RGB_COLOUR ? PNG_COLOR_TYPE_RGB
                : kind == PNG_PALETTE_GRAY                     ? PNG_COLOR_TYPE_PALETTE
                                                               : PNG_COLOR_TYPE_GRAY;
    int depth = kind == PNG_GRAY4 ? 4 : 8;
    png_set_IHDR(png, info, (png_uint_32)side, (png_uint_32)side, depth, ctype, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_color pal[256];
    if (kind == PNG_PALETTE_GRAY) {
        for (int k = 0; k < 256; k++) pal[k].red = pal[k].green = pal[k].blue = (png_byte)(255 - k);
        png_set_PLTE(png, info, pal, 256);
    }
    png_write_info(png, info);
    uint8_t row[32 * 3];
    for (int y = 0; y < side; y++) {
        memset(row, 0, sizeof row);
        for (int x = 0; x < side; x++) {
            int v = pf_px(n, y * side + x);
            switch (kind) {
            case PNG_RGB_GRAY: row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = (uint8_t)v; break;
            case PNG_RGB_COLOUR:
                row[3 * x] = (uint8_t)v;
                row[3 * x + 1] = (uint8_t)(v ^ (x == 5 ? 1 : 0));
                row[3 * x + 2] = (uint8_t)v;
                break;
            case PNG_PALETTE_GRAY: row[x] = (uint8_t)(255 - v); break;
            case PNG_GRAY4: row[x / 2] |= (uint8_t)((v & 15) << (x % 2 ? 0 : 4)); break;
            default: row[x] = (uint8_t)v;
            }
        }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(fp);
}

// Record j (in metadata order) shows sample (3 j) mod 10 with label 1 when j % 3 == 0.
static int pf_sample(int j) { return (3 * j) % 10; }
static int pf_label(int j) { return j % 3 == 0; }

// The metadata files in numeric order hold records 0-3, 4-6 and 7-9.
static const char *const meta_names[3] = {"1.npy", "2.npy", "10.npy"};
static const int meta_first[4] = {0, 4, 7, 10};

enum { PF_OK, PF_CORRUPT, PF_SMALL, PF_COLOUR, PF_SHORT_LINE, PF_BAD_LABEL, PF_MISSING_IMG };

// Builds root/curv_contour_length_14 with the given defect; returns the difficulty directory.
static void make_pf(const char *root, int variant, char *diff_dir, size_t n) {
    snprintf(diff_dir, n, "%s/curv_contour_length_14", root);
    char p[1200];
    snprintf(p, sizeof p, "%s/imgs/0", diff_dir);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/metadata", diff_dir);
    mkdirs(p);
    for (int s = 0; s < 10; s++) {
        snprintf(p, sizeof p, "%s/imgs/0/sample_%d.png", diff_dir, s);
        if (s == 5 && variant == PF_MISSING_IMG) continue;
        if (s == 5 && variant == PF_CORRUPT) {
            write_text(p, "this is not a PNG file at all, only garbage bytes\n");
            continue;
        }
        int kind = pf_kind(s);
        if (s == 4 && variant == PF_SMALL) kind = PNG_SMALL;
        if (s == 4 && variant == PF_COLOUR) kind = PNG_RGB_COLOUR;
        write_png(p, s, kind);
    }
    // Written in reverse so that directory order is unlikely to be the numeric order.
    for (int m = 2; m >= 0; m--) {
        char text[2048] = "";
        size_t len = 0;
        for (int j = meta_first[m]; j < meta_first[m + 1]; j++) {
            if (m == 1 && j == 5 && variant == PF_SHORT_LINE) {
                len += (size_t)snprintf(text + len, sizeof text - len, "imgs/0 sample_%d.png\n",
                                        pf_sample(j));
                continue;
            }
            const char *lab = m == 1 && j == 5 && variant == PF_BAD_LABEL ? "2"
                              : pf_label(j)                               ? "1"
                                                                          : "0";
            len += (size_t)snprintf(text + len, sizeof text - len,
                                    "imgs/0 sample_%d.png %d %s 0.25 14\n", pf_sample(j), j, lab);
            if (j == 1) len += (size_t)snprintf(text + len, sizeof text - len, "\n");  // skipped
        }
        snprintf(p, sizeof p, "%s/metadata/%s", diff_dir, meta_names[m]);
        write_text(p, text);
    }
    snprintf(p, sizeof p, "%s/metadata/README.txt", diff_dir);  // not *.npy: ignored
    write_text(p, "ignored\n");
}

static void test_png_reader(void **state) {
    (void)state;
    char dir[512], p[1024], err[SBMT_ERR_LEN];
    tpath(dir, sizeof dir, "pngs");
    mkdirs(dir);
    uint8_t px[IMG_SEQ_LEN];
    const int kinds[4] = {PNG_GRAY8, PNG_GRAY4, PNG_RGB_GRAY, PNG_PALETTE_GRAY};
    const int nums[4] = {0, 3, 1, 2};
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/k%d.png", dir, k);
        write_png(p, nums[k], kinds[k]);
        int rc = img_read_png_gray32(p, px, err);
        if (rc) fprintf(stderr, "%s\n", err);
        assert_int_equal(rc, 0);
        for (int i = 0; i < IMG_SEQ_LEN; i++) assert_int_equal(px[i], pf_expect(nums[k], i));
    }
    snprintf(p, sizeof p, "%s/small.png", dir);
    write_png(p, 0, PNG_SMALL);
    assert_int_equal(img_read_png_gray32(p, px, err), -1);
    assert_has(err, p);
    assert_has(err, "16x16, expected 32x32");
    snprintf(p, sizeof p, "%s/colour.png", dir);
    write_png(p, 0, PNG_RGB_COLOUR);
    assert_int_equal(img_read_png_gray32(p, px, err), -1);
    assert_has(err, "coloured pixel (row 0, column 5");
    // A valid PNG cut short inside its image data.
    snprintf(p, sizeof p, "%s/k0.png", dir);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 100);
    snprintf(p, sizeof p, "%s/cut.png", dir);
    write_bytes(p, buf, 60);
    assert_int_equal(img_read_png_gray32(p, px, err), -1);
    assert_has(err, "cut.png: corrupt PNG");
    snprintf(p, sizeof p, "%s/nothing.png", dir);
    assert_int_equal(img_read_png_gray32(p, px, err), -1);
    assert_has(err, "nothing.png: cannot open");
}

static void test_pathfinder_roundtrip(void **state) {
    (void)state;
    char root[512], diff[1024], out[512], err[SBMT_ERR_LEN];
    tpath(root, sizeof root, "pf_ok");
    tpath(out, sizeof out, "pf.h5");
    make_pf(root, PF_OK, diff, sizeof diff);
    assert_string_equal(img_pathfinder_dir("hard"), "curv_contour_length_14");
    assert_string_equal(img_pathfinder_dir("easy"), "curv_baseline");
    assert_string_equal(img_pathfinder_dir("medium"), "curv_contour_length_9");
    assert_null(img_pathfinder_dir("extreme"));
    img_import_stats st;
    int rc = img_import_pathfinder(root, img_pathfinder_dir("hard"), out, 0, &st, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(st.rows[SPLIT_TRAIN], 8);
    assert_int_equal(st.rows[SPLIT_DEV], 1);
    assert_int_equal(st.rows[SPLIT_TEST], 1);

    ds_file ds;
    rc = ds_open(&ds, out, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(ds.task, "pathfinder32");
    assert_int_equal(ds.vocab_size, IMG_VOCAB);
    assert_int_equal(ds.num_classes, 2);
    assert_int_equal(ds.seq_len, 1024);
    const int64_t want[3] = {8, 1, 1}, first[3] = {0, 8, 9};
    int32_t *ids = malloc(sizeof(int32_t) * 8 * IMG_SEQ_LEN), labels[8];
    for (int s = 0; s < SPLIT_COUNT; s++) {
        assert_int_equal(ds.rows[s], want[s]);
        read_split(&ds, s, want[s], ids, labels);
        for (int row = 0; row < want[s]; row++) {
            int j = (int)first[s] + row, n = pf_sample(j);
            assert_int_equal(labels[row], pf_label(j));
            for (int i = 0; i < IMG_SEQ_LEN; i++)
                assert_int_equal(ids[(size_t)row * IMG_SEQ_LEN + i], pf_expect(n, i) + 1);
        }
    }
    free(ids);
    ds_close(&ds);

    // The difficulty directory itself as the input ("." subdirectory).
    char out2[512];
    tpath(out2, sizeof out2, "pf_dot.h5");
    rc = img_import_pathfinder(diff, ".", out2, 0, &st, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(st.rows[SPLIT_TRAIN], 8);
    // A missing difficulty directory.
    assert_int_equal(img_import_pathfinder(root, "curv_baseline", out2, 0, &st, err), -1);
    assert_has(err, "curv_baseline/metadata");
}

static void pf_expect_error(const char *name, int variant, const char *const *needles, int n) {
    char root[512], diff[1024], out[512], err[SBMT_ERR_LEN];
    tpath(root, sizeof root, name);
    tpath(out, sizeof out, "pf_bad.h5");
    make_pf(root, variant, diff, sizeof diff);
    assert_int_equal(img_import_pathfinder(root, "curv_contour_length_14", out, 0, NULL, err), -1);
    for (int i = 0; i < n; i++) assert_has(err, needles[i]);
    assert_false(file_exists(out));
}

static void test_pathfinder_errors(void **state) {
    (void)state;
    // sample_5 is record 5 (in 2.npy, line 2); sample_4 is record 8 (10.npy, line 2).
    const char *corrupt[] = {"metadata/2.npy: line 2", "imgs/0/sample_5.png", "not a PNG file"};
    pf_expect_error("pf_corrupt", PF_CORRUPT, corrupt, 3);
    const char *small[] = {"metadata/10.npy: line 2", "sample_4.png", "16x16, expected 32x32"};
    pf_expect_error("pf_small", PF_SMALL, small, 3);
    const char *colour[] = {"metadata/10.npy: line 2", "sample_4.png", "coloured pixel"};
    pf_expect_error("pf_colour", PF_COLOUR, colour, 3);
    const char *shortl[] = {"metadata/2.npy: line 2", "malformed metadata line", "2 fields"};
    pf_expect_error("pf_short", PF_SHORT_LINE, shortl, 3);
    const char *badlab[] = {"metadata/2.npy: line 2", "label field '2'"};
    pf_expect_error("pf_label", PF_BAD_LABEL, badlab, 2);
    const char *missing[] = {"metadata/2.npy: line 2", "sample_5.png: cannot open"};
    pf_expect_error("pf_missing", PF_MISSING_IMG, missing, 2);
}

// ---------------------------------------------------------------------------------------------
// CLI

static int run_cli(const char *args, char *out, size_t n) {
    const char *bin = getenv("SBMT_BIN");
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, n - 1, p);
    out[len] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static void test_cli(void **state) {
    (void)state;
    const char *bin = getenv("SBMT_BIN");
    if (!bin || !bin[0] || access(bin, X_OK) != 0) skip();
    char dir[512], root[512], diff[1024], out[512], args[4096], text[8192];
    tpath(dir, sizeof dir, "cli_cifar");
    make_cifar(dir, cifar_counts, -1, -1, -1, -1);
    tpath(out, sizeof out, "cli_image.h5");
    snprintf(args, sizeof args, "data import-image --in '%s' --out '%s' --dev 4 --quiet", dir, out);
    int rc = run_cli(args, text, sizeof text);
    if (rc) fprintf(stderr, "%s\n", text);
    assert_int_equal(rc, 0);
    assert_has(text, "7/4/3 rows");
    assert_true(file_exists(out));

    // Errors: exit status non-zero, the message on stderr names the file.
    snprintf(args, sizeof args, "data import-image --in '%s/none' --out '%s.x'", dir, out);
    assert_int_not_equal(run_cli(args, text, sizeof text), 0);
    assert_has(text, "data_batch_1.bin");
    snprintf(args, sizeof args, "data import-image --in '%s' --out '%s.x' --dev -3", dir, out);
    assert_int_not_equal(run_cli(args, text, sizeof text), 0);
    assert_has(text, "--dev");

    tpath(root, sizeof root, "cli_pf");
    make_pf(root, PF_OK, diff, sizeof diff);
    tpath(out, sizeof out, "cli_pf.h5");
    snprintf(args, sizeof args, "data import-pathfinder --in '%s' --out '%s' --difficulty hard",
             root, out);
    rc = run_cli(args, text, sizeof text);
    if (rc) fprintf(stderr, "%s\n", text);
    assert_int_equal(rc, 0);
    assert_has(text, "8/1/1 rows");
    snprintf(args, sizeof args,
             "data import-pathfinder --in '%s' --out '%s.x' --difficulty extreme", root, out);
    assert_int_not_equal(run_cli(args, text, sizeof text), 0);
    assert_has(text, "extreme");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gray601),
        cmocka_unit_test(test_cifar_roundtrip),
        cmocka_unit_test(test_cifar_errors),
        cmocka_unit_test(test_png_reader),
        cmocka_unit_test(test_pathfinder_roundtrip),
        cmocka_unit_test(test_pathfinder_errors),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
