#!/usr/bin/env bash
# test_dist_train.sh: distributed training through the sbmt binary under mpirun (1, 2 and 4
# ranks, oversubscribed on 2 cores), against a plain one-process run:
#  - layout invariance: 1x1, dp2, tp2 and dp2 x tp2 train 20 steps from the same seed and global
#    batch; per-step losses agree within LOSS_TOL (relative) and sampled edge counts exactly, for
#    sbm (dropout on) and softmax attention and for the dual encoder; dev/test evaluations agree;
#  - checkpoints: dp2 x tp2 -> 1x1 and 1x1 -> dp2 x tp2 resumes continue as the original layout
#    does; same-layout resume under dp2 x tp2 is bit-exact; SIGKILL of one of 4 ranks ends the job
#    within 60 s and --resume auto completes; SIGTERM to one rank only: all ranks save and exit 75;
#  - data sharding: across ranks every training row is read exactly once per epoch;
#  - bucketed and single gradient all-reduce give the same parameters; micro-batches give the
#    step of the whole batch;
#  - layouts that cannot work are refused before any work, the error printed once.
set -uo pipefail
BIN=${SBMT_BIN:?}
command -v mpirun > /dev/null || { echo "mpirun not found: skipped"; exit 77; }
W=$(mktemp -d /tmp/sbmt_dist_XXXXXX)
trap 'pkill -KILL -f "$W/" 2> /dev/null; rm -rf "$W"' EXIT
cd "$W"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
MPI="mpirun --oversubscribe --bind-to none"
LOSS_TOL=1e-4   # relative, per step: rounding of the all-reduces, 20 steps of AdamW
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
bad() { echo "FAILED - $1"; failed=$((failed + 1)); }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

"$BIN" data listops --out lo.h5 --train 400 --dev 40 --test 40 --min-len 10 --max-len 60 \
    --seq-len 64 --seed 2 --quiet > /dev/null || { echo "cannot generate data"; exit 1; }
# A small dual (retrieval) dataset: AAN-format pairs through the converter.
mkdir -p aan
python3 - << 'PY'
import random
random.seed(5)
words = ["graph", "block", "model", "sparse", "attention", "edge", "node", "cluster", "x", "y"]
for split, n in (("train", 96), ("eval", 16), ("test", 16)):
    with open(f"aan/new_aan_pairs.{split}.tsv", "w") as f:
        for i in range(n):
            a = " ".join(random.choice(words) for _ in range(random.randint(2, 8)))
            b = " ".join(random.choice(words) for _ in range(random.randint(2, 8)))
            f.write(f"{random.randint(0, 1)}\tA{i}\tB{i}\t{a}\t{b}\n")
PY
"$BIN" data import-retrieval --in aan --out aan.h5 --seq-len 48 --quiet > /dev/null ||
    { echo "cannot convert the dual dataset"; exit 1; }

BASE="--threads 1 --set model.clusters=8 --set model.d_model=32 --set model.d_ff=48 \
 --set model.head_dim=16 --set train.batch_size=8 --set train.warmup=4 --set train.lr=2e-3 \
 --set train.eval_every=0 --set train.log_every=1 --set train.keep_checkpoints=100"
LO="--data lo.h5 --set data.seq_len=64 $BASE"
DUAL="--data aan.h5 --set data.seq_len=48 $BASE"

# run NAME RANKS TP ARGS...: trains into NAME/, log in NAME.log; returns the exit status.
run() {
    local name=$1 np=$2 tp=$3
    shift 3
    if [ "$np" = 0 ]; then  # a plain process, no mpirun
        "$BIN" train "$@" --out "$name" > "$name.log" 2>&1
    else
        $MPI -n "$np" "$BIN" train "$@" --set dist.tp="$tp" --out "$name" > "$name.log" 2>&1
    fi
}

# same_curve A B [FROM]: train lines of A and B (from step FROM on) agree: losses within
# LOSS_TOL, edges exactly; dev/test lines within LOSS_TOL.
same_curve() {
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "${3:-1}" "$LOSS_TOL" << 'PY'
import json, sys
a, b, first, tol = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def load(p):
    out = {}
    for line in open(p):
        j = json.loads(line)
        if j["step"] >= first:
            out[(j["split"], j["step"])] = j
    return out
A, B = load(a), load(b)
if set(A) != set(B) or not A:
    sys.exit(f"different lines: {sorted(set(A) ^ set(B))[:5]}")
worst = 0.0
for k in sorted(A):
    x, y = A[k], B[k]
    for f in ("loss", "accuracy"):
        d = abs(x[f] - y[f]) / max(1.0, abs(y[f]))
        worst = max(worst, d)
        if d > tol:
            sys.exit(f"{k} {f}: {x[f]} vs {y[f]}")
    if "edges" in x and x["edges"] != y["edges"]:
        sys.exit(f"{k} edges: {x['edges']} vs {y['edges']}")
print(f"  {len(A)} lines agree (largest relative loss difference {worst:.1e})")
PY
}

differs() { ! same_curve "$@" > /dev/null 2>&1; }

# same_tensors A.h5 B.h5: every tensor bit-identical (model and Adam moments).
same_tensors() { h5diff -q "$1" "$2" /model /model && h5diff -q "$1" "$2" /optim /optim; }

echo "# layout invariance (20 steps)"
for kind in sbm softmax dual; do
    case $kind in
    sbm) A="$LO --set model.attention=sbm" ;;
    softmax) A="$LO --set model.attention=softmax" ;;
    dual) A="$DUAL --set model.attention=sbm" ;;
    esac
    A="$A --set train.steps=20"
    run "$kind-1x1" 0 1 $A || bad "$kind 1x1 run"
    for layout in "dp2 2 1" "tp2 2 2" "dp2tp2 4 2"; do
        set -- $layout
        if run "$kind-$1" "$2" "$3" $A; then
            check "$kind: $1 agrees with 1x1" same_curve "$kind-$1" "$kind-1x1"
        else
            bad "$kind $1 run (exit $?)"; tail -5 "$kind-$1.log"
        fi
    done
done
# Clipping active at every step: the global norm must count each logical parameter once.
A="$LO --set model.attention=sbm --set train.steps=20 --set train.grad_clip=0.05"
if run clip-1x1 0 1 $A && run clip-dp2tp2 4 2 $A; then
    check "sbm, grad_clip active: dp2tp2 agrees with 1x1" same_curve clip-dp2tp2 clip-1x1
    check "  and clipping changed the run" differs clip-1x1 sbm-1x1
else bad "clip runs"; fi
check "layout line states world, dp, tp, hosts, threads" \
    grep -q "^layout: world 4 = dp 2 x tp 2 | 1 host, 4 ranks on .* | 1 thread per rank" sbm-dp2tp2.log
check "mpirun -n 1 equals a plain process (bit-exact)" \
    bash -c "$(declare -f run); MPI='$MPI' BIN='$BIN' run sbm-np1 1 1 $LO --set model.attention=sbm --set train.steps=20 && h5diff -q sbm-np1/final.h5 sbm-1x1/final.h5 /model /model"
check "only rank 0 prints progress" test "$(grep -c '^step 20/20' sbm-dp2tp2.log)" = 1

echo "# checkpoints on any layout"
A="$LO --set model.attention=sbm --set train.steps=20 --set train.checkpoint_every=10"
run ck-22 4 2 $A || bad "dp2xtp2 run with checkpoints"
run ck-11 0 1 $A || bad "1x1 run with checkpoints"
mkdir -p ck-22to11 ck-11to22 ck-22same
cp ck-22/ckpt_00000010.h5 ck-22to11/ && cp ck-11/ckpt_00000010.h5 ck-11to22/ &&
    cp ck-22/ckpt_00000010.h5 ck-22same/
if run ck-22to11 0 1 $A --resume auto; then
    check "dp2xtp2 checkpoint resumes on 1x1 as dp2xtp2 continues" same_curve ck-22to11 ck-22 11
else bad "resume dp2xtp2 -> 1x1"; tail -3 ck-22to11.log; fi
if run ck-11to22 4 2 $A --resume auto; then
    check "1x1 checkpoint resumes on dp2xtp2 as 1x1 continues" same_curve ck-11to22 ck-11 11
else bad "resume 1x1 -> dp2xtp2"; tail -3 ck-11to22.log; fi
if run ck-22same 4 2 $A --resume auto; then
    check "same-layout resume under dp2xtp2 is bit-exact" same_tensors ck-22same/final.h5 ck-22/final.h5
else bad "resume dp2xtp2 -> dp2xtp2"; fi
check "checkpoints hold whole tensors" \
    bash -c "h5ls -r ck-22/final.h5 | grep -q 'layers/0/attn/wo/weight .*{32, 32}' && h5ls -r ck-22/final.h5 | grep -q 'attn/clusters .*{2, 8, 16}'"

# A replica that drifted (one ulp on rank 1, by a test hook) is an error at the save, not a fork.
SBMT_TEST_PERTURB_RANK=1 run fork 2 1 $A
rc=$?
check "diverged dp replicas: exit non-zero, error printed once, no checkpoint written" \
    bash -c "test $rc -ne 0 && test \$(grep -c 'replicas diverged (dp replicas differ' fork.log) = 1 && ! ls fork/ckpt_*.h5 > /dev/null 2>&1"
SBMT_TEST_PERTURB_RANK=1 run fork-tp 2 2 $A
rc=$?
check "diverged tp copies of a replicated tensor: an error too" \
    bash -c "test $rc -ne 0 && grep -q 'the tp copies of replicated tensors differ' fork-tp.log"

echo "# failures and signals"
LONG="$LO --set model.attention=sbm --set train.steps=400 --set train.checkpoint_every=20 --set train.log_every=20"
# wait_file F SECONDS: until F exists.
wait_file() { local i; for ((i = 0; i < $2 * 10; i++)); do [ -e "$1" ] && return 0; sleep 0.1; done; return 1; }
# rank_pid NAME: the pid of a non-root rank of the job writing into NAME.
# (Processes named sbmt only: mpirun's own command line names the same --out.)
rank_pid() {
    local p
    for p in $(pgrep -x sbmt); do
        tr '\0' ' ' < "/proc/$p/cmdline" 2> /dev/null | grep -q -- "--out $1 " && echo "$p"
    done | tail -1
}
$MPI -n 4 "$BIN" train $LONG --set dist.tp=2 --out kill > kill.log 2>&1 &
job=$!
if wait_file kill/ckpt_00000020.h5 60; then
    victim=$(rank_pid kill)
    t0=$(date +%s)
    kill -KILL "$victim"
    for ((i = 0; i < 600; i++)); do kill -0 $job 2> /dev/null || break; sleep 0.1; done
    wait $job; rc=$?
    t=$(($(date +%s) - t0))
    check "SIGKILL of one of 4 ranks ends the job non-zero within 60 s ($t s, exit $rc)" \
        test "$rc" -ne 0 -a "$t" -lt 60
    if run kill 4 2 $LONG --resume auto; then
        check "after SIGKILL, --resume auto completes" grep -q "resumed from kill/ckpt_" kill.log
    else bad "resume after SIGKILL"; tail -5 kill.log; fi
else
    bad "no checkpoint before the SIGKILL"; kill -KILL $job; tail -5 kill.log
fi
run term-ref 4 2 $LONG || bad "uninterrupted reference run"
$MPI -n 4 "$BIN" train $LONG --set dist.tp=2 --out term > term.log 2>&1 &
job=$!
if wait_file term/ckpt_00000020.h5 60; then
    kill -TERM "$(rank_pid term)"
    wait $job; rc=$?
    check "SIGTERM to one rank: every rank stops, exit 75" test "$rc" = 75
    check "  with one message and one checkpoint at the stop step" \
        bash -c "test \$(grep -c '^stopped by signal 15 at step' term.log) = 1 && s=\$(sed -n 's/^stopped by signal 15 at step \([0-9]*\).*/\1/p' term.log) && test -e term/ckpt_\$(printf %08d \$s).h5"
    if run term 4 2 $LONG --resume auto; then
        check "  and the resumed run ends bit-identical to an uninterrupted one" \
            same_tensors term/final.h5 term-ref/final.h5
    else bad "resume after SIGTERM"; tail -5 term.log; fi
else
    bad "no checkpoint before the SIGTERM"; kill -KILL $job
fi

echo "# data sharding"
if SBMT_TRACE_ROWS="$W/rows" run shard 4 2 $LO --set model.attention=softmax --set train.steps=50; then
    # 50 steps x batch 8 = the 400 training rows: one epoch.
    check "every training row read exactly once per epoch across ranks (tp rank 0 reads)" python3 - << 'PY'
import glob, sys
rows = []
for f in sorted(glob.glob("rows.*")):
    mine = [int(l.split()[1]) for l in open(f)]
    rank = int(f.split(".")[-1])
    if rank % 2 == 1 and mine:
        sys.exit(f"tp rank 1 (world rank {rank}) read rows itself")
    rows += mine
if sorted(rows) != list(range(400)):
    sys.exit(f"{len(rows)} reads, {len(set(rows))} distinct rows")
PY
else bad "sharding run"; fi

echo "# gradient reduction"
A="$LO --set model.attention=sbm --set train.steps=20"
run buck-on 2 1 $A --set dist.grad_buckets=true && run buck-off 2 1 $A --set dist.grad_buckets=false &&
    check "dp2: bucketed and single all-reduce give bit-identical parameters" \
        same_tensors buck-on/final.h5 buck-off/final.h5
run buck22-off 4 2 $A --set dist.grad_buckets=false &&
    check "dp2xtp2: single all-reduce agrees with the bucketed run" same_curve buck22-off sbm-dp2tp2
run nobal 4 2 $A --set dist.balance=false &&
    check "dp2xtp2 without rebalancing the examples agrees with 1x1" same_curve nobal sbm-1x1
run micro 0 1 $A --set train.micro_batch=2 &&
    check "micro_batch 2 (4 forward/backward per step) equals the whole batch" same_curve micro sbm-1x1
run micro-dp2 2 1 $A --set train.micro_batch=1 &&
    check "dp2 with micro_batch 1 equals the whole batch" same_curve micro-dp2 sbm-1x1

echo "# layouts that cannot work"
# refused NAME RANKS WANT ARGS...: non-zero exit, the error printed once, naming WANT.
refused() {
    local name=$1 np=$2 want=$3
    shift 3
    $MPI -n "$np" "$BIN" train $LO --set train.steps=5 "$@" --out "ref-$name" > "ref-$name.log" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && [ "$(grep -c '^sbmt train: ' "ref-$name.log")" = 1 ] &&
        grep -q -- "$want" "ref-$name.log" && [ ! -e "ref-$name/metrics.jsonl" ] ||
        { echo "  exit $rc:"; sed 's/^/  | /' "ref-$name.log" | head -8; return 1; }
}
check "dist.tp not dividing model.heads" refused tp3 3 "dist.tp = 3 does not divide model.heads" --set dist.tp=3
check "world not divisible by dist.tp" refused w3 3 "dist.tp = 2 does not divide the 3 ranks" --set dist.tp=2
check "batch not splitting over dp" refused b7 2 "train.batch_size = 7 does not split over dp = 2" --set train.batch_size=7
check "micro-batch above the per-rank batch" refused mb 2 "train.micro_batch = 8" --set train.micro_batch=8
check "a bad flag is reported once" refused flag 2 "unknown or incomplete option '--bogus'" --bogus
check "a missing dataset is reported once" refused data 2 "nope.h5" --data nope.h5

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
