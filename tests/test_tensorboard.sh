#!/usr/bin/env bash
# TensorBoard event files of `sbmt train`, read back by TensorBoard's own EventAccumulator
# (tests/tb_check.py, with a Python from tests/tb_python.sh): every tag, step and value equal to
# metrics.jsonl and every CRC valid, for an SBM run, a softmax run (no density tags) and a
# 2-rank run (one file, rank 0's); a run cut back to a checkpoint with a torn event tail, and a
# run killed with SIGKILL, each resumed, read as one curve per tag equal to an uninterrupted
# run's; train.tensorboard = false writes none; an unusable tb path is a named error.
# Skips (77) when no Python with tensorboard can be had, except in CI, where it fails.
set -uo pipefail
SRC=${SBMT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BIN=${SBMT_BIN:-$SRC/build/sbmt}
T0=$(date +%s)
log() { echo "test_tensorboard [$(($(date +%s) - T0))s]: $*"; }
fail() { echo "test_tensorboard: FAIL: $*"; exit 1; }

[ -x "$BIN" ] || fail "sbmt binary '$BIN' not found (set SBMT_BIN)"
if ! PY=$(bash "$SRC/tests/tb_python.sh"); then
    [ -n "${CI:-}" ] && fail "no Python with tensorboard (tests/tb_python.sh)"
    echo "test_tensorboard: SKIP: no Python with tensorboard"
    exit 77
fi
log "TensorBoard reader: $PY ($("$PY" -c 'import tensorboard; print(tensorboard.__version__)'))"
CHECK="$PY $SRC/tests/tb_check.py"
SCR=$(mktemp -d /tmp/sbmt-tb.XXXXXX) || fail "mktemp -d failed"
bg=""
cleanup() {
    local rc=$?
    [ -z "$bg" ] || kill -KILL "$bg" 2>/dev/null
    rm -rf "$SCR"
    exit "$rc"
}
trap cleanup EXIT
cd "$SCR" || fail "cd $SCR"

"$BIN" data listops --out lo.h5 --train 400 --dev 40 --test 40 --min-len 10 --max-len 60 \
    --seq-len 64 --seed 4 --quiet >/dev/null || fail "data listops"
COMMON=(--data lo.h5 --threads 1 --set data.seq_len=64 --set train.batch_size=8
        --set train.warmup=2 --set train.log_every=5)
train() {  # out dir, extra args...
    local out=$1
    shift
    "$BIN" train "${COMMON[@]}" --out "$out" "$@" >"$out.log" 2>&1 || {
        cat "$out.log"
        fail "train --out $out $* exited non-zero"
    }
}

# ---- an SBM run: tags, steps, values, CRCs ----
train sbm --set train.steps=40 --set train.eval_every=10 --set train.checkpoint_every=10
$CHECK sbm || fail "sbm run"
[ "$(ls sbm/tb | wc -l)" = 1 ] || fail "sbm/tb holds $(ls sbm/tb | wc -l) files, expected 1"
log "SBM run reads back"

# ---- cut back: a copy of the run as if killed after step 20, with a torn event tail ----
cp -r sbm cut
rm -f cut/ckpt_00000030.h5 cut/ckpt_00000040.h5 cut/final.h5
ev=$(ls cut/tb/events.out.tfevents.*)
head -c 23 "$ev" >>"$ev"  # half a record, as a process killed mid-write leaves
printf '{"split":"train","step":3,"loss":2.3' >>cut/metrics.jsonl  # and half a metrics line
train cut --set train.steps=40 --set train.eval_every=10 --set train.checkpoint_every=10 \
    --resume auto
grep -q "resumed from .*ckpt_00000020.h5" cut.log || fail "cut run did not resume at step 20"
$CHECK cut --same-as sbm || fail "resumed (cut back) run"
cmp -s <(grep -v '"tokens_per_s"' cut/metrics.jsonl) <(grep -v '"tokens_per_s"' sbm/metrics.jsonl) ||
    fail "metrics.jsonl after the cut-back resume differs from the uninterrupted run's eval lines"
"$BIN" plot cut >/dev/null || fail "sbmt plot of the resumed run"
log "resume at step 20 after a torn tail: one curve per tag, equal to the uninterrupted run"

# ---- SIGKILL mid-run, then --resume auto ----
KILL_ARGS=(--set train.steps=400 --set train.eval_every=100 --set train.checkpoint_every=20)
train full "${KILL_ARGS[@]}"
"$BIN" train "${COMMON[@]}" --out killed "${KILL_ARGS[@]}" >killed.log 2>&1 &
bg=$!
# Killed after the step-60 checkpoint and a few logged steps past it, which the resume drops.
laststep() { tail -n 1 "$1" 2>/dev/null | sed -n 's/.*"step":\([0-9]*\).*/\1/p'; }
for _ in $(seq 1000); do
    [ -e killed/ckpt_00000060.h5 ] && [ "$(laststep killed/metrics.jsonl)" -ge 70 ] && break
    kill -0 "$bg" 2>/dev/null || break
    sleep 0.02
done
kill -KILL "$bg" 2>/dev/null || fail "the run finished before it could be killed"
wait "$bg" 2>/dev/null
bg=""
[ -e killed/final.h5 ] && fail "killed run wrote final.h5"
last=$(laststep killed/metrics.jsonl)
train killed "${KILL_ARGS[@]}" --resume auto
log "killed after logging step $last; $(grep -o "resumed from [^ ]*" killed.log)"
$CHECK killed --same-as full || fail "killed and resumed run"
log "SIGKILL + resume: one curve per tag, equal to the uninterrupted run"

# ---- softmax: no density tags ----
train soft --set model.attention=softmax --set train.steps=20 --set train.eval_every=10
$CHECK soft --no-density || fail "softmax run"
log "softmax run: no density tags"

# ---- switched off ----
train off --set train.steps=10 --set train.tensorboard=false
[ -e off/tb ] && fail "train.tensorboard=false wrote off/tb"
[ -s off/metrics.jsonl ] || fail "train.tensorboard=false: no metrics.jsonl"
log "train.tensorboard=false writes no events"

# ---- an unusable path is a named error, before any training ----
mkdir bad && : >bad/tb
if "$BIN" train "${COMMON[@]}" --out bad --set train.steps=10 >bad.log 2>&1; then
    fail "train with bad/tb a regular file succeeded"
fi
grep -q "bad/tb" bad.log || fail "error does not name bad/tb: $(cat bad.log)"
[ -e bad/final.h5 ] && fail "a run that could not write events trained anyway"
log "unusable tb path: $(grep -m1 error bad.log)"

# ---- two ranks: one file, written by rank 0 ----
if command -v mpirun >/dev/null 2>&1; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # LeakSanitizer (the sanitizer suite) cannot tell Open MPI's unloaded plugins apart.
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun -n 2 --oversubscribe --bind-to none "$BIN" train "${COMMON[@]}" --out mpi \
        --set train.steps=20 --set train.eval_every=10 >mpi.log 2>&1 || {
        cat mpi.log
        fail "mpirun -n 2 train"
    }
    [ "$(ls mpi/tb | wc -l)" = 1 ] || fail "2 ranks wrote $(ls mpi/tb | wc -l) event files"
    $CHECK mpi || fail "2-rank run"
    log "2 ranks: one event file, equal to metrics.jsonl"
else
    log "no mpirun: 2-rank case not run"
fi
log "PASS"
