// metrics_read.h: a strict reader of DIR/metrics.jsonl (one flat JSON object per line, written
// by `sbmt train`) for the run report (io/report.h) and anything else that looks back at a run.
//
// Only the fields the report draws are kept; every other key is parsed and skipped, whatever its
// value (nested objects, arrays, strings with escapes), so new fields never break old readers.
// The grammar is JSON's (RFC 8259) and nothing more: `nan`, `inf`, `NaN`, single quotes,
// trailing commas or comments are errors. A number that overflows a double (1e999) is kept as
// +-inf, as Python's json module does; the report leaves such values out of its lines.
// Blank lines are skipped. Any other line that is not one such object is an error naming the file
// and the line; so is a last line cut short (a writer killed mid-line), since the trainer appends
// and flushes whole lines, and so is a file without records.
#ifndef SBMT_METRICS_READ_H
#define SBMT_METRICS_READ_H

#include <stddef.h>

enum { METRICS_TRAIN = 0, METRICS_DEV = 1, METRICS_TEST = 2, METRICS_OTHER = 3 };

typedef struct {
    int split;    // METRICS_TRAIN/DEV/TEST, METRICS_OTHER for any other "split" string
    double step;  // required, finite
    // NAN when the key is absent (JSON has no NaN, so NAN always means "not in this line").
    double loss, accuracy, lr, tokens_per_s, density_mean;
    int layers, heads;  // shape of "density" ([layers][heads]); 0 x 0 when absent
    double *density;    // layers * heads values, row-major; NULL when absent
} metrics_record;

typedef struct {
    metrics_record *rec;
    size_t n, cap;
} metrics_log;

// Parses one line (len bytes, no terminating newline needed, NUL bytes are errors) into *r.
// Returns 0, or -1 with a message (no file or line prefix) in msg (SBMT_ERR_LEN bytes) and
// *col set to the 1-based byte column where parsing stopped. On success r->density is owned by
// the caller (metrics_record_free).
int metrics_parse_line(const char *line, size_t len, metrics_record *r, int *col, char *msg);
void metrics_record_free(metrics_record *r);

// Reads a whole file into *log (zeroed first). Errors: "PATH: cannot open: <reason>",
// "PATH:LINE: <what> (column C)" and "PATH: no metrics records"; *log is empty after one.
int metrics_read_file(const char *path, metrics_log *log, char *err);
void metrics_log_free(metrics_log *log);

#endif
