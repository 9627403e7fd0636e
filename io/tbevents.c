// tbevents.c: TensorBoard event files (TFRecord + hand-encoded Event protobufs), and the cut
// back of a resumed run's files to its checkpoint step.
#define _DEFAULT_SOURCE  // gethostname
#include "io/tbevents.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernels/common.h"

#define TB_PREFIX "events.out.tfevents."
#define TB_MAX_RECORD (64u << 20)  // no record of ours comes near; a larger length is damage

// ---- CRC-32C ----

// Bitwise (no table): records are a few hundred bytes, and a table would be mutable state or
// 256 literals.
uint32_t tb_crc32c(const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

uint32_t tb_masked_crc32c(const void *data, size_t n) {
    uint32_t c = tb_crc32c(data, n);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

// ---- protobuf encoding (little-endian fixed fields, base-128 varints) ----

typedef struct {
    uint8_t *p;
    size_t len, cap;
} pbuf;

static void pb_reserve(pbuf *b, size_t more) {
    if (b->len + more <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    b->p = realloc(b->p, cap);
    CHECK(b->p);
    b->cap = cap;
}

static void pb_bytes(pbuf *b, const void *d, size_t n) {
    pb_reserve(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void pb_varint(pbuf *b, uint64_t v) {
    uint8_t t[10];
    int n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v);
    pb_bytes(b, t, (size_t)n);
}

static void pb_le(pbuf *b, uint64_t v, int nbytes) {
    uint8_t t[8];
    for (int i = 0; i < nbytes; i++) t[i] = (uint8_t)(v >> (8 * i));
    pb_bytes(b, t, (size_t)nbytes);
}

static void pb_key(pbuf *b, int field, int wire) { pb_varint(b, (uint64_t)(field << 3 | wire)); }

static void pb_string(pbuf *b, int field, const void *s, size_t n) {
    pb_key(b, field, 2);
    pb_varint(b, n);
    pb_bytes(b, s, n);
}

static uint64_t bits_f64(double x) {
    uint64_t u;
    memcpy(&u, &x, 8);
    return u;
}

static uint32_t bits_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
// Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
static void event_encode(pbuf *ev, int64_t step, const char *file_version, const tb_scalar *v,
                         int n) {
    pb_key(ev, 1, 1);
    pb_le(ev, bits_f64(wall_now()), 8);
    if (step) {
        pb_key(ev, 2, 0);
        pb_varint(ev, (uint64_t)step);
    }
    if (file_version) pb_string(ev, 3, file_version, strlen(file_version));
    if (n <= 0) return;
    pbuf sum = {0}, val = {0};
    for (int i = 0; i < n; i++) {
        val.len = 0;
        pb_string(&val, 1, v[i].tag, strlen(v[i].tag));
        pb_key(&val, 2, 5);
        pb_le(&val, bits_f32((float)v[i].value), 4);
        pb_string(&sum, 1, val.p, val.len);
    }
    pb_string(ev, 5, sum.p, sum.len);
    free(sum.p);
    free(val.p);
}

// The step of an Event payload (field 2), 0 when absent or the payload is not a protobuf.
static int64_t event_step(const uint8_t *p, size_t n) {
    size_t i = 0;
    int64_t step = 0;
    while (i < n) {
        uint64_t key = 0, v = 0;
        for (int s = 0; i < n && s < 64; s += 7) {
            key |= (uint64_t)(p[i] & 0x7F) << s;
            if (!(p[i++] & 0x80)) break;
        }
        switch (key & 7) {
        case 0:
            for (int s = 0; i < n && s < 64; s += 7) {
                v |= (uint64_t)(p[i] & 0x7F) << s;
                if (!(p[i++] & 0x80)) break;
            }
            if (key >> 3 == 2) step = (int64_t)v;
            break;
        case 1: i += 8; break;
        case 5: i += 4; break;
        case 2:
            for (int s = 0; i < n && s < 64; s += 7) {
                v |= (uint64_t)(p[i] & 0x7F) << s;
                if (!(p[i++] & 0x80)) break;
            }
            if (v > n - i) return step;
            i += v;
            break;
        default: return step;
        }
    }
    return step;
}

// ---- records ----

static int record_write(FILE *f, const uint8_t *data, size_t n) {
    uint8_t head[12];
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)((uint64_t)n >> (8 * i));
    uint32_t hc = tb_masked_crc32c(head, 8), dc = tb_masked_crc32c(data, n);
    for (int i = 0; i < 4; i++) head[8 + i] = (uint8_t)(hc >> (8 * i));
    uint8_t tail[4];
    for (int i = 0; i < 4; i++) tail[i] = (uint8_t)(dc >> (8 * i));
    if (fwrite(head, 1, 12, f) != 12 || fwrite(data, 1, n, f) != n || fwrite(tail, 1, 4, f) != 4)
        return -1;
    return 0;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int64_t tb_read_records(const char *path, tb_record_fn fn, void *ctx, int *torn, char *err) {
    *torn = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return sbmt_errf(err, "%s: cannot open: %s", path, strerror(errno));
    int64_t count = 0;
    uint8_t *data = NULL;
    size_t cap = 0;
    for (;;) {
        uint8_t head[12];
        size_t got = fread(head, 1, 12, f);
        if (got == 0) break;
        if (got < 12 || le32(head + 8) != tb_masked_crc32c(head, 8)) {
            *torn = 1;
            break;
        }
        uint64_t n = (uint64_t)le32(head) | (uint64_t)le32(head + 4) << 32;
        if (n > TB_MAX_RECORD) {
            *torn = 1;
            break;
        }
        if (n + 4 > cap) {
            cap = n + 4;
            data = realloc(data, cap);
            CHECK(data);
        }
        if (fread(data, 1, n + 4, f) != n + 4 || le32(data + n) != tb_masked_crc32c(data, n)) {
            *torn = 1;
            break;
        }
        count++;
        if (fn && fn(data, n, event_step(data, n), ctx)) break;
    }
    free(data);
    fclose(f);
    return count;
}

// ---- resume: cut files back to the checkpoint step ----

typedef struct {
    FILE *out;
    int64_t max_step;
    int64_t dropped;
    int failed;
} cut_ctx;

static int cut_record(const uint8_t *data, size_t len, int64_t step, void *ctx) {
    cut_ctx *c = ctx;
    if (step > c->max_step) {
        c->dropped++;
        return 0;
    }
    if (record_write(c->out, data, len)) c->failed = 1;
    return c->failed;
}

// Rewrites path (atomically: a .tmp then rename) without the records past max_step and
// without a torn tail; leaves it alone when it has neither.
static int cut_file(const char *path, int64_t max_step, char *err) {
    int torn;
    char tmp[4400];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    cut_ctx c = {fopen(tmp, "wb"), max_step, 0, 0};
    if (!c.out) return sbmt_errf(err, "%s: cannot write: %s", tmp, strerror(errno));
    if (tb_read_records(path, cut_record, &c, &torn, err) < 0) {
        fclose(c.out);
        remove(tmp);
        return -1;
    }
    if (fclose(c.out) || c.failed) {
        remove(tmp);
        return sbmt_errf(err, "%s: cannot write: %s", tmp, strerror(errno));
    }
    if (c.dropped == 0 && !torn) {  // intact: the original stays, byte for byte
        remove(tmp);
        return 0;
    }
    if (rename(tmp, path)) {
        remove(tmp);
        return sbmt_errf(err, "%s: cannot replace: %s", path, strerror(errno));
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int tb_open(tb_writer *w, const char *run_dir, int resume, int64_t start_step, char *err) {
    memset(w, 0, sizeof(*w));
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/tb", run_dir);
    if (mkdir(dir, 0755) && errno != EEXIST)
        return sbmt_errf(err, "%s: cannot create directory: %s", dir, strerror(errno));
    char newest[4352] = "";
    if (resume) {
        DIR *d = opendir(dir);
        if (!d) return sbmt_errf(err, "%s: cannot list: %s", dir, strerror(errno));
        char **names = NULL;
        int nn = 0, capn = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (strncmp(e->d_name, TB_PREFIX, strlen(TB_PREFIX)) || (l > 4 && !strcmp(e->d_name + l - 4, ".tmp")))
                continue;
            if (nn == capn) {
                capn = capn ? 2 * capn : 8;
                names = realloc(names, sizeof(char *) * (size_t)capn);
                CHECK(names);
            }
            CHECK((names[nn++] = strdup(e->d_name)));
        }
        closedir(d);
        if (nn) qsort(names, (size_t)nn, sizeof(char *), cmp_str);  // (names is NULL at 0)
        int rc = 0;
        for (int i = 0; i < nn; i++) {
            char p[4352];
            snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
            if (rc == 0) rc = cut_file(p, start_step, err);
            if (i == nn - 1) snprintf(newest, sizeof(newest), "%s", p);
            free(names[i]);
        }
        free(names);
        if (rc) return -1;
    }
    if (newest[0]) {
        // TensorBoard reads a run's files in name order: continuing the newest keeps the
        // resumed steps after everything that precedes them.
        snprintf(w->path, sizeof(w->path), "%s", newest);
        w->f = fopen(w->path, "ab");
        if (!w->f) return sbmt_errf(err, "%s: cannot open for appending: %s", w->path, strerror(errno));
        return 0;
    }
    char host[64] = "localhost";
    if (gethostname(host, sizeof(host) - 1) == 0) host[sizeof(host) - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p == '/') *p = '_';
    snprintf(w->path, sizeof(w->path), "%s/" TB_PREFIX "%010lld.%s.%ld.sbmt", dir,
             (long long)time(NULL), host, (long)getpid());
    w->f = fopen(w->path, "wbx");  // never over another run's file
    if (!w->f) return sbmt_errf(err, "%s: cannot create: %s", w->path, strerror(errno));
    pbuf ev = {0};
    event_encode(&ev, 0, "brain.Event:2", NULL, 0);
    int rc = record_write(w->f, ev.p, ev.len) || fflush(w->f);
    free(ev.p);
    if (rc) {
        fclose(w->f);
        w->f = NULL;
        return sbmt_errf(err, "%s: cannot write: %s", w->path, strerror(errno));
    }
    return 0;
}

int tb_write(tb_writer *w, int64_t step, const tb_scalar *v, int n, char *err) {
    if (!w->f) return 0;
    pbuf ev = {0};
    event_encode(&ev, step, NULL, v, n);
    int rc = record_write(w->f, ev.p, ev.len) || fflush(w->f);
    free(ev.p);
    if (rc) return sbmt_errf(err, "%s: cannot write: %s", w->path, strerror(errno));
    return 0;
}

void tb_close(tb_writer *w) {
    if (w->f) fclose(w->f);
    w->f = NULL;
}
