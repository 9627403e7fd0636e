// report.c: the SVG run report: which series go in which panel, axes with "nice" ticks, the page
// layout, and the atomic write of the file.
#define _POSIX_C_SOURCE 200809L
#include "io/report.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/common.h"

// Page geometry in SVG user units (CSS pixels).
#define PAGE_MARGIN 24.0
#define PANEL_W 470.0
#define PANEL_H 300.0
#define PANEL_GAP 20.0
#define FONT "Helvetica, Arial, 'DejaVu Sans', sans-serif"
// A self-contained file has no font metrics: text widths are estimated from this average glyph
// width (a fraction of the font size, on the wide side for these sans-serif fonts).
#define CHAR_W 0.6
// Values are clamped into +-VMAX before any axis arithmetic, so that hi - lo stays finite.
#define VMAX 1e300
// Evaluation series with at most this many points get a marker at each one.
#define MAX_MARKERS 60
// Density panels list each head in the legend up to this many heads, then one entry for all.
#define MAX_HEAD_LEGEND 8
#define MAX_TICKS 64

enum { FIELD_LOSS, FIELD_ACCURACY, FIELD_LR, FIELD_TPS, FIELD_DMEAN, FIELD_DENSITY };
enum { SCALE_LINEAR, SCALE_LOG, SCALE_LOG_IF_WIDE };

// Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
static const char *const split_color[3] = {"#0072B2", "#E69F00", "#009E73"};
static const char *const split_name[3] = {"train", "dev", "test"};
static const char *const head_palette[8] = {"#56B4E9", "#E69F00", "#009E73", "#CC79A7",
                                            "#0072B2", "#D55E00", "#8C6D31", "#999999"};

typedef struct {
    char name[64], label[32];
    int split, field, layer, head;
    const char *color;
    double width, opacity;
    int markers;  // an evaluation split: circles at its points when it has few
    size_t npts;  // records with a finite value
} series;

typedef struct {
    const char *id, *title, *ylabel;
    int scale;
    series *s;
    int ns, cap;
    int heads_total;  // density: layer/head series, for the collapsed legend entry
    int from_zero;    // the y axis reaches down to 0 (accuracy: gains read against chance)
} panel;

typedef struct {
    int log;
    double lo, hi;  // the domain, in data units (linear) or their log10 (log)
    double a0, a1;  // the pixels of lo and hi
    double step;    // spacing of linear ticks (it sets the label decimals); 0 for log ticks
    double ticks[MAX_TICKS];
    int nt;
} axis;

// ---------------------------------------------------------------- series and panels

static double series_value(const series *s, const metrics_record *r) {
    if (r->split != s->split) return NAN;
    switch (s->field) {
    case FIELD_LOSS: return r->loss;
    case FIELD_ACCURACY: return r->accuracy;
    case FIELD_LR: return r->lr;
    case FIELD_TPS: return r->tokens_per_s;
    case FIELD_DMEAN: return r->density_mean;
    case FIELD_DENSITY:
        if (s->layer < r->layers && s->head < r->heads)
            return r->density[s->layer * r->heads + s->head];
        return NAN;
    }
    return NAN;
}

static series *panel_add(panel *p, int split, int field, const char *name, const char *label,
                         const char *color, double width) {
    if (p->ns == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 4;
        p->s = realloc(p->s, (size_t)p->cap * sizeof(series));
        CHECK(p->s);
    }
    series *s = &p->s[p->ns++];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->label, sizeof(s->label), "%s", label);
    s->split = split;
    s->field = field;
    s->color = color;
    s->width = width;
    s->opacity = 1.0;
    s->markers = split != METRICS_TRAIN;
    return s;
}

// train, dev and test series of one field, named "<split>/<what>".
static void panel_add_splits(panel *p, int field, const char *what, int nsplits) {
    for (int k = 0; k < nsplits; k++) {
        char name[64];
        snprintf(name, sizeof(name), "%s/%s", split_name[k], what);
        panel_add(p, k, field, name, split_name[k], split_color[k], k == METRICS_TRAIN ? 1.6 : 2.0);
    }
}

// Counts every series' finite points, drops the series without any; returns the series left.
static int panel_prune(panel *p, const metrics_log *log) {
    int kept = 0;
    for (int i = 0; i < p->ns; i++) {
        series *s = &p->s[i];
        s->npts = 0;
        for (size_t r = 0; r < log->n; r++) s->npts += isfinite(series_value(s, &log->rec[r])) != 0;
        if (s->npts) p->s[kept++] = *s;
    }
    p->ns = kept;
    return kept;
}

// ---------------------------------------------------------------- axes and ticks

static double clampv(double v) { return v > VMAX ? VMAX : v < -VMAX ? -VMAX : v; }

// 1, 2 or 5 times a power of ten, the one nearest raw.
static double nice_step(double raw) {
    double mag = pow(10.0, floor(log10(raw)));
    double norm = raw / mag;
    return (norm < 1.5 ? 1.0 : norm < 3.5 ? 2.0 : norm < 7.5 ? 5.0 : 10.0) * mag;
}

static void axis_push(axis *ax, double v) {
    if (ax->nt < MAX_TICKS) ax->ticks[ax->nt++] = v;
}

// About five intervals of a nice step, the domain widened to whole steps. integer: the step
// is at least 1 (training steps).
static void axis_linear(axis *ax, double lo, double hi, int integer) {
    lo = clampv(lo);
    hi = clampv(hi);
    if (!(hi > lo)) {  // a single value: a window around it
        double w = fabs(lo) > 1e-200 ? 0.1 * fabs(lo) : 1.0;
        if (integer && w < 1.0) w = 1.0;
        lo -= w;
        hi += w;
    }
    ax->log = 0;
    ax->nt = 0;
    double step = nice_step((hi - lo) / 5.0);
    if (integer && step < 1.0) step = 1.0;
    double k0 = floor(lo / step), k1 = ceil(hi / step);
    if (!(step > 0.0) || !isfinite(k0) || !isfinite(k1) || !(k1 - k0 >= 1.0) ||
        k1 - k0 > MAX_TICKS - 1) {  // degenerate arithmetic: the bare data range
        ax->lo = lo;
        ax->hi = hi;
        ax->step = 0.0;
        axis_push(ax, lo);
        axis_push(ax, hi);
        return;
    }
    ax->lo = k0 * step;
    ax->hi = k1 * step;
    ax->step = step;
    for (double k = k0; k <= k1; k++) {
        double v = k * step;
        axis_push(ax, fabs(v) < 1e-9 * step ? 0.0 : v);
    }
}

// lo, hi > 0. The domain is the data range padded a little in log space. Ticks: decades when it
// spans more than 2.5 of them, else 1-2-5 multiples when it holds three or more (labels stay
// apart on a panel: 0.3 decades between 1 and 2), else linear nice ticks (a domain narrower than
// a factor of ~3, where a log axis is nearly linear anyway).
static void axis_log(axis *ax, double lo, double hi) {
    lo = fmin(fmax(lo, 1e-300), VMAX);
    hi = fmin(fmax(hi, lo), VMAX);
    double l0 = log10(lo), l1 = log10(hi);
    double pad = fmax(0.04 * (l1 - l0), 0.02);
    l0 = fmax(l0 - pad, -307.0);  // pow(10, l) of every tick stays a normal double
    l1 = fmin(l1 + pad, 307.0);
    ax->log = 1;
    ax->lo = l0;
    ax->hi = l1;
    ax->step = 0.0;
    ax->nt = 0;
    double d0 = ceil(l0), d1 = floor(l1);
    if (l1 - l0 > 2.5 && d1 - d0 >= 1.0) {
        double stride = ceil((d1 - d0 + 1.0) / 8.0);  // at most 8 decade labels
        for (double d = d0; d <= d1; d += stride) axis_push(ax, pow(10.0, d));
        return;
    }
    static const double mult[3] = {1.0, 2.0, 5.0};
    for (double d = floor(l0); d <= ceil(l1); d++)
        for (int m = 0; m < 3; m++) {
            double v = mult[m] * pow(10.0, d), lv = log10(v);
            if (lv >= l0 && lv <= l1) axis_push(ax, v);
        }
    if (ax->nt >= 3) return;
    ax->nt = 0;
    double vlo = pow(10.0, l0), vhi = pow(10.0, l1);
    double step = nice_step((vhi - vlo) / 4.0);
    double k0 = ceil(vlo / step), k1 = floor(vhi / step);
    if (!(step > 0.0) || !isfinite(k0) || !isfinite(k1) || k1 - k0 > MAX_TICKS - 1) return;
    ax->step = step;
    for (double k = k0; k <= k1; k++) axis_push(ax, k * step);
}

// The pixel of v; values outside the domain (only possible past +-VMAX) land on its edge.
static double axis_map(const axis *ax, double v) {
    double u = ax->log ? log10(fmin(fmax(v, 1e-300), VMAX)) : clampv(v);
    double t = (u - ax->lo) / (ax->hi - ax->lo);
    if (!(t >= 0.0)) t = 0.0;
    if (t > 1.0) t = 1.0;
    return ax->a0 + t * (ax->a1 - ax->a0);
}

static void strip_zeros(char *s) {
    char *dot = strchr(s, '.');
    if (!dot) return;
    char *e = s + strlen(s);
    while (e > dot + 1 && e[-1] == '0') e--;
    if (e == dot + 1) e = dot;
    *e = '\0';
}

// Decimals that show a multiple of step exactly (steps are 1, 2 or 5 times a power of ten).
static int decimals_for(double step) {
    double d = ceil(-log10(step) - 1e-9);
    return d < 0.0 ? 0 : d > 12.0 ? 12 : (int)d;
}

void report_tick_label(double v, double step, char *buf, size_t n) {
    double a = fabs(v);
    if (!isfinite(v)) {
        snprintf(buf, n, "%s", v > 0 ? "inf" : v < 0 ? "-inf" : "nan");
        return;
    }
    if (a == 0.0 || (step > 0.0 && a < 1e-9 * step)) {
        snprintf(buf, n, "0");
        return;
    }
    char m[64];
    if (a < 0.01 || a >= 1e15) {  // 2.5e-4
        int e = (int)floor(log10(a));
        double mant = v / pow(10.0, e);
        int d = step > 0.0 ? decimals_for(step / pow(10.0, e)) : 2;
        if (d > 2) d = 2;
        snprintf(m, sizeof(m), "%.*f", d, mant);
        if (fabs(strtod(m, NULL)) >= 10.0) {  // 9.996 rounded up to 10.00
            e++;
            snprintf(m, sizeof(m), "%.*f", d, mant / 10.0);
        }
        strip_zeros(m);
        snprintf(buf, n, "%se%d", m, e);
        return;
    }
    static const double unit[5] = {1.0, 1e3, 1e6, 1e9, 1e12};
    static const char *const suffix[5] = {"", "k", "M", "G", "T"};
    int u = 0;
    while (u < 4 && a >= unit[u + 1]) u++;
    double s = v / unit[u];
    int d;
    if (step > 0.0) {
        d = decimals_for(step / unit[u]);
    } else {  // three significant digits
        d = 2 - (int)floor(log10(fabs(s)));
        d = d < 0 ? 0 : d > 12 ? 12 : d;
    }
    snprintf(m, sizeof(m), "%.*f", d, s);
    strip_zeros(m);
    snprintf(buf, n, "%s%s", m, suffix[u]);
}

// ---------------------------------------------------------------- SVG output

// Text content or attribute value: markup characters escaped, control characters and bytes that
// are not UTF-8 (a directory name can hold any byte) replaced, so the page always parses.
static void put_text(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        if (c == '&') fputs("&amp;", f);
        else if (c == '<') fputs("&lt;", f);
        else if (c == '>') fputs("&gt;", f);
        else if (c == '"') fputs("&quot;", f);
        else if (c < 0x20) fputc('?', f);
        else if (c < 0x80) fputc((int)c, f);
        else {
            int len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                      : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
            int ok = len > 0;
            for (int k = 1; ok && k < len; k++) ok = p[k] >= 0x80 && p[k] <= 0xBF;
            // Overlong forms, UTF-16 surrogates and code points past U+10FFFF.
            if (ok && c == 0xE0 && p[1] < 0xA0) ok = 0;
            if (ok && c == 0xED && p[1] >= 0xA0) ok = 0;
            if (ok && c == 0xF0 && p[1] < 0x90) ok = 0;
            if (ok && c == 0xF4 && p[1] >= 0x90) ok = 0;
            if (!ok) {
                fputc('?', f);
                p++;
                continue;
            }
            fwrite(p, 1, (size_t)len, f);
            p += len;
            continue;
        }
        p++;
    }
}

static void put_label(FILE *f, double x, double y, double size, const char *anchor,
                      const char *extra, const char *text) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%.0f\" text-anchor=\"%s\"%s>", x, y, size,
            anchor, extra);
    put_text(f, text);
    fputs("</text>\n", f);
}

// "123.4" for the tenths of v, without printf: a page can hold millions of coordinates.
static char *put_tenths(char *p, double v) {
    long long t = llround(v * 10.0);
    if (t < 0) {
        *p++ = '-';
        t = -t;
    }
    char tmp[24];
    int n = 0;
    long long ip = t / 10;
    do {
        tmp[n++] = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip);
    while (n) *p++ = tmp[--n];
    *p++ = '.';
    *p++ = (char)('0' + t % 10);
    return p;
}

static double text_w(const char *s, double size) { return CHAR_W * size * (double)strlen(s); }

typedef struct {
    const metrics_log *log;
    double xmin, xmax;  // the step range of all records
} page_ctx;

static void draw_series(FILE *f, const series *s, const page_ctx *pc, const axis *xa,
                        const axis *ya) {
    char *buf = xmalloc(s->npts * 48 + 1), *p = buf;
    for (size_t r = 0; r < pc->log->n; r++) {
        const metrics_record *rec = &pc->log->rec[r];
        double v = series_value(s, rec);
        if (!isfinite(v)) continue;
        if (p != buf) *p++ = ' ';
        p = put_tenths(p, axis_map(xa, rec->step));
        *p++ = ',';
        p = put_tenths(p, axis_map(ya, v));
    }
    fprintf(f, "<polyline class=\"series\" data-series=\"%s\" fill=\"none\" stroke=\"%s\" "
               "stroke-width=\"%.2f\" stroke-opacity=\"%.2f\" stroke-linejoin=\"round\" "
               "stroke-linecap=\"round\" points=\"",
            s->name, s->color, s->width, s->opacity);
    fwrite(buf, 1, (size_t)(p - buf), f);
    fprintf(f, "\"><title>%s</title></polyline>\n", s->name);
    free(buf);
    if (!(s->markers && s->npts <= MAX_MARKERS) && s->npts != 1) return;  // a lone point needs one
    double rad = s->split == METRICS_TEST ? 4.5 : 3.0;
    for (size_t r = 0; r < pc->log->n; r++) {
        const metrics_record *rec = &pc->log->rec[r];
        double v = series_value(s, rec);
        if (!isfinite(v)) continue;
        fprintf(f, "<circle class=\"marker\" data-series=\"%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" "
                   "fill=\"%s\" stroke=\"#ffffff\" stroke-width=\"1.2\"/>\n",
                s->name, axis_map(xa, rec->step), axis_map(ya, v), rad, s->color);
    }
}

typedef struct {
    const char *label, *color;
    double width, opacity;
    int marker;  // 0 none, else the radius
    double x, y;
    int heads;  // the one entry standing for every layer/head line
} legend_item;

static void draw_panel(FILE *f, const panel *p, const page_ctx *pc, double px, double py) {
    // The y range of every finite value drawn here.
    double lo = INFINITY, hi = -INFINITY;
    int positive = 1;
    for (int i = 0; i < p->ns; i++)
        for (size_t r = 0; r < pc->log->n; r++) {
            double v = series_value(&p->s[i], &pc->log->rec[r]);
            if (!isfinite(v)) continue;
            lo = fmin(lo, v);
            hi = fmax(hi, v);
            if (!(v > 0.0)) positive = 0;
        }
    if (p->from_zero && lo > 0.0) lo = 0.0;
    int log_y = positive && (p->scale == SCALE_LOG || (p->scale == SCALE_LOG_IF_WIDE && hi > 5.0 * lo));
    axis xa, ya;
    axis_linear(&xa, pc->xmin, pc->xmax, 1);
    // The last step ends the x axis: no empty stretch up to the next round number.
    if (xa.step > 0.0 && pc->xmin < pc->xmax && pc->xmax < xa.hi) {
        xa.hi = pc->xmax;
        while (xa.nt > 2 && xa.ticks[xa.nt - 1] > xa.hi) xa.nt--;
    }
    if (log_y) axis_log(&ya, lo, hi);
    else axis_linear(&ya, lo, hi, 0);

    // Legend: a strip of entries under the title, wrapped to the panel's width.
    legend_item items[MAX_HEAD_LEGEND + 8];
    int ni = 0;
    int collapse = p->heads_total > MAX_HEAD_LEGEND;
    char heads_label[48];
    snprintf(heads_label, sizeof(heads_label), "%d layer/head lines", p->heads_total);
    for (int i = 0; i < p->ns && ni < (int)(sizeof(items) / sizeof(items[0])); i++) {
        const series *s = &p->s[i];
        int is_head = s->field == FIELD_DENSITY;
        if (is_head && collapse) {
            if (i > 0 && p->s[i - 1].field == FIELD_DENSITY) continue;  // one entry for all heads
            items[ni] = (legend_item){heads_label, "#8a8a8a", s->width, 0.9, 0, 0, 0, 1};
        } else {
            int marker = (s->markers && s->npts <= MAX_MARKERS) || s->npts == 1
                             ? (s->split == METRICS_TEST ? 4 : 3)
                             : 0;
            // A single point (the final test) has no line to show.
            double opacity = marker && s->npts == 1 ? 0.0 : s->opacity;
            items[ni] = (legend_item){s->label, s->color, s->width, opacity, marker, 0, 0, 0};
        }
        ni++;
    }
    const double legend_x0 = px + 16, legend_x1 = px + PANEL_W - 16, row_h = 17;
    double lx = legend_x0, ly = py + 46;
    for (int i = 0; i < ni; i++) {
        double w = 26 + text_w(items[i].label, 11) + 16;
        if (lx > legend_x0 && lx + w > legend_x1) {
            lx = legend_x0;
            ly += row_h;
        }
        items[i].x = lx;
        items[i].y = ly;
        lx += w;
    }

    // Plot area: the left margin fits the widest y tick label.
    char lab[MAX_TICKS][32];
    double labw = 0;
    for (int t = 0; t < ya.nt; t++) {
        report_tick_label(ya.ticks[t], ya.step, lab[t], sizeof(lab[t]));
        labw = fmax(labw, text_w(lab[t], 11));
    }
    const double left = px + 34 + labw, right = px + PANEL_W - 20;
    const double top = ly + 16, bottom = py + PANEL_H - 46;
    xa.a0 = left;
    xa.a1 = right;
    ya.a0 = bottom;
    ya.a1 = top;

    fprintf(f, "<g class=\"panel\" data-panel=\"%s\">\n", p->id);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" rx=\"6\" fill=\"#ffffff\" "
               "stroke=\"#d5d9e0\"/>\n",
            px, py, PANEL_W, PANEL_H);
    char title[96];
    snprintf(title, sizeof(title), "%s%s", p->title, log_y ? " (log scale)" : "");
    put_label(f, px + 16, py + 24, 14, "start", " font-weight=\"bold\" fill=\"#1f2328\"", title);

    // Grid, ticks and their labels.
    fputs("<g stroke=\"#e8eaee\" stroke-width=\"1\">\n", f);
    for (int t = 0; t < ya.nt; t++) {
        double y = axis_map(&ya, ya.ticks[t]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", left, y, right, y);
    }
    for (int t = 0; t < xa.nt; t++) {
        double x = axis_map(&xa, xa.ticks[t]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", x, top, x, bottom);
    }
    fputs("</g>\n<g fill=\"#57606a\">\n", f);
    for (int t = 0; t < ya.nt; t++)
        put_label(f, left - 6, axis_map(&ya, ya.ticks[t]) + 4, 11, "end", "", lab[t]);
    // x labels: every one that does not run into the previous one.
    double last_end = -INFINITY;
    for (int t = 0; t < xa.nt; t++) {
        char xl[32];
        report_tick_label(xa.ticks[t], xa.step, xl, sizeof(xl));
        double x = axis_map(&xa, xa.ticks[t]), w = text_w(xl, 11);
        if (x - w / 2 < last_end + 6) continue;
        put_label(f, x, bottom + 17, 11, "middle", "", xl);
        last_end = x + w / 2;
    }
    fputs("</g>\n", f);
    fprintf(f, "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#8c959f\" "
               "stroke-width=\"1\"/>\n",
            left, top, bottom, right);
    put_label(f, (left + right) / 2, bottom + 36, 12, "middle", " fill=\"#1f2328\"", "step");
    char rot[96];
    double yl_x = px + 20, yl_y = (top + bottom) / 2;
    snprintf(rot, sizeof(rot), " fill=\"#1f2328\" transform=\"rotate(-90 %.1f %.1f)\"", yl_x, yl_y);
    put_label(f, yl_x, yl_y, 12, "middle", rot, p->ylabel);

    for (int i = 0; i < p->ns; i++) draw_series(f, &p->s[i], pc, &xa, &ya);

    for (int i = 0; i < ni; i++) {
        const legend_item *it = &items[i];
        double y = it->y - 4;
        if (it->heads)  // all heads: the first colours of their cycle
            for (int k = 0; k < 3; k++)
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                           "stroke-width=\"1.5\"/>\n",
                        it->x + 7 * k, y, it->x + 7 * k + 6, y, head_palette[k]);
        else
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                       "stroke-width=\"%.2f\" stroke-opacity=\"%.2f\" stroke-linecap=\"round\"/>\n",
                    it->x, y, it->x + 20, y, it->color, fmax(it->width, 1.5), it->opacity);
        if (it->marker)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\" stroke=\"#ffffff\" "
                       "stroke-width=\"1.2\"/>\n",
                    it->x + 10, y, it->marker, it->color);
        put_label(f, it->x + 26, it->y, 11, "start", " fill=\"#1f2328\"", it->label);
    }
    fputs("</g>\n", f);
}

// The summary line's parts.
static int summary_items(const metrics_log *log, int L, int H, char items[][96]) {
    int n = 0;
    const metrics_record *last_train = NULL, *best_dev = NULL, *last_test = NULL, *last_dens = NULL;
    for (size_t i = 0; i < log->n; i++) {
        const metrics_record *r = &log->rec[i];
        if (r->split == METRICS_TRAIN && isfinite(r->loss)) last_train = r;
        if (r->split == METRICS_TRAIN && isfinite(r->density_mean)) last_dens = r;
        if (r->split == METRICS_DEV && isfinite(r->accuracy) &&
            (!best_dev || r->accuracy > best_dev->accuracy))
            best_dev = r;
        if (r->split == METRICS_TEST && (isfinite(r->accuracy) || isfinite(r->loss))) last_test = r;
    }
    if (last_train)
        snprintf(items[n++], 96, "final train loss %.4f (step %.0f)", last_train->loss,
                 last_train->step);
    if (best_dev)
        snprintf(items[n++], 96, "best dev accuracy %.4f (step %.0f)", best_dev->accuracy,
                 best_dev->step);
    if (last_test && isfinite(last_test->accuracy) && isfinite(last_test->loss))
        snprintf(items[n++], 96, "test accuracy %.4f, loss %.4f (step %.0f)", last_test->accuracy,
                 last_test->loss, last_test->step);
    else if (last_test)
        snprintf(items[n++], 96, "test %s %.4f (step %.0f)",
                 isfinite(last_test->accuracy) ? "accuracy" : "loss",
                 isfinite(last_test->accuracy) ? last_test->accuracy : last_test->loss,
                 last_test->step);
    if (last_dens)
        snprintf(items[n++], 96, "final mean density %.4f (%d layer%s \xc3\x97 %d head%s)",
                 last_dens->density_mean, L, L == 1 ? "" : "s", H, H == 1 ? "" : "s");
    return n;
}

void report_svg_render(const metrics_log *log, const char *run_name, const char *source, FILE *f,
                       report_summary *sum) {
    page_ctx pc = {log, INFINITY, -INFINITY};
    int L = 0, H = 0;
    for (size_t i = 0; i < log->n; i++) {
        const metrics_record *r = &log->rec[i];
        pc.xmin = fmin(pc.xmin, r->step);
        pc.xmax = fmax(pc.xmax, r->step);
        if (r->split == METRICS_TRAIN && r->density) {
            if (r->layers > L) L = r->layers;
            if (r->heads > H) H = r->heads;
        }
    }
    if (!(pc.xmin <= pc.xmax)) pc.xmin = pc.xmax = 0.0;  // no records

    panel panels[5];
    memset(panels, 0, sizeof(panels));
    panel *loss = &panels[0], *acc = &panels[1], *dens = &panels[2], *lr = &panels[3],
          *tps = &panels[4];
    *loss = (panel){.id = "loss", .title = "Loss", .ylabel = "loss", .scale = SCALE_LOG_IF_WIDE};
    panel_add_splits(loss, FIELD_LOSS, "loss", 3);
    *acc = (panel){.id = "accuracy", .title = "Accuracy", .ylabel = "accuracy", .scale = SCALE_LINEAR,
                   .from_zero = 1};
    panel_add_splits(acc, FIELD_ACCURACY, "accuracy", 3);
    *dens = (panel){.id = "density", .title = "Attention density (SBM)", .ylabel = "density",
                    .scale = SCALE_LOG};
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++) {
            char name[64], label[32];
            snprintf(name, sizeof(name), "density/layer%d/head%d", l, h);
            snprintf(label, sizeof(label), "L%d H%d", l, h);
            series *s = panel_add(dens, METRICS_TRAIN, FIELD_DENSITY, name, label,
                                  head_palette[(l * H + h) % 8], 1.0);
            s->layer = l;
            s->head = h;
            s->opacity = 0.75;
        }
    dens->heads_total = L * H;
    panel_add(dens, METRICS_TRAIN, FIELD_DMEAN, "density/mean", "mean", "#1f2328", 2.6);
    *lr = (panel){.id = "lr", .title = "Learning rate", .ylabel = "learning rate", .scale = SCALE_LOG};
    panel_add(lr, METRICS_TRAIN, FIELD_LR, "train/lr", "train", "#6f42c1", 1.6);
    *tps = (panel){.id = "tokens_per_s", .title = "Throughput", .ylabel = "tokens/s",
                   .scale = SCALE_LINEAR};
    panel_add(tps, METRICS_TRAIN, FIELD_TPS, "train/tokens_per_s", "train", "#57606a", 1.4);

    const panel *shown[5];
    int np = 0, nseries = 0;
    for (int i = 0; i < 5; i++) {
        int k = panel_prune(&panels[i], log);
        if (k) {
            shown[np++] = &panels[i];
            nseries += k;
        }
        // The collapsed legend entry counts the heads actually drawn.
        if (&panels[i] == dens) {
            int drawn = 0;
            for (int j = 0; j < dens->ns; j++) drawn += dens->s[j].field == FIELD_DENSITY;
            dens->heads_total = drawn;
        }
    }

    int ncols = np <= 4 ? 2 : 3, nrows = (np + ncols - 1) / ncols;
    double W = 2 * PAGE_MARGIN + ncols * PANEL_W + (ncols - 1) * PANEL_GAP;

    // Header: title, summary lines (wrapped), source.
    char items[4][96];
    int nitems = summary_items(log, L, H, items);
    char lines[4][400];
    int nlines = 0;
    lines[0][0] = '\0';
    for (int i = 0; i < nitems; i++) {
        char *cur = lines[nlines];
        if (cur[0] && text_w(cur, 13) + text_w(items[i], 13) + 30 > W - 2 * PAGE_MARGIN) {
            cur = lines[++nlines];
            cur[0] = '\0';
        }
        if (cur[0]) strcat(cur, "  \xc2\xb7  ");
        strcat(cur, items[i]);
    }
    if (lines[nlines][0]) nlines++;
    double header = 44 + 19 * nlines + 26;
    double Hpx = header + nrows * PANEL_H + (nrows > 0 ? (nrows - 1) * PANEL_GAP : 0) + PAGE_MARGIN;
    if (np == 0) Hpx += 30;

    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"%s\">\n",
            W, Hpx, W, Hpx, FONT);
    fputs("<title>sbmt run: ", f);
    put_text(f, run_name);
    fputs("</title>\n", f);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#f6f7f9\"/>\n", W, Hpx);
    char title[512];
    snprintf(title, sizeof(title), "sbmt run: %s", run_name);
    put_label(f, PAGE_MARGIN, 36, 20, "start", " font-weight=\"bold\" fill=\"#1f2328\"", title);
    for (int i = 0; i < nlines; i++)
        put_label(f, PAGE_MARGIN, 60 + 19 * i, 13, "start", " fill=\"#24292f\"", lines[i]);
    char src[1400];
    snprintf(src, sizeof(src), "%.1000s%s%zu records, steps %.0f to %.0f  \xc2\xb7  sbmt %s",
             source ? source : "", source ? "  \xc2\xb7  " : "", log->n, pc.xmin, pc.xmax,
             SBMT_VERSION);
    put_label(f, PAGE_MARGIN, 60 + 19 * nlines + 2, 11, "start", " fill=\"#6e7781\"", src);
    if (np == 0)
        put_label(f, PAGE_MARGIN, header + 20, 13, "start", " fill=\"#24292f\"",
                  "no train, dev or test values to plot");

    for (int i = 0; i < np; i++) {
        double px = PAGE_MARGIN + (i % ncols) * (PANEL_W + PANEL_GAP);
        double py = header + (i / ncols) * (PANEL_H + PANEL_GAP);
        draw_panel(f, shown[i], &pc, px, py);
    }
    fputs("</svg>\n", f);
    for (int i = 0; i < 5; i++) free(panels[i].s);
    if (sum) {
        sum->records = log->n;
        sum->series = nseries;
        sum->panels = np;
    }
}

// ---------------------------------------------------------------- the file

// The page title: the name of the directory holding the metrics file ("run" for
// "runs/run/metrics.jsonl"; the working directory's name for a bare "metrics.jsonl").
static void run_name_of(const char *metrics_path, char *out, size_t n) {
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", metrics_path);
    char *slash = strrchr(buf, '/');
    if (slash) *slash = '\0';
    else snprintf(buf, sizeof(buf), ".");
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/') buf[--len] = '\0';
    if (!strcmp(buf, ".") || buf[0] == '\0') {
        if (!getcwd(buf, sizeof(buf))) snprintf(buf, sizeof(buf), ".");
    }
    const char *base = strrchr(buf, '/');
    base = base && base[1] ? base + 1 : buf;
    size_t bn = strlen(base) < n ? strlen(base) : n - 1;
    memcpy(out, base, bn);
    out[bn] = '\0';
}

int report_svg_write_summary(const char *metrics_path, const char *svg_path, report_summary *sum,
                             char *err) {
    metrics_log log;
    if (metrics_read_file(metrics_path, &log, err)) return -1;
    size_t tn = strlen(svg_path) + 16;
    char *tmp = xmalloc(tn);
    snprintf(tmp, tn, "%s.tmp.XXXXXX", svg_path);
    // A unique temporary name: `sbmt plot` and a training run may refresh the same page at once.
    int fd = mkstemp(tmp);
    int rc = 0;
    if (fd < 0) {
        rc = sbmt_errf(err, "%s: cannot create a temporary file next to it: %s", svg_path,
                       strerror(errno));
        free(tmp);
        metrics_log_free(&log);
        return rc;
    }
    fchmod(fd, 0644);  // mkstemp's 0600 would hide the page from the other users of a run
    FILE *f = fdopen(fd, "w");
    if (!f) {
        rc = sbmt_errf(err, "%s: %s", tmp, strerror(errno));
        close(fd);
    } else {
        char name[1024];
        run_name_of(metrics_path, name, sizeof(name));
        report_svg_render(&log, name, metrics_path, f, sum);
        int bad = ferror(f);
        int e = errno;
        if (fclose(f) != 0 && !bad) {
            bad = 1;
            e = errno;
        }
        if (bad) rc = sbmt_errf(err, "%s: write error: %s", tmp, strerror(e));
    }
    if (!rc && rename(tmp, svg_path) != 0)
        rc = sbmt_errf(err, "cannot rename %s to %s: %s", tmp, svg_path, strerror(errno));
    if (rc) unlink(tmp);
    free(tmp);
    metrics_log_free(&log);
    return rc;
}

int report_svg_write(const char *metrics_path, const char *svg_path, char *err) {
    return report_svg_write_summary(metrics_path, svg_path, NULL, err);
}
