#!/usr/bin/env bash
# Test of `sbmt plot` (run by ctest as test_plot): trains a tiny SBM and a tiny softmax run,
# plots them and checks the SVG with Python's XML parser against the metrics.jsonl read
# independently (json module): one polyline per series with one point per finite record, every
# coordinate finite and inside the viewBox, values drawn in the right order, the density panel
# exactly when the model has density; --out; and that an empty file, a damaged or cut line and a
# missing directory fail naming the file (and line), leaving an existing report.svg untouched.
# Environment (from ctest): SBMT_BIN (build/sbmt), SBMT_SOURCE_DIR (repository root).
set -uo pipefail

SRC=${SBMT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BIN=${SBMT_BIN:-$SRC/build/sbmt}
T0=$(date +%s)
log() { echo "test_plot [$(($(date +%s) - T0))s]: $*"; }
fail() { echo "test_plot: FAIL: $*"; exit 1; }

[ -x "$BIN" ] || fail "sbmt binary '$BIN' not found (set SBMT_BIN)"
command -v python3 >/dev/null 2>&1 || { echo "test_plot: SKIP: no python3"; exit 77; }
SCR=$(mktemp -d /tmp/sbmt-plot.XXXXXX) || fail "mktemp -d failed"
trap 'rc=$?; rm -rf "$SCR"; exit $rc' EXIT
cd "$SCR" || fail "cd $SCR"

# ---- the checker: SVG against metrics.jsonl ----
cat >check.py <<'EOF'
# check.py METRICS SVG sbm|softmax: exits non-zero naming the first mismatch.
import json, math, re, sys
import xml.etree.ElementTree as ET

metrics, svg, kind = sys.argv[1], sys.argv[2], sys.argv[3]
NS = "{http://www.w3.org/2000/svg}"

def finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

# Expected series: name -> [(step, value)] of the records with a finite value, in file order.
want = {}
def add(name, step, v):
    if finite(v):
        want.setdefault(name, []).append((step, v))
records = 0
shape = (0, 0)
with open(metrics) as f:
    for line in f:
        if not line.strip():
            continue
        r = json.loads(line)
        records += 1
        sp, st = r["split"], r["step"]
        if sp not in ("train", "dev", "test"):
            continue
        for key in ("loss", "accuracy"):
            add(sp + "/" + key, st, r.get(key))
        if sp == "train":
            add("train/lr", st, r.get("lr"))
            add("train/tokens_per_s", st, r.get("tokens_per_s"))
            add("density/mean", st, r.get("density_mean"))
            for i, row in enumerate(r.get("density", [])):
                for j, v in enumerate(row):
                    add("density/layer%d/head%d" % (i, j), st, v)
                shape = (max(shape[0], i + 1), max(shape[1], len(row)))

def die(msg):
    sys.exit("check.py: %s: %s" % (svg, msg))

root = ET.parse(svg).getroot()
if root.tag != NS + "svg":
    die("root element is %s" % root.tag)
vb = [float(x) for x in root.get("viewBox").split()]
if vb[:2] != [0.0, 0.0] or not (vb[2] > 0 and vb[3] > 0):
    die("viewBox %s" % vb)
W, H = vb[2], vb[3]

# Self-contained: no scripts, styles, links or foreign content.
for el in root.iter():
    tag = el.tag.replace(NS, "")
    if tag in ("script", "style", "foreignObject", "image", "a", "use"):
        die("has a <%s> element" % tag)
    for k, v in el.attrib.items():
        if "href" in k or "url(" in v or k.startswith("on"):
            die("<%s %s=%r>" % (tag, k, v))
    if tag in ("polyline", "circle", "line", "rect", "path") and "transform" in el.attrib:
        die("<%s> has a transform" % tag)

def coord(s, what):
    try:
        v = float(s)
    except ValueError:
        die("%s: %r is not a number" % (what, s))
    if not math.isfinite(v):
        die("%s: %r is not finite" % (what, s))
    return v

got = {}
for pl in root.iter(NS + "polyline"):
    if pl.get("class") != "series":
        continue
    name = pl.get("data-series")
    if name in got:
        die("two polylines for %s" % name)
    pts = []
    for pair in pl.get("points").split():
        x, y = pair.split(",")
        x, y = coord(x, name), coord(y, name)
        if not (0 <= x <= W and 0 <= y <= H):
            die("%s: point %s outside the viewBox 0 0 %g %g" % (name, pair, W, H))
        pts.append((x, y))
    got[name] = pts
for c in root.iter(NS + "circle"):
    x, y = coord(c.get("cx"), "circle"), coord(c.get("cy"), "circle")
    if not (0 <= x <= W and 0 <= y <= H):
        die("circle at %g,%g outside the viewBox" % (x, y))

if sorted(got) != sorted(want):
    die("series %s, expected %s" % (sorted(got), sorted(want)))
for name, vals in want.items():
    pts = got[name]
    if len(pts) != len(vals):
        die("%s: %d points for %d finite records" % (name, len(pts), len(vals)))
    # Drawn where they belong: x follows the step, y falls as the value rises (all panels share
    # the step axis; 0.15 px of slack for the rounding to tenths).
    for a in range(len(vals)):
        for b in range(len(vals)):
            (sa, va), (sb, vb_) = vals[a], vals[b]
            (xa, ya), (xb, yb) = pts[a], pts[b]
            if sa < sb and not xa < xb + 0.15:
                die("%s: step %s drawn right of step %s" % (name, sa, sb))
            if va < vb_ and not ya > yb - 0.15:
                die("%s: value %s drawn above %s" % (name, va, vb_))
    # Points of one series must not all collapse onto one pixel row when values differ.
    if len(set(v for _, v in vals)) > 1 and len(set(y for _, y in pts)) == 1:
        die("%s: every point at the same height" % name)

panels = sorted(g.get("data-panel") for g in root.iter(NS + "g") if g.get("class") == "panel")
want_panels = sorted(["loss", "accuracy", "lr", "tokens_per_s"] + (["density"] if kind == "sbm" else []))
if panels != want_panels:
    die("panels %s, expected %s" % (panels, want_panels))
dens = [n for n in got if n.startswith("density/")]
if kind == "softmax":
    if dens:
        die("a softmax run has density series %s" % dens)
else:
    L, Hh = shape
    if L * Hh == 0:
        die("no density in %s" % metrics)
    heads = sorted("density/layer%d/head%d" % (i, j) for i in range(L) for j in range(Hh))
    if sorted(n for n in dens if n != "density/mean") != heads or "density/mean" not in got:
        die("density series %s, expected density/mean and %s" % (sorted(dens), heads))
for name in ("train/loss", "dev/loss", "train/accuracy", "dev/accuracy", "test/accuracy", "train/lr"):
    if name not in got:
        die("no %s" % name)
text = " ".join("".join(t.itertext()) for t in root.iter(NS + "text"))
for word in ("step", "loss", "accuracy", "learning rate"):
    if word not in text:
        die("no text '%s'" % word)
print("ok %s: %d records, %d series, panels %s" % (svg, records, len(got), ",".join(panels)))
EOF

check() {  # metrics svg kind
  python3 check.py "$@" || fail "SVG check failed: $*"
}
sum_of() { cksum <"$1"; }

# ---- two tiny runs ----
"$BIN" data listops --out lo.h5 --train 400 --dev 40 --test 40 --min-len 10 --max-len 60 \
  --seq-len 64 --seed 4 --quiet >/dev/null || fail "data listops"
TR=(--data lo.h5 --threads 1 --set data.seq_len=64 --set train.batch_size=8 --set train.steps=60
    --set train.warmup=10 --set train.log_every=5 --set train.eval_every=20)
"$BIN" train "${TR[@]}" --out sbm >sbm.log 2>&1 || { cat sbm.log; fail "train sbm"; }
"$BIN" train "${TR[@]}" --out soft --set model.attention=softmax >soft.log 2>&1 ||
  { cat soft.log; fail "train softmax"; }
grep -q '"density"' sbm/metrics.jsonl || fail "the SBM run's metrics have no density"
grep -q '"density' soft/metrics.jsonl && fail "the softmax run's metrics have density"
log "trained: $(wc -l <sbm/metrics.jsonl) + $(wc -l <soft/metrics.jsonl) metrics lines"

# ---- the page train refreshes at every evaluation: present, complete, and what plot draws ----
for run in sbm soft; do
  kind=$([ $run = sbm ] && echo sbm || echo softmax)
  [ -s $run/report.svg ] || fail "train did not write $run/report.svg"
  check $run/metrics.jsonl $run/report.svg $kind
  cp $run/report.svg $run/train-report.svg
done
log "train's own report.svg pages check out"

# ---- plots of both ----
for run in sbm soft; do
  kind=$([ $run = sbm ] && echo sbm || echo softmax)
  out=$("$BIN" plot $run 2>&1) || fail "sbmt plot $run: $out"
  n=$(grep -c . $run/metrics.jsonl)
  k=$(python3 check.py $run/metrics.jsonl $run/report.svg $kind | sed -n 's/.*records, \([0-9]*\) series.*/\1/p')
  [ -n "$k" ] || { python3 check.py $run/metrics.jsonl $run/report.svg $kind; fail "check of $run"; }
  [ "$out" = "wrote $run/report.svg ($n records, $k series)" ] ||
    fail "sbmt plot $run printed '$out', expected 'wrote $run/report.svg ($n records, $k series)'"
  check $run/metrics.jsonl $run/report.svg $kind
  ls $run/report.svg.tmp* >/dev/null 2>&1 && fail "temporary files left in $run"
done
[ "$(python3 check.py sbm/metrics.jsonl sbm/report.svg sbm | grep -o '[0-9]* series')" = "13 series" ] ||
  fail "the 2x2-head SBM run should draw 13 series"
# train's last refresh came after the final (test) evaluation line: the same page as plot's.
for run in sbm soft; do
  cmp -s $run/report.svg $run/train-report.svg || fail "$run: train's report.svg differs from sbmt plot's"
done
log "plots ok"

# The checker itself fails on a wrong page: a point missing, a series twice, a coordinate
# outside the page, the density panel in a softmax run.
python3 - sbm/report.svg <<'EOF'
import re, sys
s = open(sys.argv[1]).read()
m = re.search(r'(data-series="train/loss"[^>]*points=")([^"]*)"', s)
pts = m.group(2).split()
open("bad1.svg", "w").write(s.replace(m.group(0), m.group(1) + " ".join(pts[:-1]) + '"'))
open("bad2.svg", "w").write(s.replace(m.group(0), m.group(0) + '/><polyline class="series" ' + m.group(0)))
open("bad3.svg", "w").write(s.replace(m.group(0), m.group(1) + " ".join(pts[:-1] + ["1e9,5"]) + '"'))
open("bad4.svg", "w").write(s.replace(m.group(0), m.group(1) + " ".join(pts[:-1] + ["nan,5"]) + '"'))
open("bad5.svg", "w").write(s.replace(m.group(0), m.group(1) + " ".join(pts[1:] + pts[:1]) + '"'))
EOF
for b in bad1 bad2 bad3 bad4 bad5; do
  python3 check.py sbm/metrics.jsonl $b.svg sbm >/dev/null 2>&1 && fail "the checker accepts $b.svg"
done
python3 check.py sbm/metrics.jsonl sbm/report.svg softmax >/dev/null 2>&1 &&
  fail "the checker accepts density in a softmax run"
python3 check.py soft/metrics.jsonl soft/report.svg sbm >/dev/null 2>&1 &&
  fail "the checker accepts an SBM run without density"
log "checker self-test ok"

# ---- --out, a metrics.jsonl path, non-finite values ----
before=$(sum_of sbm/report.svg)
out=$("$BIN" plot sbm --out "$SCR/custom.svg" 2>&1) || fail "--out: $out"
grep -qF "wrote $SCR/custom.svg" <<<"$out" || fail "--out printed '$out'"
check sbm/metrics.jsonl custom.svg sbm
[ "$(sum_of sbm/report.svg)" = "$before" ] || fail "--out changed sbm/report.svg"
out=$("$BIN" plot --out custom2.svg sbm/metrics.jsonl 2>&1) || fail "a metrics.jsonl path: $out"
check sbm/metrics.jsonl custom2.svg sbm
# A value that overflowed (1e999 reads as inf) and a key dropped: left out of their lines only.
mkdir -p nonfinite
python3 - sbm/metrics.jsonl nonfinite/metrics.jsonl <<'EOF'
import sys
edits = [('"loss":', '"loss":1e999,"was":'), ('"tokens_per_s":', '"tokens_per_s":-1e999,"was":'),
         ('"lr":', '"lr_gone":'), ('"density_mean":', '"density_mean":1e999,"was":')]
out, train = [], 0
for l in open(sys.argv[1]).read().splitlines(True):
    if '"split":"train"' in l:
        train += 1
        if 2 <= train < 2 + len(edits):  # the 2nd to 5th train lines, one edit each
            old, new = edits[train - 2]
            assert old in l, l
            l = l.replace(old, new, 1)
    out.append(l)
assert train >= 2 + len(edits)
open(sys.argv[2], "w").write("".join(out))
EOF
grep -q '1e999' nonfinite/metrics.jsonl || fail "could not make the non-finite metrics"
"$BIN" plot nonfinite/metrics.jsonl >/dev/null || fail "plot of non-finite values"
check nonfinite/metrics.jsonl nonfinite/report.svg sbm
log "--out, file path and non-finite values ok"

# ---- errors: the file (and line) named, non-zero exit, the old page intact ----
expect_fail() {  # dir, text the message must hold, plot args...
  local dir=$1 want=$2 out rc s0
  shift 2
  s0=$(sum_of "$dir/report.svg")
  out=$("$BIN" plot "$@" 2>&1)
  rc=$?
  [ "$rc" != 0 ] || fail "'sbmt plot $*' exited 0: $out"
  grep -qF -- "sbmt plot: " <<<"$out" || fail "'sbmt plot $*': message '$out' lacks 'sbmt plot: '"
  grep -qF -- "$want" <<<"$out" || fail "'sbmt plot $*': message '$out' does not name '$want'"
  [ "$(sum_of "$dir/report.svg")" = "$s0" ] || fail "'sbmt plot $*' changed $dir/report.svg"
  ls "$dir"/report.svg.tmp* >/dev/null 2>&1 && fail "'sbmt plot $*' left a temporary file"
  log "error ok: $(head -n 1 <<<"$out")"
}
mkrun() {  # name: a run directory with a copy of the SBM metrics and its page
  mkdir -p "$1" && cp sbm/metrics.jsonl sbm/report.svg "$1/"
}
mkrun empty && : >empty/metrics.jsonl
expect_fail empty "empty/metrics.jsonl: no metrics records" empty
mkrun cut && python3 - cut/metrics.jsonl <<'EOF'
import sys
p = sys.argv[1]
lines = open(p).read().splitlines(True)
lines[6] = lines[6][: len(lines[6]) // 2] + "\n"   # line 7 cut in the middle, the rest kept
open(p, "w").write("".join(lines))
EOF
expect_fail cut "cut/metrics.jsonl:7:" cut
mkrun garbage && sed -i '4i garbage{"split":"train"}' garbage/metrics.jsonl
expect_fail garbage "garbage/metrics.jsonl:4: expected '{'" garbage
mkrun nan && sed -i '3s/"loss":[0-9.]*/"loss":nan/' nan/metrics.jsonl
grep -q '"loss":nan' nan/metrics.jsonl || fail "could not write a nan"
expect_fail nan "nan/metrics.jsonl:3: \"loss\": expected a number" nan
mkrun killed && python3 - killed/metrics.jsonl <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
open(p, "w").write(s + s.splitlines(True)[0][:40])  # a last line without its end or newline
EOF
n=$(($(wc -l <killed/metrics.jsonl) + 1))
expect_fail killed "killed/metrics.jsonl:$n:" killed
mkrun nometrics && rm nometrics/metrics.jsonl
expect_fail nometrics "nometrics/metrics.jsonl: cannot open" nometrics
mkrun outdir
expect_fail outdir "no-such-dir/x.svg" outdir --out "$SCR/no-such-dir/x.svg"
out=$("$BIN" plot "$SCR/no-such-run" 2>&1) && fail "a missing directory exited 0"
grep -qF "sbmt plot: $SCR/no-such-run: No such file or directory" <<<"$out" ||
  fail "a missing directory: '$out'"
log "error ok: $out"

# ---- options ----
out=$("$BIN" plot sbm --bogus 2>&1) && fail "--bogus exited 0"
grep -qF "'--bogus'" <<<"$out" || fail "--bogus: '$out'"
out=$("$BIN" plot 2>&1) && fail "no directory exited 0"
grep -qF "run directory" <<<"$out" || fail "no directory: '$out'"
out=$("$BIN" plot sbm soft 2>&1) && fail "two directories exited 0"
grep -qF "'soft'" <<<"$out" || fail "two directories: '$out'"
out=$("$BIN" plot sbm --out 2>&1) && fail "--out without a value exited 0"
grep -qF -- "--out" <<<"$out" || fail "--out without a value: '$out'"
out=$("$BIN" plot --help 2>&1) || fail "--help exited non-zero"
grep -qF -- "--out" <<<"$out" || fail "--help does not mention --out"
"$BIN" help plot | grep -qF "metrics.jsonl" || fail "sbmt help plot"
"$BIN" help | grep -qF "plot" || fail "sbmt help does not list plot"
log "options ok"
echo "test_plot: PASS"
