// report.h: the report of a training run: one self-contained SVG page (no scripts, fonts, CSS or
// links; it opens in any browser) drawn from DIR/metrics.jsonl by `sbmt plot` and refreshed by
// `sbmt train` at every evaluation.
//
// The page: a title (the run directory's name), a one-line summary (final train loss, best dev
// accuracy, test accuracy and loss, final mean density) and a grid of panels, each a
// <g class="panel" data-panel="ID"> with a title, axes with ticks, axis labels and a legend:
//   loss          train/loss, dev/loss, test/loss         log y when all > 0 and max/min > 5
//   accuracy      train/accuracy, dev/accuracy, test/accuracy                         linear y
//   lr            train/lr                                              log y when all > 0
//   tokens_per_s  train/tokens_per_s                                              linear y
//   density       density/mean (train "density_mean", bold) and density/layer<i>/head<j>
//                 (train "density"[i][j], 0-based, thin)                log y when all > 0
// Evaluation series (dev, test) also get a circle at every point when they have few, and any
// series of a single point gets one, so a test evaluated once at the end is a visible marker.
//
// Contract for tools and tests: every series is exactly one <polyline class="series"
// data-series="NAME">; its points attribute holds one "x,y" pair per metrics record of that
// split whose value is finite (records without the key, or with a value that overflowed to
// +-inf, are left out), in file order; a series with no such record is not drawn, and a panel
// with no drawn series is left out (so a softmax run has no density panel). All coordinates
// are absolute (no transforms), finite, and inside the viewBox "0 0 W H".
#ifndef SBMT_REPORT_H
#define SBMT_REPORT_H

#include <stddef.h>
#include <stdio.h>

#include "io/metrics_read.h"

typedef struct {
    size_t records;  // metrics records read
    int series;      // polylines drawn
    int panels;
} report_summary;

// Reads metrics_path and writes svg_path atomically: a temporary file next to it, renamed over
// it once complete, so a reader never sees half a page and on any error (which leaves err set,
// see metrics_read_file for the reader's) the previous svg_path is left as it was and the
// temporary file is removed. Returns 0 or -1. Safe to call from `sbmt train` while it appends.
int report_svg_write(const char *metrics_path, const char *svg_path, char *err);
// The same; *sum (may be NULL) gets what was drawn.
int report_svg_write_summary(const char *metrics_path, const char *svg_path, report_summary *sum,
                             char *err);

// The page for log on f (no error checks on f: the caller checks ferror). run_name is the page
// title, source a note of where the records came from (may be NULL).
void report_svg_render(const metrics_log *log, const char *run_name, const char *source, FILE *f,
                       report_summary *sum);

// A compact tick label of v into buf: "0", "0.5", "2.25", "1e-3", "2.5e-4", "2k", "1.5M". step
// is the spacing of the axis's ticks (it sets the decimals, so 2.2 and 2.25 on the same axis
// read "2.2" and "2.25"), or 0 for labels of 3 significant digits (log axes).
void report_tick_label(double v, double step, char *buf, size_t n);

#endif
