// import_image.c: LRA "image" (CIFAR-10 binary) and "pathfinder32" (PNG + metadata) converters to
// sbmt datasets; see import_image.h for the formats, the token ids and the split rules.
//
// Both converters first validate and count their inputs (file sizes for CIFAR, every metadata
// line for pathfinder), then stream the rows through a small block buffer into
// ds_writer_split_begin/_rows/_end, one split after the other. Any error discards the output
// (ds_writer_close removes the temporary file), so a failed import never leaves a dataset behind.
#define _POSIX_C_SOURCE 200809L
#include "io/import_image.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <png.h>

#include "kernels/common.h"

#define IMG_BLOCK 512  // rows per ds_writer_split_rows call (2 MiB of int32 ids)

int img_gray601(int r, int g, int b) {
    int v = (299 * r + 587 * g + 114 * b + 500) / 1000;
    return v < 0 ? 0 : v > 255 ? 255 : v;
}

// "a/b" in a fresh allocation (b may be NULL or "" to copy a; "." is dropped).
static char *path_join(const char *a, const char *b) {
    int skip = !b || !b[0] || !strcmp(b, ".");
    size_t la = strlen(a), lb = skip ? 0 : strlen(b);
    char *p = xmalloc(la + lb + 2);
    memcpy(p, a, la);
    if (skip) {
        p[la] = '\0';
    } else {
        p[la] = '/';
        memcpy(p + la + 1, b, lb + 1);
    }
    return p;
}

// ---------------------------------------------------------------------------------------------
// PNG decoding (libpng; its errors longjmp back to decode_png with the message)

typedef struct {
    jmp_buf jb;
    char msg[256];
} png_ctx;

static void png_error_fn(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown libpng error");
    longjmp(c->jb, 1);
}

static void png_warning_fn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

// Decodes after the 8 signature bytes. Variables assigned after setjmp are not read after a
// longjmp (that path uses only the unchanged arguments).
static int decode_png(png_structp png, png_infop info, FILE *fp, png_ctx *ctx, const char *path,
                      uint8_t *px, char *err) {
    static const int S = IMG_SIDE;
    if (setjmp(ctx->jb)) return sbmt_errf(err, "%s: corrupt PNG: %s", path, ctx->msg);
    png_init_io(png, fp);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    if (w != (png_uint_32)S || h != (png_uint_32)S)
        return sbmt_errf(err, "%s: image is %lux%lu, expected %dx%d", path, (unsigned long)w,
                         (unsigned long)h, S, S);
    if (depth > 8)
        return sbmt_errf(err, "%s: %d-bit samples, expected 8-bit grayscale", path, depth);
    if (ctype & PNG_COLOR_MASK_ALPHA)
        return sbmt_errf(err, "%s: has an alpha channel, expected 8-bit grayscale", path);
    int channels = ctype == PNG_COLOR_TYPE_RGB ? 3 : 1;
    png_colorp pal = NULL;
    int npal = 0;
    if (ctype == PNG_COLOR_TYPE_PALETTE) {
        if (!(png_get_PLTE(png, info, &pal, &npal) & PNG_INFO_PLTE) || !pal)
            return sbmt_errf(err, "%s: palette image without a palette", path);
        if (depth < 8) png_set_packing(png);  // one palette index per byte
    } else if (ctype == PNG_COLOR_TYPE_GRAY) {
        if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);  // scaled to 0..255
    } else if (ctype != PNG_COLOR_TYPE_RGB) {
        return sbmt_errf(err, "%s: unsupported PNG colour type %d", path, ctype);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)(S * channels))
        return sbmt_errf(err, "%s: unexpected decoded row size %zu bytes (colour type %d, %d-bit)",
                         path, (size_t)png_get_rowbytes(png, info), ctype, depth);
    uint8_t buf[IMG_SEQ_LEN * 3];
    png_bytep rows[IMG_SIDE];
    for (int y = 0; y < S; y++) rows[y] = buf + (size_t)y * (size_t)(S * channels);
    png_read_image(png, rows);
    png_read_end(png, NULL);
    for (int i = 0; i < IMG_SEQ_LEN; i++) {
        int y = i / S, x = i % S;
        if (ctype == PNG_COLOR_TYPE_RGB) {
            const uint8_t *p = buf + 3 * i;
            if (p[0] != p[1] || p[1] != p[2])
                return sbmt_errf(err,
                                 "%s: coloured pixel (row %d, column %d: RGB %d,%d,%d), expected a "
                                 "grayscale image",
                                 path, y, x, p[0], p[1], p[2]);
            px[i] = p[0];
        } else if (ctype == PNG_COLOR_TYPE_PALETTE) {
            int k = buf[i];
            if (k >= npal)
                return sbmt_errf(err, "%s: pixel (row %d, column %d) uses palette index %d of %d",
                                 path, y, x, k, npal);
            if (pal[k].red != pal[k].green || pal[k].green != pal[k].blue)
                return sbmt_errf(err,
                                 "%s: coloured palette entry %d (RGB %d,%d,%d) used at row %d, "
                                 "column %d, expected a grayscale image",
                                 path, k, pal[k].red, pal[k].green, pal[k].blue, y, x);
            px[i] = pal[k].red;
        } else {
            px[i] = buf[i];
        }
    }
    return 0;
}

int img_read_png_gray32(const char *path, uint8_t *px, char *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return sbmt_errf(err, "%s: cannot open: %s", path, strerror(errno));
    unsigned char sig[8];
    size_t n = fread(sig, 1, sizeof sig, fp);
    if (n < sizeof sig || png_sig_cmp(sig, 0, sizeof sig)) {
        fclose(fp);
        return sbmt_errf(err, "%s: not a PNG file (%s)", path,
                         n < sizeof sig ? "shorter than the 8-byte signature" : "bad signature");
    }
    png_ctx ctx;
    ctx.msg[0] = '\0';
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_error_fn, png_warning_fn);
    CHECK(png != NULL);
    png_infop info = png_create_info_struct(png);
    CHECK(info != NULL);
    int rc = decode_png(png, info, fp, &ctx, path, px, err);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Row sink: block buffer in front of the streaming writer, splits written in order

typedef struct {
    ds_writer w;
    int64_t counts[SPLIT_COUNT];
    int cur;  // split being written, -1 before the first
    int fill;
    int32_t *ids, *labels;
    img_import_stats *st;
} row_sink;

static int sink_open(row_sink *s, const char *out_path, const char *task, int classes,
                     const int64_t counts[SPLIT_COUNT], const char *provenance,
                     img_import_stats *st, char *err) {
    memset(s, 0, sizeof *s);
    s->cur = -1;
    s->st = st;
    for (int i = 0; i < SPLIT_COUNT; i++) s->counts[i] = counts[i];
    // /vocab: "<pad>", then the intensities "0".."255".
    char names[IMG_VOCAB][8];
    const char *vocab[IMG_VOCAB];
    for (int i = 0; i < IMG_VOCAB; i++) {
        if (i == 0) snprintf(names[i], sizeof names[i], "<pad>");
        else snprintf(names[i], sizeof names[i], "%d", i - 1);
        vocab[i] = names[i];
    }
    if (ds_writer_create(&s->w, out_path, task, IMG_VOCAB, classes, IMG_SEQ_LEN, 0, vocab, err))
        return -1;
    if (ds_writer_attr_str(&s->w, "generator", provenance, err)) {
        ds_writer_close(&s->w, NULL);
        return -1;
    }
    s->ids = xmalloc(sizeof(int32_t) * IMG_SEQ_LEN * IMG_BLOCK);
    s->labels = xmalloc(sizeof(int32_t) * IMG_BLOCK);
    return 0;
}

static int sink_flush(row_sink *s, char *err) {
    if (s->fill == 0) return 0;
    if (ds_writer_split_rows(&s->w, s->fill, s->ids, NULL, s->labels, err)) return -1;
    if (s->st) s->st->rows[s->cur] += s->fill;
    s->fill = 0;
    return 0;
}

// Ends the current split and every split before `target` (empty ones are still created), then
// begins `target` (none when target == SPLIT_COUNT).
static int sink_advance(row_sink *s, int target, char *err) {
    while (s->cur < target) {
        if (s->cur >= 0 && (sink_flush(s, err) || ds_writer_split_end(&s->w, err))) return -1;
        s->cur++;
        if (s->cur < SPLIT_COUNT && ds_writer_split_begin(&s->w, s->cur, s->counts[s->cur], err))
            return -1;
    }
    return 0;
}

static int sink_push(row_sink *s, int split, const uint8_t *gray, int label, char *err) {
    if (split != s->cur && sink_advance(s, split, err)) return -1;
    int32_t *row = s->ids + (size_t)s->fill * IMG_SEQ_LEN;
    for (int i = 0; i < IMG_SEQ_LEN; i++) row[i] = (int32_t)gray[i] + 1;
    s->labels[s->fill++] = label;
    return s->fill == IMG_BLOCK ? sink_flush(s, err) : 0;
}

// Finishes (rc == 0) or discards (rc != 0) the output; returns 0 only on a complete file.
static int sink_close(row_sink *s, int rc, char *err) {
    if (rc == 0) rc = sink_advance(s, SPLIT_COUNT, err);
    if (rc == 0) rc = ds_writer_close(&s->w, err);
    else ds_writer_close(&s->w, NULL);  // keeps the first error's message
    free(s->ids);
    free(s->labels);
    s->ids = s->labels = NULL;
    return rc ? -1 : 0;
}

// A progress line every tenth of the rows, for inputs large enough to take a while.
static void report(int progress, const char *what, int64_t done, int64_t total, double t0) {
    if (progress && total >= 10000)
        fprintf(stderr, "%s: %lld/%lld rows (%.1f s)\n", what, (long long)done, (long long)total,
                sbmt_now() - t0);
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10 (binary version)

static const char *const cifar_files[6] = {"data_batch_1.bin", "data_batch_2.bin",
                                           "data_batch_3.bin", "data_batch_4.bin",
                                           "data_batch_5.bin", "test_batch.bin"};

int img_import_cifar10(const char *in_dir, const char *out_path, int64_t dev, int progress,
                       img_import_stats *st, char *err) {
    double t0 = sbmt_now();
    if (st) memset(st, 0, sizeof *st);
    if (!in_dir || !in_dir[0]) return sbmt_errf(err, "image: input directory is empty");
    if (dev < 0) return sbmt_errf(err, "image: negative dev size %lld", (long long)dev);
    int64_t nrec[6], ntrain = 0;
    for (int f = 0; f < 6; f++) {
        char *p = path_join(in_dir, cifar_files[f]);
        struct stat sb;
        int rc = 0;
        if (stat(p, &sb) != 0)
            rc = sbmt_errf(err, "%s: missing CIFAR-10 batch file: %s (expected the binary version: "
                                "data_batch_1.bin .. data_batch_5.bin, test_batch.bin)",
                           p, strerror(errno));
        else if (!S_ISREG(sb.st_mode))
            rc = sbmt_errf(err, "%s: not a regular file", p);
        else if (sb.st_size == 0)
            rc = sbmt_errf(err, "%s: empty file (no %d-byte records)", p, IMG_CIFAR_RECORD);
        else if (sb.st_size % IMG_CIFAR_RECORD != 0)
            rc = sbmt_errf(err,
                           "%s: size %lld bytes is not a multiple of the %d-byte record (1 label "
                           "byte + 3072 pixel bytes): truncated or not the binary version",
                           p, (long long)sb.st_size, IMG_CIFAR_RECORD);
        free(p);
        if (rc) return -1;
        nrec[f] = (int64_t)(sb.st_size / IMG_CIFAR_RECORD);
        if (f < 5) ntrain += nrec[f];
    }
    if (dev > ntrain)
        return sbmt_errf(err, "%s: dev size %lld exceeds the %lld records of the training batches",
                         in_dir, (long long)dev, (long long)ntrain);
    const int64_t counts[SPLIT_COUNT] = {ntrain - dev, dev, nrec[5]};
    char *prov = xmalloc(strlen(in_dir) + 512);
    sprintf(prov,
            "sbmt data import-image: CIFAR-10 binary from %s; train = data_batch_1..5 minus the "
            "last %lld records (dev), test = test_batch.bin; gray = round(0.299 R + 0.587 G + "
            "0.114 B) (ITU-R 601); token = gray + 1",
            in_dir, (long long)dev);
    row_sink s;
    int rc = sink_open(&s, out_path, "image", IMG_CIFAR_CLASSES, counts, prov, st, err);
    free(prov);
    if (rc) return -1;

    const int64_t total = ntrain + nrec[5];
    int64_t g = 0, next_report = total / 10 > 0 ? total / 10 : 1;
    uint8_t rec[IMG_CIFAR_RECORD], gray[IMG_SEQ_LEN];
    for (int f = 0; f < 6 && rc == 0; f++) {
        char *p = path_join(in_dir, cifar_files[f]);
        FILE *fp = fopen(p, "rb");
        if (!fp) {
            rc = sbmt_errf(err, "%s: cannot open: %s", p, strerror(errno));
            free(p);
            break;
        }
        setvbuf(fp, NULL, _IOFBF, 1 << 20);
        for (int64_t r = 0; r < nrec[f] && rc == 0; r++, g++) {
            if (fread(rec, 1, sizeof rec, fp) != sizeof rec) {
                rc = sbmt_errf(err, "%s: record %lld (byte offset %lld): short read (file changed "
                                    "while reading?)",
                               p, (long long)r, (long long)r * IMG_CIFAR_RECORD);
                break;
            }
            if (rec[0] >= IMG_CIFAR_CLASSES) {
                rc = sbmt_errf(err, "%s: record %lld (byte offset %lld): label %d is not in 0..9",
                               p, (long long)r, (long long)r * IMG_CIFAR_RECORD, rec[0]);
                break;
            }
            const uint8_t *R = rec + 1, *G = R + IMG_SEQ_LEN, *B = G + IMG_SEQ_LEN;
            for (int i = 0; i < IMG_SEQ_LEN; i++) gray[i] = (uint8_t)img_gray601(R[i], G[i], B[i]);
            int split = f == 5 ? SPLIT_TEST : g < counts[SPLIT_TRAIN] ? SPLIT_TRAIN : SPLIT_DEV;
            rc = sink_push(&s, split, gray, rec[0], err);
            if (g + 1 >= next_report) {
                report(progress, "image", g + 1, total, t0);
                next_report += total / 10 > 0 ? total / 10 : 1;
            }
        }
        fclose(fp);
        free(p);
    }
    if (sink_close(&s, rc, err)) return -1;
    if (st) st->seconds = sbmt_now() - t0;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Pathfinder32

const char *img_pathfinder_dir(const char *difficulty) {
    if (!difficulty) return NULL;
    if (!strcmp(difficulty, "easy")) return "curv_baseline";
    if (!strcmp(difficulty, "medium") || !strcmp(difficulty, "intermediate"))
        return "curv_contour_length_9";
    if (!strcmp(difficulty, "hard")) return "curv_contour_length_14";
    return NULL;
}

typedef struct {
    char *name;
    int numeric;  // the stem is all digits
    unsigned long long num;
} meta_file;

static int meta_cmp(const void *a, const void *b) {
    const meta_file *x = a, *y = b;
    if (x->numeric != y->numeric) return x->numeric ? -1 : 1;
    if (x->numeric && x->num != y->num) return x->num < y->num ? -1 : 1;
    return strcmp(x->name, y->name);
}

// Lists meta_dir/*.npy sorted by numeric stem (non-numeric stems after, by name).
static int list_metadata(const char *meta_dir, meta_file **out, int *nout, char *err) {
    DIR *d = opendir(meta_dir);
    if (!d)
        return sbmt_errf(err, "%s: cannot open the metadata directory: %s", meta_dir,
                         strerror(errno));
    int n = 0, cap = 64;
    meta_file *v = xmalloc(sizeof(meta_file) * (size_t)cap);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".npy") != 0) continue;
        if (n == cap) {
            cap *= 2;
            meta_file *nv = xmalloc(sizeof(meta_file) * (size_t)cap);
            memcpy(nv, v, sizeof(meta_file) * (size_t)n);
            free(v);
            v = nv;
        }
        v[n].name = xmalloc(len + 1);
        memcpy(v[n].name, e->d_name, len + 1);
        v[n].numeric = 1;
        v[n].num = 0;
        for (size_t i = 0; i + 4 < len; i++) {
            if (!isdigit((unsigned char)e->d_name[i]) || i >= 18) {
                v[n].numeric = 0;
                break;
            }
            v[n].num = v[n].num * 10 + (unsigned)(e->d_name[i] - '0');
        }
        n++;
    }
    closedir(d);
    if (n == 0) {
        free(v);
        return sbmt_errf(err, "%s: no metadata files (*.npy)", meta_dir);
    }
    qsort(v, (size_t)n, sizeof *v, meta_cmp);
    *out = v;
    *nout = n;
    return 0;
}

// Splits a metadata line into fields; returns the number of fields (at most `max` stored).
static int split_fields(char *line, char **f, int max) {
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
        if (n < max) f[n] = t;
        n++;
    }
    return n;
}

typedef struct {
    const char *base;  // the difficulty directory
    meta_file *files;
    int nfiles;
    int64_t n, ntrain, ndev;  // records; split boundaries
    row_sink *sink;           // NULL for the counting pass
    int progress;
    double t0;
} pf_state;

// One pass over every metadata line: validates and counts (sink NULL) or converts.
static int pf_pass(pf_state *ps, char *err) {
    char *meta_dir = path_join(ps->base, "metadata");
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    int64_t g = 0, step = ps->n / 10 > 0 ? ps->n / 10 : 1, next_report = step;
    uint8_t gray[IMG_SEQ_LEN];
    char inner[SBMT_ERR_LEN];
    for (int fi = 0; fi < ps->nfiles && rc == 0; fi++) {
        char *mp = path_join(meta_dir, ps->files[fi].name);
        FILE *fp = fopen(mp, "r");
        if (!fp) {
            rc = sbmt_errf(err, "%s: cannot open: %s", mp, strerror(errno));
            free(mp);
            break;
        }
        long lineno = 0;
        ssize_t len;
        while (rc == 0 && (len = getline(&line, &cap, fp)) != -1) {
            lineno++;
            if ((size_t)len != strlen(line)) {
                rc = sbmt_errf(err, "%s: line %ld: contains a NUL byte (not a text metadata file)",
                               mp, lineno);
                break;
            }
            char *f[4];
            int nf = split_fields(line, f, 4);
            if (nf == 0) continue;  // blank line
            if (nf < 4) {
                rc = sbmt_errf(err,
                               "%s: line %ld: malformed metadata line: %d field%s, expected at "
                               "least 4 (image directory, file name, -, label)",
                               mp, lineno, nf, nf == 1 ? "" : "s");
                break;
            }
            char *end;
            errno = 0;
            long label = strtol(f[3], &end, 10);
            if (*end || errno || label < 0 || label >= IMG_PATHFINDER_CLASSES) {
                rc = sbmt_errf(err, "%s: line %ld: label field '%s' is not 0 or 1", mp, lineno,
                               f[3]);
                break;
            }
            if (ps->sink) {
                if (g >= ps->n) {
                    rc = sbmt_errf(err, "%s: line %ld: more records than counted (metadata "
                                        "changed while converting?)",
                                   mp, lineno);
                    break;
                }
                char *dir = path_join(ps->base, f[0]);
                char *img = path_join(dir, f[1]);
                free(dir);
                if (img_read_png_gray32(img, gray, inner))
                    rc = sbmt_errf(err, "%s: line %ld: %s", mp, lineno, inner);
                free(img);
                if (rc) break;
                int split = g < ps->ntrain ? SPLIT_TRAIN
                            : g < ps->ntrain + ps->ndev ? SPLIT_DEV
                                                        : SPLIT_TEST;
                rc = sink_push(ps->sink, split, gray, (int)label, err);
                if (g + 1 >= next_report) {
                    report(ps->progress, "pathfinder32", g + 1, ps->n, ps->t0);
                    next_report += step;
                }
            }
            g++;
        }
        if (rc == 0 && ferror(fp)) rc = sbmt_errf(err, "%s: read error", mp);
        fclose(fp);
        free(mp);
    }
    free(line);
    free(meta_dir);
    if (rc == 0 && !ps->sink) ps->n = g;
    return rc;
}

int img_import_pathfinder(const char *in_dir, const char *subdir, const char *out_path,
                          int progress, img_import_stats *st, char *err) {
    double t0 = sbmt_now();
    if (st) memset(st, 0, sizeof *st);
    if (!in_dir || !in_dir[0]) return sbmt_errf(err, "pathfinder32: input directory is empty");
    pf_state ps;
    memset(&ps, 0, sizeof ps);
    char *base = path_join(in_dir, subdir);
    ps.base = base;
    ps.progress = progress;
    ps.t0 = t0;
    char *meta_dir = path_join(base, "metadata");
    int rc = list_metadata(meta_dir, &ps.files, &ps.nfiles, err);
    free(meta_dir);
    if (rc == 0) rc = pf_pass(&ps, err);  // count and validate every line
    if (rc == 0 && ps.n == 0) rc = sbmt_errf(err, "%s/metadata: no records", base);
    if (rc == 0) {
        // 80/10/10 % with the boundaries rounded to the nearest row.
        ps.ntrain = (ps.n * 80 + 50) / 100;
        ps.ndev = (ps.n * 90 + 50) / 100 - ps.ntrain;
        const int64_t counts[SPLIT_COUNT] = {ps.ntrain, ps.ndev, ps.n - ps.ntrain - ps.ndev};
        char *prov = xmalloc(strlen(base) + 512);
        sprintf(prov,
                "sbmt data import-pathfinder: pathfinder32 from %s (%d metadata files in numeric "
                "order, label = field 3); split 80/10/10 %% in record order; token = pixel + 1",
                base, ps.nfiles);
        row_sink s;
        rc = sink_open(&s, out_path, "pathfinder32", IMG_PATHFINDER_CLASSES, counts, prov, st,
                       err);
        free(prov);
        if (rc == 0) {
            ps.sink = &s;
            rc = pf_pass(&ps, err);
            rc = sink_close(&s, rc, err);
        }
    }
    for (int i = 0; i < ps.nfiles; i++) free(ps.files[i].name);
    free(ps.files);
    free(base);
    if (rc) return -1;
    if (st) st->seconds = sbmt_now() - t0;
    return 0;
}
