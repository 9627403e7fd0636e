// import_text.c: LRA release files of ListOps, IMDb text and AAN retrieval -> sbmt datasets.
// See import_text.h for the formats and conventions.
#define _POSIX_C_SOURCE 200809L
#include "io/import_text.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "io/listops.h"
#include "kernels/common.h"

// ---------------------------------------------------------------------------------------------
// Small helpers

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static char *path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = xmalloc(la + lb + 2);
    memcpy(p, a, la);
    size_t k = la;
    if (k > 0 && p[k - 1] != '/') p[k++] = '/';
    memcpy(p + k, b, lb + 1);
    return p;
}

// Picks the directory holding `probe`: in_dir itself or in_dir/alt. Returns a malloc'd path.
static char *find_root(const char *in_dir, const char *alt, const char *probe, int probe_is_dir,
                       char *err) {
    if (!in_dir || !in_dir[0]) {
        sbmt_errf(err, "input directory is empty");
        return NULL;
    }
    if (!is_dir(in_dir)) {
        struct stat sb;
        int e = stat(in_dir, &sb) == 0 ? ENOTDIR : errno;
        sbmt_errf(err, "%s: cannot open input directory: %s", in_dir, strerror(e));
        return NULL;
    }
    const char *cands[2] = {NULL, alt};
    for (int i = 0; i < 2; i++) {
        char *root = cands[i] ? path_join(in_dir, cands[i]) : strdup(in_dir);
        CHECK(root);
        char *p = path_join(root, probe);
        int ok = probe_is_dir ? is_dir(p) : is_file(p);
        free(p);
        if (ok) return root;
        free(root);
    }
    sbmt_errf(err, "%s: no %s%s here nor in %s/ (is this the LRA release directory?)", in_dir,
              probe, probe_is_dir ? "/" : "", alt);
    return NULL;
}

static int resolve_seq_len(const lra_import_opts *o, int def, char *err) {
    int s = o && o->seq_len ? o->seq_len : def;
    if (s < 1 || s > (1 << 24))
        return sbmt_errf(err, "seq_len %d is out of range 1..%d", s, 1 << 24);
    return s;
}

static const char *const *byte_vocab(void) {
    static char store[LRA_BYTE_VOCAB][8];
    static const char *vocab[LRA_BYTE_VOCAB];
    if (!vocab[0]) {
        snprintf(store[0], sizeof store[0], "<pad>");
        for (int b = 0; b < 256; b++) {
            if (b >= 0x20 && b <= 0x7e) snprintf(store[b + 1], sizeof store[b + 1], "%c", b);
            else snprintf(store[b + 1], sizeof store[b + 1], "<0x%02X>", b);
        }
        for (int i = LRA_BYTE_VOCAB - 1; i >= 0; i--) vocab[i] = store[i];
    }
    return vocab;
}

static int write_generator(ds_writer *w, const char *what, const char *in_dir, int seq_len,
                           const char *extra, char *err) {
    size_t n = strlen(in_dir) + strlen(extra) + 256;
    char *s = xmalloc(n);
    snprintf(s, n, "sbmt data %s: LRA release files from %s, seq_len %d%s", what, in_dir, seq_len,
             extra);
    int rc = ds_writer_attr_str(w, "generator", s, err);
    free(s);
    return rc;
}

static void stats_init(lra_import_stats *st, int seq_len) {
    memset(st, 0, sizeof *st);
    st->seq_len = seq_len;
    st->seconds = sbmt_now();
}

// ---------------------------------------------------------------------------------------------
// Line parsers

int lra_byte_ids(const unsigned char *s, size_t n, int seq_len, int32_t *ids) {
    size_t m = n < (size_t)seq_len ? n : (size_t)seq_len;
    for (size_t i = 0; i < m; i++) ids[i] = (int32_t)s[i] + 1;
    for (size_t i = m; i < (size_t)seq_len; i++) ids[i] = 0;
    return n > (size_t)seq_len;
}

static int count_tabs(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\t';
    return k;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\r' || *s == '\n' || *s == '\v' || *s == '\f') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\r' || s[n - 1] == '\n')) s[--n] = '\0';
    return s;
}

int lra_listops_line(char *line, const char *file, int64_t lineno, int seq_len, int truncate,
                     int32_t *ids, int32_t *label, int64_t *ntok, char *err) {
    size_t n = strlen(line);
    if (is_blank(line, n)) return 0;
    int tabs = count_tabs(line, n);
    if (tabs != 1)
        return sbmt_errf(err, "%s:%lld: expected 2 tab-separated columns (Source, Target), found %d",
                         file, (long long)lineno, tabs + 1);
    char *tab = strchr(line, '\t');
    *tab = '\0';
    char *src = line, *tgt = trim(tab + 1);
    if (lineno == 1 && !strcmp(trim(src), "Source")) return 0;  // the header
    if (!(tgt[0] >= '0' && tgt[0] <= '9' && tgt[1] == '\0'))
        return sbmt_errf(err, "%s:%lld: label '%.40s' is not a digit 0..9", file,
                         (long long)lineno, tgt);
    *label = tgt[0] - '0';
    int64_t k = 0;
    char *save = NULL;
    for (char *t = strtok_r(src, " \t\r\n\v\f", &save); t; t = strtok_r(NULL, " \t\r\n\v\f", &save)) {
        if (!strcmp(t, "(") || !strcmp(t, ")")) continue;
        int id = 0;
        for (int s = 1; s < LISTOPS_VOCAB; s++)
            if (!strcmp(t, listops_symbols[s])) {
                id = s;
                break;
            }
        if (!id)
            return sbmt_errf(err, "%s:%lld: unknown symbol '%.40s' (token %lld; known: [MIN [MAX "
                             "[MED [SM 0-9 ] and the dropped parentheses)",
                             file, (long long)lineno, t, (long long)k + 1);
        if (k < seq_len) ids[k] = id;
        k++;
    }
    if (k == 0) return sbmt_errf(err, "%s:%lld: empty expression", file, (long long)lineno);
    if (k > seq_len && !truncate)
        return sbmt_errf(err, "%s:%lld: expression has %lld tokens, more than seq_len %d (raise "
                         "the sequence length or pass --truncate to cut it)",
                         file, (long long)lineno, (long long)k, seq_len);
    for (int64_t i = k; i < seq_len; i++) ids[i] = 0;
    *ntok = k;
    return 1;
}

int lra_retrieval_line(char *line, size_t n, const char *file, int64_t lineno, int seq_len,
                       int32_t *ids, int32_t *ids1, int32_t *label, int *ncut, int64_t *maxlen,
                       char *err) {
    if (is_blank(line, n)) return 0;
    int tabs = count_tabs(line, n);
    if (tabs != 4)
        return sbmt_errf(err, "%s:%lld: expected 5 tab-separated columns (label, id1, id2, text1, "
                         "text2), found %d",
                         file, (long long)lineno, tabs + 1);
    char *f[5];
    size_t len[5];
    char *p = line, *end = line + n;
    for (int i = 0; i < 5; i++) {
        char *t = i < 4 ? memchr(p, '\t', (size_t)(end - p)) : end;
        f[i] = p;
        len[i] = (size_t)(t - p);
        p = t + 1;
    }
    char lab[48];
    size_t ll = len[0] < sizeof lab - 1 ? len[0] : sizeof lab - 1;
    memcpy(lab, f[0], ll);
    lab[ll] = '\0';
    char *ls = trim(lab), *e = NULL;
    double v = ls[0] && len[0] < sizeof lab - 1 ? strtod(ls, &e) : -1.0;
    if (!e || *e || (v != 0.0 && v != 1.0) || memchr(f[0], '\0', len[0]))
        return sbmt_errf(err, "%s:%lld: label '%.40s' is not 0 or 1", file, (long long)lineno, ls);
    *label = v == 1.0;
    int c = lra_byte_ids((const unsigned char *)f[3], len[3], seq_len, ids);
    c += lra_byte_ids((const unsigned char *)f[4], len[4], seq_len, ids1);
    *ncut = c;
    *maxlen = (int64_t)(len[3] > len[4] ? len[3] : len[4]);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// TSV splits (ListOps, retrieval)

typedef struct {
    int retrieval;  // 0 ListOps, 1 retrieval
    int seq_len, truncate;
    int32_t *ids, *ids1, *labels;  // [LRA_IMPORT_BLOCK * seq_len] / [LRA_IMPORT_BLOCK]
} tsv_job;

// One pass over a TSV file. w == NULL: count and validate only (*rows = data rows). Otherwise
// write its rows as split `split`, which must hold exactly *rows rows (from the counting pass).
static int tsv_pass(tsv_job *j, const char *path, ds_writer *w, int split, int64_t *rows,
                    lra_import_stats *st, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sbmt_errf(err, "%s: cannot open: %s", path, strerror(errno));
    const size_t L = (size_t)j->seq_len;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int64_t lineno = 0, count = 0;
    int fill = 0, rc = -1;
    if (w && ds_writer_split_begin(w, split, *rows, err)) goto out;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)n;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        int32_t *ids = j->ids + (size_t)fill * L, *ids1 = j->ids1 ? j->ids1 + (size_t)fill * L : NULL;
        int64_t slen = 0;
        int cut = 0, r;
        if (j->retrieval) {
            r = lra_retrieval_line(line, len, path, lineno, j->seq_len, ids, ids1,
                                   &j->labels[fill], &cut, &slen, err);
        } else {
            r = lra_listops_line(line, path, lineno, j->seq_len, j->truncate, ids,
                                 &j->labels[fill], &slen, err);
            cut = slen > j->seq_len;
        }
        if (r < 0) goto out;
        if (r == 0) continue;
        count++;
        if (!w) continue;  // counting pass: every row parses into block row 0
        if (count > *rows) {
            sbmt_errf(err, "%s:%lld: file changed while being converted (more rows than counted)",
                      path, (long long)lineno);
            goto out;
        }
        st->truncated[split] += cut;
        if (slen > st->max_len) st->max_len = slen;
        if (++fill == LRA_IMPORT_BLOCK) {
            if (ds_writer_split_rows(w, fill, j->ids, j->ids1, j->labels, err)) goto out;
            fill = 0;
        }
    }
    if (ferror(f)) {
        sbmt_errf(err, "%s: read error after line %lld: %s", path, (long long)lineno,
                  strerror(errno));
        goto out;
    }
    if (!w) {
        if (count == 0) {
            sbmt_errf(err, "%s: no data rows", path);
            goto out;
        }
        *rows = count;
    } else {
        if (fill && ds_writer_split_rows(w, fill, j->ids, j->ids1, j->labels, err)) goto out;
        if (count != *rows) {
            sbmt_errf(err, "%s: file changed while being converted (%lld rows, %lld counted)", path,
                      (long long)count, (long long)*rows);
            goto out;
        }
        if (ds_writer_split_end(w, err)) goto out;
        st->rows[split] = count;
    }
    rc = 0;
out:
    free(line);
    fclose(f);
    return rc;
}

static int tsv_import(const char *task, const char *what, const char *in_dir, const char *alt,
                      const char *const files[SPLIT_COUNT], const char *out_path,
                      const lra_import_opts *o, int retrieval, int def_len, lra_import_stats *st,
                      char *err) {
    int seq_len = resolve_seq_len(o, def_len, err);
    if (seq_len < 0) return -1;
    stats_init(st, seq_len);
    char *root = find_root(in_dir, alt, files[SPLIT_TRAIN], 0, err);
    if (!root) return -1;
    tsv_job j = {retrieval, seq_len, o && o->truncate, NULL, NULL, NULL};
    j.ids = xmalloc(sizeof(int32_t) * LRA_IMPORT_BLOCK * (size_t)seq_len);
    j.ids1 = retrieval ? xmalloc(sizeof(int32_t) * LRA_IMPORT_BLOCK * (size_t)seq_len) : NULL;
    j.labels = xmalloc(sizeof(int32_t) * LRA_IMPORT_BLOCK);
    char *paths[SPLIT_COUNT] = {NULL, NULL, NULL};
    int64_t rows[SPLIT_COUNT] = {0, 0, 0};
    int rc = -1, open = 0;
    ds_writer w;
    for (int s = 0; s < SPLIT_COUNT; s++) {
        paths[s] = path_join(root, files[s]);
        if (tsv_pass(&j, paths[s], NULL, s, &rows[s], st, err)) goto out;
    }
    if (ds_writer_create(&w, out_path, task, retrieval ? LRA_BYTE_VOCAB : LISTOPS_VOCAB,
                         retrieval ? 2 : LISTOPS_CLASSES, seq_len, retrieval,
                         retrieval ? byte_vocab() : listops_symbols, err))
        goto out;
    open = 1;
    char extra[64];
    snprintf(extra, sizeof extra, "%s", !retrieval && j.truncate ? ", truncate" : "");
    if (write_generator(&w, what, root, seq_len, extra, err)) goto out;
    for (int s = 0; s < SPLIT_COUNT; s++) {
        if (tsv_pass(&j, paths[s], &w, s, &rows[s], st, err)) goto out;
        if (o && o->progress)
            fprintf(stderr, "%s: /%s: %lld rows from %s\n", out_path, split_names[s],
                    (long long)rows[s], paths[s]);
    }
    open = 0;
    rc = ds_writer_close(&w, err);
out:
    if (open) {
        w.failed = 1;  // the error may not have come from a writer call: discard the file
        ds_writer_close(&w, NULL);
    }
    for (int s = 0; s < SPLIT_COUNT; s++) free(paths[s]);
    free(j.ids);
    free(j.ids1);
    free(j.labels);
    free(root);
    st->seconds = sbmt_now() - st->seconds;
    return rc;
}

int lra_import_listops(const char *in_dir, const char *out_path, const lra_import_opts *o,
                       lra_import_stats *st, char *err) {
    static const char *const files[SPLIT_COUNT] = {"basic_train.tsv", "basic_val.tsv",
                                                   "basic_test.tsv"};
    return tsv_import("listops", "import-listops", in_dir, "listops-1000", files, out_path, o, 0,
                      LRA_LISTOPS_SEQ_LEN, st, err);
}

int lra_import_retrieval(const char *in_dir, const char *out_path, const lra_import_opts *o,
                         lra_import_stats *st, char *err) {
    static const char *const files[SPLIT_COUNT] = {
        "new_aan_pairs.train.tsv", "new_aan_pairs.eval.tsv", "new_aan_pairs.test.tsv"};
    return tsv_import("retrieval", "import-retrieval", in_dir, "tsv_data", files, out_path, o, 1,
                      LRA_RETRIEVAL_SEQ_LEN, st, err);
}

// ---------------------------------------------------------------------------------------------
// IMDb text (aclImdb directory layout)

typedef struct {
    char *path;
    int32_t label;
} review;

typedef struct {
    review *r;
    int64_t n, cap;
} review_list;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void push(review_list *l, char *path, int32_t label) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        review *nr = realloc(l->r, sizeof *nr * (size_t)l->cap);
        CHECK(nr);
        l->r = nr;
    }
    l->r[l->n].path = path;
    l->r[l->n].label = label;
    l->n++;
}

// Appends dir/*.txt (regular files, sorted by name) with `label`.
static int list_reviews(const char *dir, int32_t label, review_list *out, char *err) {
    DIR *d = opendir(dir);
    if (!d) return sbmt_errf(err, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || e->d_name[0] == '.' || strcmp(e->d_name + len - 4, ".txt")) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            char **nn = realloc(names, sizeof *nn * cap);
            CHECK(nn);
            names = nn;
        }
        names[n++] = path_join(dir, e->d_name);
    }
    int rerr = errno;
    closedir(d);
    int rc = 0;
    if (rerr) rc = sbmt_errf(err, "%s: reading the directory failed: %s", dir, strerror(rerr));
    if (!rc && n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (!rc && !is_file(names[i]))
            rc = sbmt_errf(err, "%s: not a readable regular file", names[i]);
        if (rc) free(names[i]);
        else push(out, names[i], label);
    }
    free(names);
    if (!rc && n == 0) rc = sbmt_errf(err, "%s: no *.txt review files", dir);
    return rc;
}

static void free_reviews(review_list *l) {
    for (int64_t i = 0; i < l->n; i++) free(l->r[i].path);
    free(l->r);
    memset(l, 0, sizeof *l);
}

// Reads one review into ids [seq_len]; *len is its full byte length.
static int read_review(const char *path, int seq_len, unsigned char *buf, int32_t *ids,
                       int64_t *len, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sbmt_errf(err, "%s: cannot open: %s", path, strerror(errno));
    size_t got = fread(buf, 1, (size_t)seq_len, f);
    int64_t total = (int64_t)got;
    if (got == (size_t)seq_len) {
        unsigned char tmp[4096];
        size_t k;
        while ((k = fread(tmp, 1, sizeof tmp, f)) > 0) total += (int64_t)k;
    }
    int bad = ferror(f);
    int e = errno;
    fclose(f);
    if (bad) return sbmt_errf(err, "%s: read error: %s", path, strerror(e));
    lra_byte_ids(buf, got, seq_len, ids);
    *len = total;
    return 0;
}

static int text_split(ds_writer *w, int split, const review *r, int64_t n, int seq_len,
                      unsigned char *buf, int32_t *ids, int32_t *labels, lra_import_stats *st,
                      char *err) {
    if (ds_writer_split_begin(w, split, n, err)) return -1;
    int fill = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = 0;
        if (read_review(r[i].path, seq_len, buf, ids + (size_t)fill * (size_t)seq_len, &len, err))
            return -1;
        labels[fill] = r[i].label;
        st->truncated[split] += len > seq_len;
        if (len > st->max_len) st->max_len = len;
        if (++fill == LRA_IMPORT_BLOCK || i == n - 1) {
            if (ds_writer_split_rows(w, fill, ids, NULL, labels, err)) return -1;
            fill = 0;
        }
    }
    if (ds_writer_split_end(w, err)) return -1;
    st->rows[split] = n;
    return 0;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int lra_import_text(const char *in_dir, const char *out_path, const lra_import_opts *o,
                    lra_import_stats *st, char *err) {
    int seq_len = resolve_seq_len(o, LRA_TEXT_SEQ_LEN, err);
    if (seq_len < 0) return -1;
    stats_init(st, seq_len);
    int64_t dev_n = o ? o->dev_from_train : 0;
    if (dev_n < 0) return sbmt_errf(err, "dev_from_train %lld is negative", (long long)dev_n);
    char *root = find_root(in_dir, "aclImdb", "train/pos", 1, err);
    if (!root) return -1;
    review_list train = {0}, test = {0}, dev = {0}, kept = {0};
    unsigned char *buf = NULL;
    int32_t *ids = NULL, *labels = NULL;
    int rc = -1, open = 0;
    ds_writer w;
    static const char *const sub[4] = {"train/neg", "train/pos", "test/neg", "test/pos"};
    for (int i = 0; i < 4; i++) {
        char *d = path_join(root, sub[i]);
        int bad = list_reviews(d, i & 1, i < 2 ? &train : &test, err);
        free(d);
        if (bad) goto out;
    }
    const review_list *trn = &train, *dv = &test;
    if (dev_n > 0) {
        if (dev_n >= train.n) {
            sbmt_errf(err, "%s: dev_from_train %lld leaves no training reviews (train has %lld)",
                      root, (long long)dev_n, (long long)train.n);
            goto out;
        }
        // A fixed partial Fisher-Yates shuffle picks the dev reviews; both parts keep file order.
        int64_t *idx = xmalloc(sizeof(int64_t) * (size_t)train.n);
        char *pick = xcalloc((size_t)train.n, 1);
        for (int64_t i = 0; i < train.n; i++) idx[i] = i;
        uint64_t s = 0x5EB3D1F7A11C0DEull;
        for (int64_t i = 0; i < dev_n; i++) {
            int64_t k = i + (int64_t)(splitmix64(&s) % (uint64_t)(train.n - i));
            int64_t t = idx[i];
            idx[i] = idx[k];
            idx[k] = t;
            pick[idx[i]] = 1;
        }
        // Share the path strings: `train` keeps ownership, dev/kept only borrow them.
        for (int64_t i = 0; i < train.n; i++)
            push(pick[i] ? &dev : &kept, train.r[i].path, train.r[i].label);
        free(idx);
        free(pick);
        trn = &kept;
        dv = &dev;
    }
    buf = xmalloc((size_t)seq_len);
    ids = xmalloc(sizeof(int32_t) * LRA_IMPORT_BLOCK * (size_t)seq_len);
    labels = xmalloc(sizeof(int32_t) * LRA_IMPORT_BLOCK);
    if (ds_writer_create(&w, out_path, "text", LRA_BYTE_VOCAB, 2, seq_len, 0, byte_vocab(), err))
        goto out;
    open = 1;
    char extra[96];
    if (dev_n > 0)
        snprintf(extra, sizeof extra, ", dev = %lld reviews taken out of train", (long long)dev_n);
    else
        snprintf(extra, sizeof extra, ", dev = a copy of test");
    if (write_generator(&w, "import-text", root, seq_len, extra, err)) goto out;
    const review_list *parts[SPLIT_COUNT] = {trn, dv, &test};
    for (int s = 0; s < SPLIT_COUNT; s++) {
        if (text_split(&w, s, parts[s]->r, parts[s]->n, seq_len, buf, ids, labels, st, err))
            goto out;
        if (o && o->progress)
            fprintf(stderr, "%s: /%s: %lld reviews\n", out_path, split_names[s],
                    (long long)parts[s]->n);
    }
    open = 0;
    rc = ds_writer_close(&w, err);
out:
    if (open) {
        w.failed = 1;  // the error may not have come from a writer call: discard the file
        ds_writer_close(&w, NULL);
    }
    free(dev.r);
    free(kept.r);
    free_reviews(&train);
    free_reviews(&test);
    free(buf);
    free(ids);
    free(labels);
    free(root);
    st->seconds = sbmt_now() - st->seconds;
    return rc;
}
