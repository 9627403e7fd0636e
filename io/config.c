// config.c: table-driven INI parser, --set overrides, validation and serialisation of sbmt_config.
#define _POSIX_C_SOURCE 200809L
#include "io/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

typedef enum { T_INT, T_FLOAT, T_STR, T_U64, T_BOOL } key_type;

typedef struct {
    const char *section, *key;
    key_type type;
    size_t offset, size;  // size: buffer size for strings
    double lo, hi;        // inclusive range for numbers
    const char *choices;  // '|'-separated allowed strings, or NULL for free text
    const char *help;
} key_def;

#define F(field) offsetof(sbmt_config, field), sizeof(((sbmt_config *)0)->field)
static const key_def KEYS[] = {
    {"model", "attention", T_STR, F(attention), 0, 0, "softmax|sbm", "attention kind"},
    {"model", "d_model", T_INT, F(d_model), 1, 65536, NULL, "model width D"},
    {"model", "d_ff", T_INT, F(d_ff), 1, 1 << 20, NULL, "FFN and classifier hidden width Dh"},
    {"model", "heads", T_INT, F(heads), 1, 1024, NULL, "attention heads H"},
    {"model", "head_dim", T_INT, F(head_dim), 1, 4096, NULL, "head dimension d"},
    {"model", "layers", T_INT, F(layers), 1, 255, NULL, "encoder layers L"},
    {"model", "clusters", T_INT, F(clusters), 1, 65536, NULL, "SBM clusters k"},
    {"model", "dropout", T_FLOAT, F(dropout), 0, 0.99, NULL, "dropout probability"},
    {"model", "attn_dropout", T_FLOAT, F(attn_dropout), 0, 0.99, NULL, "attention dropout"},
    {"model", "pooling", T_STR, F(pooling), 0, 0, "mean|cls", "sequence pooling"},
    {"model", "edge_floor", T_FLOAT, F(edge_floor), 0, 1, NULL, "SBM edge probability floor"},
    {"model", "sparsity_weight", T_FLOAT, F(sparsity_weight), 0, 1e6, NULL, "density regulariser"},
    {"model", "sampler", T_STR, F(sampler), 0, 0, "fastrg|dense|auto", "SBM graph sampler"},
    {"data", "task", T_STR, F(task), 0, 0, "listops|text|retrieval|image|pathfinder", "LRA task"},
    {"data", "path", T_STR, F(path), 0, 0, NULL, "HDF5 dataset (empty: generate ListOps)"},
    {"data", "seq_len", T_INT, F(seq_len), 2, 1 << 24, NULL, "sequence length n"},
    {"data", "vocab_size", T_INT, F(vocab_size), 0, 1 << 24, NULL, "0: from the dataset"},
    {"data", "num_classes", T_INT, F(num_classes), 0, 1 << 20, NULL, "0: from the dataset"},
    {"data", "dual", T_BOOL, F(dual), 0, 1, NULL, "dual encoder: set from the dataset"},
    {"data", "gen_train", T_INT, F(gen_train), 1, 1 << 30, NULL, "generated train rows"},
    {"data", "gen_dev", T_INT, F(gen_dev), 1, 1 << 30, NULL, "generated dev rows"},
    {"data", "gen_test", T_INT, F(gen_test), 1, 1 << 30, NULL, "generated test rows"},
    {"data", "gen_min_len", T_INT, F(gen_min_len), 0, 1 << 24, NULL, "generated min length"},
    {"data", "gen_max_len", T_INT, F(gen_max_len), 2, 1 << 24, NULL, "generated max length"},
    {"train", "batch_size", T_INT, F(batch_size), 1, 1 << 24, NULL, "global batch size"},
    {"train", "steps", T_INT, F(steps), 1, 1 << 30, NULL, "optimizer steps"},
    {"train", "warmup", T_INT, F(warmup), 0, 1 << 30, NULL, "warmup steps"},
    {"train", "lr", T_FLOAT, F(lr), 0, 10, NULL, "peak learning rate"},
    {"train", "weight_decay", T_FLOAT, F(weight_decay), 0, 10, NULL, "AdamW weight decay"},
    {"train", "beta1", T_FLOAT, F(beta1), 0, 0.999999, NULL, "Adam beta1"},
    {"train", "beta2", T_FLOAT, F(beta2), 0, 0.999999, NULL, "Adam beta2"},
    {"train", "adam_eps", T_FLOAT, F(adam_eps), 1e-30, 1, NULL, "Adam epsilon"},
    {"train", "cycle_momentum", T_BOOL, F(cycle_momentum), 0, 1, NULL, "cycle beta1 (OneCycleLR)"},
    {"train", "grad_clip", T_FLOAT, F(grad_clip), 0, 1e30, NULL, "global-norm clip, 0 = off"},
    {"train", "eval_every", T_INT, F(eval_every), 0, 1 << 30, NULL, "dev eval period, 0 = end"},
    {"train", "eval_batches", T_INT, F(eval_batches), 0, 1 << 30, NULL, "dev eval batches, 0 = all"},
    {"train", "log_every", T_INT, F(log_every), 1, 1 << 30, NULL, "progress line period"},
    {"train", "checkpoint_every", T_INT, F(checkpoint_every), 0, 1 << 30, NULL,
     "checkpoint period, 0 = only at the end"},
    {"train", "keep_checkpoints", T_INT, F(keep_checkpoints), 1, 1 << 20, NULL,
     "newest checkpoints kept"},
    {"train", "seed", T_U64, F(seed), 0, 0, NULL, "run seed"},
    {"train", "backend", T_STR, F(backend), 0, 0, "cpu|cuda", "compute backend"},
    {"train", "precision", T_STR, F(precision), 0, 0, "fp32|tf32|bf16",
     "GEMM and attention-tile operands: tf32 or bf16 tensor cores (fp32 accumulation, fp32 master "
     "weights; cuda only); fp32 keeps every product in fp32"},
    {"train", "micro_batch", T_INT, F(micro_batch), 0, 1 << 24, NULL,
     "examples per forward/backward (gradient accumulation), 0 = the whole per-rank batch"},
    {"train", "tensorboard", T_BOOL, F(tensorboard), 0, 1, NULL,
     "write TensorBoard event files under DIR/tb"},
    {"dist", "tp", T_INT, F(tp), 1, 1024, NULL, "head-parallel ranks (dp = world / tp)"},
    {"dist", "grad_buckets", T_BOOL, F(grad_buckets), 0, 1, NULL,
     "all-reduce gradients per layer while backward runs (false: one all-reduce after it)"},
    {"dist", "balance", T_BOOL, F(balance), 0, 1, NULL,
     "dp ranks exchange the step's examples so each computes about the same tokens"},
};
#undef F
#define NKEYS ((int)(sizeof(KEYS) / sizeof(KEYS[0])))

void config_defaults(sbmt_config *c) {
    memset(c, 0, sizeof(*c));
    strcpy(c->attention, "sbm");
    c->d_model = 64;
    c->d_ff = 128;
    c->heads = 2;
    c->head_dim = 32;
    c->layers = 2;
    c->clusters = 128;
    c->dropout = 0.1f;
    c->attn_dropout = 0.1f;
    strcpy(c->pooling, "mean");
    c->edge_floor = 0.01f;
    c->sparsity_weight = 1e-4f;
    strcpy(c->sampler, "auto");
    strcpy(c->task, "listops");
    c->seq_len = 2048;
    c->gen_train = 96000;
    c->gen_dev = 2000;
    c->gen_test = 2000;
    c->gen_min_len = 500;
    c->gen_max_len = 2000;
    c->batch_size = 128;
    c->steps = 5000;
    c->warmup = 1000;
    c->lr = 5e-4f;
    c->weight_decay = 0.0f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->adam_eps = 1e-6f;
    c->cycle_momentum = 1;
    c->grad_clip = 0.0f;
    c->eval_every = 500;
    c->eval_batches = 0;
    c->log_every = 10;
    c->checkpoint_every = 500;
    c->keep_checkpoints = 3;
    c->seed = 1234;
    strcpy(c->backend, "cpu");
    strcpy(c->precision, "fp32");
    c->micro_batch = 0;
    c->tensorboard = 1;
    c->tp = 1;
    c->grad_buckets = 1;
    c->balance = 1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

static const key_def *find_key(const char *section, const char *key) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].key, key) == 0) return &KEYS[i];
    return NULL;
}

static int known_section(const char *section) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0) return 1;
    return 0;
}

// Sets one key from text; `where` names the origin ("configs/x.ini:12" or "--set").
static int set_value(sbmt_config *c, const char *where, const char *section, const char *key,
                     const char *val, char *err) {
    if (!known_section(section))
        return sbmt_errf(err, "%s: unknown section [%s] (known: model, data, train, dist)", where, section);
    const key_def *k = find_key(section, key);
    if (!k) return sbmt_errf(err, "%s: unknown key '%s' in [%s]", where, key, section);
    char *p = (char *)c + k->offset;
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case T_INT: {
        long v = strtol(val, &end, 10);
        if (*val == '\0' || *end != '\0' || errno)
            return sbmt_errf(err, "%s: %s.%s: '%s' is not an integer", where, section, key, val);
        if (v < k->lo || v > k->hi)
            return sbmt_errf(err, "%s: %s.%s: %ld is out of range [%.0f, %.0f]", where, section,
                             key, v, k->lo, k->hi);
        *(int *)p = (int)v;
        break;
    }
    case T_BOOL: {
        int v;
        if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "on") || !strcmp(val, "yes"))
            v = 1;
        else if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "off") ||
                 !strcmp(val, "no"))
            v = 0;
        else
            return sbmt_errf(err, "%s: %s.%s: '%s' is not a boolean (true/false/1/0)", where,
                             section, key, val);
        *(int *)p = v;
        break;
    }
    case T_U64: {
        if (*val == '-')
            return sbmt_errf(err, "%s: %s.%s: '%s' must be a non-negative integer", where, section,
                             key, val);
        unsigned long long v = strtoull(val, &end, 10);
        if (*val == '\0' || *end != '\0' || errno)
            return sbmt_errf(err, "%s: %s.%s: '%s' is not an unsigned integer", where, section,
                             key, val);
        *(uint64_t *)p = (uint64_t)v;
        break;
    }
    case T_FLOAT: {
        double v = strtod(val, &end);
        if (*val == '\0' || *end != '\0' || errno || !isfinite(v))
            return sbmt_errf(err, "%s: %s.%s: '%s' is not a finite number", where, section, key,
                             val);
        if (v < k->lo || v > k->hi)
            return sbmt_errf(err, "%s: %s.%s: %g is out of range [%g, %g]", where, section, key, v,
                             k->lo, k->hi);
        *(float *)p = (float)v;
        break;
    }
    case T_STR: {
        if (strlen(val) >= k->size)
            return sbmt_errf(err, "%s: %s.%s: value longer than %zu characters", where, section,
                             key, k->size - 1);
        if (k->choices) {
            int ok = 0;
            const char *s = k->choices;
            size_t n = strlen(val);
            while (*s) {
                const char *bar = strchr(s, '|');
                size_t len = bar ? (size_t)(bar - s) : strlen(s);
                if (len == n && strncmp(s, val, n) == 0) ok = 1;
                s += len + (bar ? 1 : 0);
            }
            if (!ok)
                return sbmt_errf(err, "%s: %s.%s: '%s' is not one of %s", where, section, key,
                                 val, k->choices);
        }
        strcpy(p, val);
        break;
    }
    }
    return 0;
}

static int load_text(sbmt_config *c, char *text, const char *origin, char *err) {
    char section[64] = "";
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char where[CFG_STR + 32];
        char *s = line;
        char *hash = strpbrk(s, "#;");
        if (hash) *hash = '\0';
        s = trim(s);
        if (!*s) continue;
        snprintf(where, sizeof(where), "%s:%d", origin, lineno);
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1] != '\0')
                return sbmt_errf(err, "%s: malformed section header '%s'", where, s);
            *close = '\0';
            char *name = trim(s + 1);
            if (!known_section(name))
                return sbmt_errf(err, "%s: unknown section [%s] (known: model, data, train, dist)",
                                 where, name);
            snprintf(section, sizeof(section), "%s", name);
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) return sbmt_errf(err, "%s: expected 'key = value', got '%s'", where, s);
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (!*section) return sbmt_errf(err, "%s: key '%s' before any [section]", where, key);
        if (set_value(c, where, section, key, val, err)) return -1;
    }
    return 0;
}

// Splits lines while keeping empty ones so line numbers in messages are right.
static char *number_safe_copy(const char *text) {
    // Replace empty lines by a lone space so strtok_r does not swallow them.
    size_t n = strlen(text);
    char *out = xmalloc(2 * n + 2);
    size_t j = 0;
    int at_start = 1;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '\r') continue;
        if (text[i] == '\n' && at_start) out[j++] = ' ';
        out[j++] = text[i];
        at_start = text[i] == '\n';
    }
    out[j] = '\0';
    return out;
}

int config_load_string(sbmt_config *c, const char *text, const char *origin, char *err) {
    char *copy = number_safe_copy(text);
    int rc = load_text(c, copy, origin, err);
    free(copy);
    return rc;
}

int config_load_file(sbmt_config *c, const char *path, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sbmt_errf(err, "%s: cannot open config: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (1 << 20)) {
        fclose(f);
        return sbmt_errf(err, "%s: not a config file (size %ld)", path, n);
    }
    char *buf = xmalloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    if (memchr(buf, '\0', got)) {
        free(buf);
        return sbmt_errf(err, "%s: binary data in config file", path);
    }
    int rc = config_load_string(c, buf, path, err);
    free(buf);
    return rc;
}

int config_set(sbmt_config *c, const char *assignment, char *err) {
    char buf[CFG_STR * 2];
    if (strlen(assignment) >= sizeof(buf))
        return sbmt_errf(err, "--set %.40s...: too long", assignment);
    strcpy(buf, assignment);
    char *eq = strchr(buf, '=');
    char *dot = strchr(buf, '.');
    if (!eq || !dot || dot > eq)
        return sbmt_errf(err, "--set '%s': expected section.key=value (e.g. train.lr=1e-3)",
                         assignment);
    *eq = '\0';
    *dot = '\0';
    char where[CFG_STR * 2 + 16];
    snprintf(where, sizeof(where), "--set %s", assignment);
    return set_value(c, where, trim(buf), trim(dot + 1), trim(eq + 1), err);
}

int config_validate(const sbmt_config *c, char *err) {
    if (c->warmup >= c->steps && c->steps > 1)
        return sbmt_errf(err, "train.warmup (%d) must be smaller than train.steps (%d)", c->warmup,
                         c->steps);
    if (c->gen_min_len >= c->gen_max_len - 1)
        return sbmt_errf(err,
                         "data.gen_min_len (%d) must be below data.gen_max_len - 1 (%d): lengths "
                         "are strictly between them",
                         c->gen_min_len, c->gen_max_len - 1);
    if (!c->path[0] && strcmp(c->task, "listops") != 0)
        return sbmt_errf(err, "data.path is empty but only task=listops can be generated (task=%s)",
                         c->task);
    if (!c->path[0] && c->seq_len < c->gen_max_len - 1)
        return sbmt_errf(err,
                         "data.seq_len (%d) is shorter than the longest generated sequence "
                         "(data.gen_max_len - 1 = %d)",
                         c->seq_len, c->gen_max_len - 1);
    if (strcmp(c->attention, "sbm") == 0 && c->clusters < 1)
        return sbmt_errf(err, "model.clusters must be >= 1 for attention=sbm");
    if ((long)c->heads * c->head_dim > (1L << 20))
        return sbmt_errf(err, "model.heads * model.head_dim (%d * %d) is too large", c->heads,
                         c->head_dim);
    if (c->heads % c->tp != 0)
        return sbmt_errf(err, "dist.tp = %d does not divide model.heads = %d (each tp rank holds "
                              "model.heads / dist.tp heads)", c->tp, c->heads);
    if (c->num_classes == 1) return sbmt_errf(err, "data.num_classes must be >= 2 (or 0: from data)");
    if (c->vocab_size == 1) return sbmt_errf(err, "data.vocab_size must be >= 2 (or 0: from data)");
    if (strcmp(c->pooling, "cls") == 0 && c->vocab_size == 2)
        return sbmt_errf(err, "model.pooling=cls needs a vocabulary with a CLS id (vocab_size-1)");
    return 0;
}

void config_write(const sbmt_config *c, FILE *f) {
    const char *cur = "";
    for (int i = 0; i < NKEYS; i++) {
        const key_def *k = &KEYS[i];
        if (strcmp(cur, k->section) != 0) {
            fprintf(f, "%s[%s]\n", i ? "\n" : "", k->section);
            cur = k->section;
        }
        const char *p = (const char *)c + k->offset;
        switch (k->type) {
        case T_INT: fprintf(f, "%s = %d\n", k->key, *(const int *)p); break;
        case T_BOOL: fprintf(f, "%s = %s\n", k->key, *(const int *)p ? "true" : "false"); break;
        case T_U64:
            fprintf(f, "%s = %llu\n", k->key, (unsigned long long)*(const uint64_t *)p);
            break;
        case T_FLOAT: fprintf(f, "%s = %.9g\n", k->key, (double)*(const float *)p); break;
        case T_STR: fprintf(f, "%s = %s\n", k->key, p); break;
        }
    }
}

char *config_to_string(const sbmt_config *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    config_write(c, f);
    fclose(f);
    return buf;
}
