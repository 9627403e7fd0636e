#!/bin/bash
# Distributed-training throughput on one host: the reference listops model (configs/listops.ini,
# SBM attention, n = 2048) trained by one rank with 1 and 2 threads, by dp2 and tp2 with one
# thread each (mpirun), and dp2 with the gradient all-reduce after backward instead of in
# buckets during it. Same data file, same global batch, same steps on every side.
#
# Usage: bench/bench_dist.sh [STEPS]        (run from the repository root; build first)
# Environment: BATCH (global batch, 8), ATTN (sbm | softmax), LENGTHS ("lra full": LRA ListOps
#              lengths 500..2000, and full-length sequences 1950..2048), SBMT (build/sbmt),
#              OUT (work directory, default a fresh temporary one, kept).
# Prints per configuration: tokens/s and ms per step over the steps after the first WARMUP, the
# share of step time rank 0 spent in collectives (blocking calls, waits on bucket all-reduces,
# waiting for slower ranks included), the payload it handed to collectives per step, and how
# long the end of backward waited for the gradient all-reduce (bucketed: what did not overlap;
# nobuckets: the whole all-reduce); then the ratios the distribution issue targets.
set -euo pipefail
STEPS=${1:-8}
WARMUP=2
BATCH=${BATCH:-8}
ATTN=${ATTN:-sbm}
LENGTHS=${LENGTHS:-lra full}
SBMT=${SBMT:-build/sbmt}
OUT=${OUT:-$(mktemp -d /tmp/sbmt_bench_dist.XXXXXX)}
mkdir -p "$OUT"
[[ -x $SBMT ]] || { echo "$SBMT not found (build first)" >&2; exit 2; }
(( STEPS > WARMUP )) || { echo "STEPS must exceed $WARMUP" >&2; exit 2; }
export OPENBLAS_NUM_THREADS=1
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI="mpirun --bind-to none"

summary() {  # metrics.jsonl -> "tokens/s comm_fraction comm_mb_per_step"
    python3 - "$1" "$WARMUP" << 'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
w = int(sys.argv[2])
a, b = rows[w - 1], rows[-1]
steps = b["step"] - a["step"]
elapsed = b["elapsed_s"] - a["elapsed_s"]
tail = rows[w:]
comm = sum(r.get("comm_fraction", 0.0) for r in tail) / len(tail)
mb = sum(r.get("comm_mb_per_step", 0.0) for r in tail) / len(tail)
gs = sum(r.get("grad_sync_ms_per_step", 0.0) for r in tail) / len(tail)
print(f"{steps / elapsed:.6f} {comm:.4f} {mb:.3f} {gs:.3f} {elapsed / steps * 1e3:.1f}")
PY
}

printf "%-6s %-16s %10s %9s %8s %8s %12s\n" lengths run "tokens/s" "step ms" "comm %" "MB/step" "grad wait ms"
for L in $LENGTHS; do
    case $L in
    lra) MIN=500 MAX=2000 ;;
    full) MIN=1950 MAX=2049 ;;
    *) echo "LENGTHS: '$L' is not lra or full" >&2; exit 2 ;;
    esac
    DATA=$OUT/listops_$L.h5
    [[ -f $DATA ]] || "$SBMT" data listops --out "$DATA" --train 256 --dev 16 --test 16 \
        --min-len $MIN --max-len $MAX --seq-len 2048 --seed 1 --quiet > /dev/null
    ARGS="--config configs/listops.ini --data $DATA --set model.attention=$ATTN \
      --set train.batch_size=$BATCH --set train.steps=$STEPS --set train.warmup=1 \
      --set train.eval_every=0 --set train.log_every=1 --set train.checkpoint_every=0"
    declare -A TPS=()
    for cfg in "1rank-1thread" "1rank-2threads" "dp2-1thread" "tp2-1thread" "dp2-nobuckets"; do
        run=$OUT/$L-$cfg
        rm -rf "$run"
        case $cfg in
        1rank-1thread) OMP_NUM_THREADS=1 "$SBMT" train $ARGS --threads 1 --out "$run" ;;
        1rank-2threads) OMP_NUM_THREADS=2 "$SBMT" train $ARGS --threads 2 --out "$run" ;;
        dp2-1thread) OMP_NUM_THREADS=1 $MPI -n 2 "$SBMT" train $ARGS --threads 1 --out "$run" ;;
        tp2-1thread) OMP_NUM_THREADS=1 $MPI -n 2 "$SBMT" train $ARGS --threads 1 \
            --set dist.tp=2 --out "$run" ;;
        dp2-nobuckets) OMP_NUM_THREADS=1 $MPI -n 2 "$SBMT" train $ARGS --threads 1 \
            --set dist.grad_buckets=false --out "$run" ;;
        esac > "$run.log" 2>&1 || { tail -5 "$run.log" >&2; exit 1; }
        read -r sps comm mb gs ms < <(summary "$run/metrics.jsonl")
        tps=$(python3 -c "print(f'{$sps * $BATCH * 2048:.0f}')")
        TPS[$cfg]=$tps
        printf "%-6s %-16s %10s %9s %7.1f%% %8s %12s\n" "$L" "$cfg" "$tps" "$ms" \
            "$(python3 -c "print($comm*100)")" "$mb" "$gs"
    done
    python3 - "${TPS[1rank-1thread]}" "${TPS[1rank-2threads]}" "${TPS[dp2-1thread]}" \
        "${TPS[tp2-1thread]}" "${TPS[dp2-nobuckets]}" "$L" << 'PY'
import sys
one, two, dp2, tp2, nob = map(float, sys.argv[1:6])
print(f"{sys.argv[6]:<6} dp2 / 1 rank 1 thread = {dp2 / one:.2f}x (target >= 1.8); "
      f"dp2 / 1 rank 2 threads = {dp2 / two:.2f} (target >= 0.9); tp2 / 1 rank 1 thread = "
      f"{tp2 / one:.2f}x; bucketed / single all-reduce = {dp2 / nob:.3f}")
PY
done
echo "work directory: $OUT"
