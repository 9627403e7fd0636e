#!/usr/bin/env bash
# Test of launch/sbmt-mpirun.sh (run by ctest as test_launch): its flag errors and the mpirun
# command lines it builds (--dry-run), a real 2-rank training of a tiny model, and SIGTERM to
# the wrapper: checkpoint, exit 75, then --resume auto completes the run.
# Environment (from ctest): SBMT_BIN (build/sbmt), SBMT_SOURCE_DIR (repository root).
set -uo pipefail

SRC=${SBMT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BIN=${SBMT_BIN:-$SRC/build/sbmt}
W=$SRC/launch/sbmt-mpirun.sh
T0=$(date +%s)
log() { echo "test_launch [$(($(date +%s) - T0))s]: $*"; }
fail() { echo "test_launch: FAIL: $*"; exit 1; }

[ -x "$BIN" ] || fail "sbmt binary '$BIN' not found (set SBMT_BIN)"
[ -f "$W" ] || fail "$W not found"
command -v mpirun >/dev/null 2>&1 || { echo "test_launch: SKIP: no mpirun (apt-get install openmpi-bin)"; exit 77; }
export SBMT_BIN=$BIN
SCR=$(mktemp -d /tmp/sbmt-launch.XXXXXX) || fail "mktemp -d failed"
bg=""
cleanup() {
  local rc=$?
  [ -z "$bg" ] || kill -KILL "$bg" 2>/dev/null
  rm -rf "$SCR"
  exit "$rc"
}
trap cleanup EXIT
cd "$SCR" || fail "cd $SCR"

# ---- flag errors: exit 2, the message names the flag ----
expect_usage_error() {  # expected text, wrapper args...
  local want=$1 out rc
  shift
  out=$(bash "$W" "$@" 2>&1)
  rc=$?
  [ "$rc" = 2 ] || fail "'$*' exited $rc, expected 2: $out"
  grep -qF -- "$want" <<<"$out" || fail "'$*': message does not name '$want': $out"
  log "usage error ok: $* -> $(head -n 1 <<<"$out")"
}
expect_usage_error "--bogus" -n 2 --bogus -- train
expect_usage_error "-n" -n
expect_usage_error "-n" -n 0 -- train
expect_usage_error "'two'" -n two -- train
expect_usage_error "--threads" -n 2 --threads 0 -- train
expect_usage_error "--threads" -n 2 --threads
expect_usage_error "--ranks-per-node" -n 2 --ranks-per-node x -- train
expect_usage_error "--hostfile" -n 2 --hostfile "$SCR/no-such-file" -- train
expect_usage_error "missing -n" -- train
expect_usage_error "after --" -n 2
expect_usage_error "'train'" -n 2 train

out=$(bash "$W" --help 2>&1) || fail "--help exited non-zero"
for w in -n --hostfile --ranks-per-node --threads OMP_NUM_THREADS OPENBLAS_NUM_THREADS 75; do
  grep -qF -- "$w" <<<"$out" || fail "--help does not mention $w"
done
log "--help ok"

# ---- the command lines it builds ----
dry() { bash "$W" --dry-run "$@" 2>&1 | sed -n 's/^+ env //p'; }
has() { grep -qF -- "$2" <<<"$1" || fail "command line lacks '$2': $1"; }
hasnt() { ! grep -qF -- "$2" <<<"$1" || fail "command line has '$2': $1"; }
c=$(dry -n 1 --threads 1 -- train --data x.h5)
has "$c" "mpirun -n 1 "; has "$c" "-x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS"
has "$c" "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1"; has "$c" "$BIN train --data x.h5 --threads 1"
hasnt "$c" "--oversubscribe"; hasnt "$c" "--bind-to"
if [ "$(id -u)" = 0 ]; then has "$c" "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
else hasnt "$c" "OMPI_ALLOW_RUN_AS_ROOT"; fi
c=$(dry -n 1 --threads 3 -- train); has "$c" "--bind-to none"; has "$c" "OMP_NUM_THREADS=3"
has "$c" "train --threads 3"
c=$(dry -n 4096 -- train); has "$c" "--oversubscribe"; has "$c" "--bind-to none"
has "$c" "OMP_NUM_THREADS=1"
printf 'localhost slots=2\n' >hosts
c=$(dry -n 4096 --hostfile hosts --ranks-per-node 2 -- train --threads 2)
has "$c" "--hostfile hosts"; has "$c" "--map-by ppr:2:node"; hasnt "$c" "--oversubscribe"
has "$c" "OMP_NUM_THREADS=2"; has "$c" "train --threads 2"
[ "$(grep -o -- '--threads' <<<"$c" | wc -l)" = 1 ] || fail "--threads given twice: $c"
log "dry-run command lines ok"

# ---- a real 2-rank run ----
"$BIN" data listops --out lo.h5 --train 400 --dev 40 --test 40 --min-len 10 --max-len 60 \
  --seq-len 64 --seed 2 --quiet || fail "sbmt data listops failed"
tiny=(--data lo.h5 --set model.clusters=8 --set model.d_model=32 --set model.d_ff=48
  --set model.head_dim=16 --set data.seq_len=64 --set train.batch_size=8 --set train.warmup=4
  --set train.eval_every=0)
log "2 ranks: sbmt-mpirun.sh -n 2 -- train (40 steps)"
timeout 120 bash "$W" -n 2 -- train "${tiny[@]}" --set train.steps=40 --set train.log_every=5 \
  --set train.checkpoint_every=10 --out run1 >run1.log 2>&1
rc=$?
cat run1.log
[ "$rc" = 0 ] || fail "2-rank run exited $rc"
[ -f run1/final.h5 ] || fail "run1/final.h5 missing"
[ "$(grep -c '"split":"train"' run1/metrics.jsonl)" -ge 8 ] || fail "run1/metrics.jsonl lacks train lines"
grep -q '^+ env .*mpirun -n 2 ' run1.log || fail "the mpirun command line was not printed"
if grep -qi '^layout:' run1.log; then
  grep -i '^layout:' run1.log | grep -qi 'world 2' || fail "layout is not world 2"
  [ "$(grep -ci '^layout:' run1.log)" = 1 ] || fail "the layout line is printed more than once"
else
  log "WARNING: sbmt printed no 'layout:' line"
fi
log "2 ranks ok: exit 0, final.h5"

# ---- SIGTERM to the wrapper: checkpoint, exit 75; --resume auto completes ----
steps=1500
long=("${tiny[@]}" --set "train.steps=$steps" --set train.log_every=50 --set train.checkpoint_every=500 --out run2)
bash "$W" -n 2 -- train "${long[@]}" >run2.log 2>&1 &
bg=$!
s=""
for _ in $(seq 240); do
  s=$(grep '"split":"train"' run2/metrics.jsonl 2>/dev/null | tail -n 1 | sed -nE 's/.*"step":([0-9]+).*/\1/p')
  [ -n "$s" ] && [ "$s" -ge 100 ] && break
  kill -0 "$bg" 2>/dev/null || break
  sleep 0.25
done
[ -n "$s" ] && [ "$s" -ge 100 ] || { cat run2.log; fail "no progress to step 100 within 60 s"; }
[ "$s" -lt "$steps" ] || fail "the run finished before it could be interrupted"
log "SIGTERM to the wrapper at step $s"
kill -TERM "$bg"
rc=""
for _ in $(seq 120); do
  kill -0 "$bg" 2>/dev/null || { wait "$bg"; rc=$?; break; }
  sleep 0.5
done
[ -n "$rc" ] || { cat run2.log; fail "the wrapper did not exit within 60 s of SIGTERM"; }
bg=""
grep -v '^step ' run2.log
[ "$rc" = 75 ] || fail "interrupted run exited $rc, expected 75"
ls run2/ckpt_*.h5 >/dev/null 2>&1 || fail "no checkpoint after the interruption"
[ ! -f run2/final.h5 ] || fail "final.h5 written by an interrupted run"
log "interrupted: exit 75, checkpoint $(ls run2/ckpt_*.h5 | tail -n 1)"
timeout 120 bash "$W" -n 2 -- train "${long[@]}" --resume auto >run3.log 2>&1
rc=$?
grep -v '^step ' run3.log
[ "$rc" = 0 ] || fail "resumed run exited $rc"
grep -q 'resumed from' run3.log || fail "the second run did not resume"
[ -f run2/final.h5 ] || fail "run2/final.h5 missing after the resumed run"
log "resumed and completed: $(grep -m1 'resumed from' run3.log)"
log "PASS in $(($(date +%s) - T0)) s"
