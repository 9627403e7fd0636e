// metrics_read.c: the metrics.jsonl reader: a hand-written recursive-descent JSON parser for
// flat objects (the fields the report draws are decoded, everything else only validated).
#define _POSIX_C_SOURCE 200809L
#include "io/metrics_read.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

// Deeper nesting than this in a skipped value is refused rather than risking the stack.
#define METRICS_MAX_DEPTH 64
// Longer numbers than this are refused: a double never needs more digits.
#define METRICS_MAX_NUMBER 400

typedef struct {
    const char *p, *start, *end;
    char *msg;
} jcur;

static void ws(jcur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
        c->p++;
}

static int peek(const jcur *c) { return c->p < c->end ? (unsigned char)*c->p : -1; }

// After an element of an array or object: 1 at its closing character (consumed), 0 at a ','
// (consumed, with the blanks after it), -1 with `msg` otherwise.
static int list_next(jcur *c, int close, const char *msg) {
    ws(c);
    if (peek(c) == close) {
        c->p++;
        return 1;
    }
    if (peek(c) != ',') return sbmt_errf(c->msg, "%s", msg);
    c->p++;
    ws(c);
    return 0;
}

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

// A string at c->p (which is '"'). When out is not NULL the decoded text goes there; text that
// does not fit, or any non-ASCII character, makes it "" or '?' respectively: out only serves
// to match known keys and split names, which are short and ASCII.
static int parse_string(jcur *c, char *out, size_t outlen) {
    size_t n = 0;
    int overflow = 0;
    c->p++;
    for (;;) {
        if (c->p >= c->end) return sbmt_errf(c->msg, "unterminated string");
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') break;
        if (ch < 0x20) return sbmt_errf(c->msg, "control character 0x%02x in a string", ch);
        char dec = (char)ch;
        if (ch == '\\') {
            c->p++;
            int e = peek(c);
            switch (e) {
            case '"': dec = '"'; break;
            case '\\': dec = '\\'; break;
            case '/': dec = '/'; break;
            case 'b': dec = '\b'; break;
            case 'f': dec = '\f'; break;
            case 'n': dec = '\n'; break;
            case 'r': dec = '\r'; break;
            case 't': dec = '\t'; break;
            case 'u': {
                int code = 0;
                for (int k = 1; k <= 4; k++) {
                    int h = c->p + k < c->end ? hexval((unsigned char)c->p[k]) : -1;
                    if (h < 0) {
                        c->p += k;
                        return sbmt_errf(c->msg, "\\u must be followed by 4 hex digits");
                    }
                    code = code * 16 + h;
                }
                c->p += 4;
                // "\u0000" must not end a key early ("loss\u0000x" is not "loss").
                dec = code > 0 && code < 0x80 ? (char)code : '?';
                break;
            }
            default: return sbmt_errf(c->msg, "invalid escape in a string");
            }
        } else if (ch >= 0x80) {
            dec = '?';
        }
        c->p++;
        if (out) {
            if (n + 1 < outlen) out[n++] = dec;
            else overflow = 1;
        }
    }
    c->p++;  // the closing quote
    if (out) out[overflow ? 0 : n] = '\0';
    return 0;
}

// A number in JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
static int parse_number(jcur *c, double *v) {
    const char *s = c->p;
    if (peek(c) == '-') c->p++;
    if (peek(c) == '0') {
        c->p++;
    } else if (peek(c) >= '1' && peek(c) <= '9') {
        while (peek(c) >= '0' && peek(c) <= '9') c->p++;
    } else {
        return sbmt_errf(c->msg, "expected a digit in a number");
    }
    if (peek(c) == '.') {
        c->p++;
        if (!(peek(c) >= '0' && peek(c) <= '9'))
            return sbmt_errf(c->msg, "expected a digit after '.' in a number");
        while (peek(c) >= '0' && peek(c) <= '9') c->p++;
    }
    if (peek(c) == 'e' || peek(c) == 'E') {
        c->p++;
        if (peek(c) == '+' || peek(c) == '-') c->p++;
        if (!(peek(c) >= '0' && peek(c) <= '9'))
            return sbmt_errf(c->msg, "expected a digit in the exponent of a number");
        while (peek(c) >= '0' && peek(c) <= '9') c->p++;
    }
    size_t n = (size_t)(c->p - s);
    if (n > METRICS_MAX_NUMBER) {
        c->p = s;
        return sbmt_errf(c->msg, "number longer than %d characters", METRICS_MAX_NUMBER);
    }
    // strtod on a copy: on the line itself it would accept more than JSON ("0x1p3", "1e5x").
    char buf[METRICS_MAX_NUMBER + 1];
    memcpy(buf, s, n);
    buf[n] = '\0';
    *v = strtod(buf, NULL);  // overflow gives +-HUGE_VAL (inf), underflow 0 or a subnormal
    return 0;
}

static int expected_value(jcur *c) {
    return sbmt_errf(c->msg, "expected a value (a number, string, array, object, true, false "
                             "or null)");
}

static int literal(jcur *c, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return expected_value(c);
    c->p += n;
    return 0;
}

// Any JSON value, validated and dropped.
static int skip_value(jcur *c, int depth) {
    if (depth > METRICS_MAX_DEPTH)
        return sbmt_errf(c->msg, "values nested deeper than %d levels", METRICS_MAX_DEPTH);
    int ch = peek(c);
    if (ch == '"') return parse_string(c, NULL, 0);
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        double v;
        return parse_number(c, &v);
    }
    if (ch == 't') return literal(c, "true");
    if (ch == 'f') return literal(c, "false");
    if (ch == 'n') return literal(c, "null");
    if (ch == '[') {
        c->p++;
        ws(c);
        if (peek(c) == ']') {
            c->p++;
            return 0;
        }
        for (;;) {
            if (skip_value(c, depth + 1)) return -1;
            const int st = list_next(c, ']', "expected ',' or ']' in an array");
            if (st) return st < 0 ? -1 : 0;
        }
    }
    if (ch == '{') {
        c->p++;
        ws(c);
        if (peek(c) == '}') {
            c->p++;
            return 0;
        }
        for (;;) {
            if (peek(c) != '"') return sbmt_errf(c->msg, "expected a string key");
            if (parse_string(c, NULL, 0)) return -1;
            ws(c);
            if (peek(c) != ':') return sbmt_errf(c->msg, "expected ':' after a key");
            c->p++;
            ws(c);
            if (skip_value(c, depth + 1)) return -1;
            const int st = list_next(c, '}', "expected ',' or '}' in an object");
            if (st) return st < 0 ? -1 : 0;
        }
    }
    return expected_value(c);
}

static int number_field(jcur *c, const char *key, double *v) {
    int ch = peek(c);
    if (!(ch == '-' || (ch >= '0' && ch <= '9')))
        return sbmt_errf(c->msg, "\"%s\": expected a number", key);
    return parse_number(c, v);
}

// "density": [[d, ...], ...], a non-empty rectangular [layers][heads] array of numbers.
static int density_field(jcur *c, metrics_record *r) {
    free(r->density);  // a repeated key: the last one counts, as for every other key
    r->density = NULL;
    r->layers = r->heads = 0;
    size_t cap = 16, n = 0;
    double *v = NULL;
    int layers = 0, heads = -1;
    if (peek(c) != '[') return sbmt_errf(c->msg, "\"density\": expected an array of arrays");
    c->p++;
    ws(c);
    if (peek(c) == ']') return sbmt_errf(c->msg, "\"density\": empty array");
    v = malloc(cap * sizeof(double));
    CHECK(v);
    for (;;) {
        if (peek(c) != '[') {
            free(v);
            return sbmt_errf(c->msg, "\"density\": expected an array of arrays");
        }
        c->p++;
        ws(c);
        int row = 0;
        for (;;) {
            double x;
            if (number_field(c, "density", &x)) {
                free(v);
                return -1;
            }
            if (n == cap) {
                cap *= 2;
                v = realloc(v, cap * sizeof(double));
                CHECK(v);
            }
            v[n++] = x;
            row++;
            const int st = list_next(c, ']', "expected ',' or ']' in \"density\"");
            if (st < 0) {
                free(v);
                return -1;
            }
            if (st) break;
        }
        if (heads >= 0 && row != heads) {
            free(v);
            return sbmt_errf(c->msg, "\"density\": layer %d has %d heads, layer 0 has %d", layers,
                             row, heads);
        }
        heads = row;
        layers++;
        const int st = list_next(c, ']', "expected ',' or ']' in \"density\"");
        if (st < 0) {
            free(v);
            return -1;
        }
        if (st) break;
    }
    r->density = v;
    r->layers = layers;
    r->heads = heads;
    return 0;
}

static int parse_object(jcur *c, metrics_record *r) {
    int have_split = 0, have_step = 0;
    ws(c);
    if (peek(c) != '{') return sbmt_errf(c->msg, "expected '{' at the start of a line");
    c->p++;
    ws(c);
    if (peek(c) == '}') {
        c->p++;
    } else {
        for (;;) {
            char key[32];
            if (peek(c) != '"') return sbmt_errf(c->msg, "expected a string key");
            if (parse_string(c, key, sizeof(key))) return -1;
            ws(c);
            if (peek(c) != ':') return sbmt_errf(c->msg, "expected ':' after key \"%s\"", key);
            c->p++;
            ws(c);
            int rc;
            if (!strcmp(key, "split")) {
                char split[16];
                if (peek(c) != '"') return sbmt_errf(c->msg, "\"split\": expected a string");
                rc = parse_string(c, split, sizeof(split));
                r->split = !strcmp(split, "train") ? METRICS_TRAIN
                           : !strcmp(split, "dev") ? METRICS_DEV
                           : !strcmp(split, "test") ? METRICS_TEST
                                                    : METRICS_OTHER;
                have_split = 1;
            } else if (!strcmp(key, "step")) {
                const char *at = c->p;
                rc = number_field(c, key, &r->step);
                if (!rc && !isfinite(r->step)) {
                    c->p = at;
                    return sbmt_errf(c->msg, "\"step\": not a finite number");
                }
                have_step = 1;
            } else if (!strcmp(key, "loss")) {
                rc = number_field(c, key, &r->loss);
            } else if (!strcmp(key, "accuracy")) {
                rc = number_field(c, key, &r->accuracy);
            } else if (!strcmp(key, "lr")) {
                rc = number_field(c, key, &r->lr);
            } else if (!strcmp(key, "tokens_per_s")) {
                rc = number_field(c, key, &r->tokens_per_s);
            } else if (!strcmp(key, "density_mean")) {
                rc = number_field(c, key, &r->density_mean);
            } else if (!strcmp(key, "density")) {
                rc = density_field(c, r);
            } else {
                rc = skip_value(c, 1);
            }
            if (rc) return -1;
            const int st = list_next(c, '}', "expected ',' or '}' after value");
            if (st < 0) return -1;
            if (st) break;
        }
    }
    ws(c);
    if (c->p < c->end) return sbmt_errf(c->msg, "unexpected text after the object");
    if (!have_split) return sbmt_errf(c->msg, "no \"split\" key");
    if (!have_step) return sbmt_errf(c->msg, "no \"step\" key");
    return 0;
}

int metrics_parse_line(const char *line, size_t len, metrics_record *r, int *col, char *msg) {
    memset(r, 0, sizeof(*r));
    r->split = METRICS_OTHER;
    r->loss = r->accuracy = r->lr = r->tokens_per_s = r->density_mean = NAN;
    jcur c = {line, line, line + len, msg};
    if (parse_object(&c, r)) {
        *col = (int)(c.p - c.start) + 1;
        metrics_record_free(r);
        return -1;
    }
    return 0;
}

void metrics_record_free(metrics_record *r) {
    free(r->density);
    r->density = NULL;
    r->layers = r->heads = 0;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) return 0;
    return 1;
}

int metrics_read_file(const char *path, metrics_log *log, char *err) {
    memset(log, 0, sizeof(*log));
    FILE *f = fopen(path, "rb");
    if (!f) return sbmt_errf(err, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL, msg[SBMT_ERR_LEN];
    size_t linecap = 0;
    ssize_t got;
    long long lineno = 0;
    int rc = 0;
    while ((got = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        int terminated = len > 0 && line[len - 1] == '\n';
        if (terminated) len--;
        if (blank(line, len)) continue;
        metrics_record r;
        int col;
        if (metrics_parse_line(line, len, &r, &col, msg)) {
            rc = sbmt_errf(err, "%s:%lld: %s (column %d)%s", path, lineno, msg, col,
                           terminated ? "" : "; the last line has no newline: was the run "
                                             "killed while writing it?");
            break;
        }
        if (log->n == log->cap) {
            log->cap = log->cap ? 2 * log->cap : 256;
            log->rec = realloc(log->rec, log->cap * sizeof(metrics_record));
            CHECK(log->rec);
        }
        log->rec[log->n++] = r;
    }
    if (!rc && ferror(f)) rc = sbmt_errf(err, "%s: read error: %s", path, strerror(errno));
    if (!rc && log->n == 0) rc = sbmt_errf(err, "%s: no metrics records", path);
    free(line);
    fclose(f);
    if (rc) metrics_log_free(log);
    return rc;
}

void metrics_log_free(metrics_log *log) {
    for (size_t i = 0; i < log->n; i++) metrics_record_free(&log->rec[i]);
    free(log->rec);
    memset(log, 0, sizeof(*log));
}
