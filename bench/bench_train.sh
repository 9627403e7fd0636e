#!/bin/bash
# Training-throughput comparison: sbmt (build/sbmt train) vs the PyTorch CPU reference
# (bench/torch_listops.py) on the same ListOps configuration, batch, sequence length and threads.
#
# Usage: bench/bench_train.sh [STEPS]          (run from the repository root)
# Both sides train on the same generated ListOps file (LRA lengths 500..2000, padded to seq_len).
# Environment: BATCH (4), THREADS (1), CONFIG (configs/listops.ini), ATTN (softmax or sbm: the
#              torch side then gets clusters, edge_floor and sparsity_weight from the config and
#              runs the reference's dense SBM attention), SBMT (build/sbmt),
#              PYTHON (/usr/bin/python3: Debian's interpreter, which has torch/numpy/h5py),
#              OUT (work directory, default a fresh temporary one; kept and printed at the end:
#              the sbmt run goes to OUT/run, logs to OUT/*.log, OUT/torch.*).
set -euo pipefail

STEPS=${1:-7}
WARMUP=2
BATCH=${BATCH:-4}
THREADS=${THREADS:-1}
CONFIG=${CONFIG:-configs/listops.ini}
ATTN=${ATTN:-softmax}
SBMT=${SBMT:-build/sbmt}
PYTHON=${PYTHON:-/usr/bin/python3}
OUT=${OUT:-$(mktemp -d /tmp/sbmt_bench.XXXXXX)}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
RUN=$OUT/run
rm -rf "$RUN"

if (( STEPS <= WARMUP )); then
    echo "STEPS ($STEPS) must exceed the $WARMUP warm-up steps" >&2; exit 2
fi
[[ -x $SBMT ]] || { echo "$SBMT not found or not executable (build it first)" >&2; exit 2; }
[[ -f $CONFIG ]] || { echo "$CONFIG not found" >&2; exit 2; }

# Model sizes the torch side must match, read from the config (key = value lines).
ini() { sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*([0-9]+).*/\1/p" "$CONFIG" | head -n1; }
CFG_SEQ_LEN=$(ini seq_len); SEQ_LEN=${SEQ_LEN:-${CFG_SEQ_LEN:-2048}}
MIN_LEN=${MIN_LEN:-500}; MAX_LEN=${MAX_LEN:-2000}    # ListOps lengths (LRA: 500..2000)
TORCH_STEPS=${TORCH_STEPS:-$((STEPS - WARMUP))}; TORCH_WARMUP=${TORCH_WARMUP:-$WARMUP}
VOCAB=$(ini vocab_size); VOCAB=${VOCAB:-32}
# Numeric values with decimals or exponents (edge_floor = 0.01, sparsity_weight = 1e-4).
inif() { sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*([-+0-9.eE]+).*/\1/p" "$CONFIG" | head -n1; }
TORCH_ATTN_ARGS=()
if [[ $ATTN == sbm ]]; then
    CLUSTERS=$(ini clusters); EDGE_FLOOR=$(inif edge_floor); SPARSITY=$(inif sparsity_weight)
    TORCH_ATTN_ARGS=(--clusters "${CLUSTERS:-128}" --edge-floor "${EDGE_FLOOR:-0.01}"
                     --sparsity-weight "${SPARSITY:-1e-4}")
fi

DATA=$OUT/listops.h5
[[ -f $DATA ]] || "$SBMT" data listops --out "$DATA" --train 2000 --dev 16 --test 16 \
    --min-len "$MIN_LEN" --max-len "$MAX_LEN" --seq-len "$SEQ_LEN" --seed 1 --quiet

echo "== sbmt: $SBMT train --config $CONFIG attention=$ATTN batch=$BATCH steps=$STEPS threads=$THREADS out=$OUT"
OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS "$SBMT" train --config "$CONFIG" \
    --data "$DATA" --threads "$THREADS" --set model.attention="$ATTN" --set data.seq_len="$SEQ_LEN" \
    --set train.batch_size="$BATCH" --set train.steps="$STEPS" --set train.warmup=1 \
    --set train.eval_every=0 --set train.log_every=1 \
    --out "$RUN" > "$OUT/sbmt.log" 2>&1 || { tail -n 20 "$OUT/sbmt.log" >&2; exit 1; }

SBMT_TOK=$("$PYTHON" - "$RUN/metrics.jsonl" "$WARMUP" <<'EOF'
import json, sys
path, warm = sys.argv[1], int(sys.argv[2])
rows = []
with open(path) as f:
    for line in f:
        line = line.strip()
        if line:
            r = json.loads(line)
            if r.get("split") == "train" and "tokens_per_s" in r:
                rows.append(r)
if len(rows) <= warm:
    sys.exit(f"{path}: {len(rows)} train lines, need more than {warm}")
print("last train line:", json.dumps(rows[-1]), file=sys.stderr)
timed = rows[warm:]
dens = [r["density_mean"] for r in timed if "density_mean" in r]
# Steps process the same padded token count, so the overall rate is the harmonic mean of the
# per-step rates (total tokens / total time); model GFLOP/s is weighted by step time likewise.
w = [1.0 / r["tokens_per_s"] for r in timed]
rate = len(timed) / sum(w)
gf = sum(r.get("model_gflop_per_s", 0.0) * wi for r, wi in zip(timed, w)) / sum(w)
print(rate, sum(dens) / len(dens) if dens else "null", gf)
EOF
)
read -r SBMT_TOK SBMT_DENS SBMT_GF <<< "$SBMT_TOK"
BENCH_SBM=${BENCH_SBM:-$(dirname "$SBMT")/bench_sbm}
if [[ -x $BENCH_SBM ]]; then
    PEAK=$(OMP_NUM_THREADS=1 "$BENCH_SBM" sgemm | sed -n -E 's/.*: ([0-9.]+) GFLOP\/s/\1/p')
    echo "sbmt model GFLOP/s: $SBMT_GF, single-thread sgemm peak: $PEAK GFLOP/s," \
         "fraction $("$PYTHON" -c "print(f'{$SBMT_GF / $PEAK:.3f}')")"
fi
echo "sbmt tokens/s (total tokens / total time over steps after the first $WARMUP): $SBMT_TOK" \
     "$([[ $SBMT_DENS != null ]] && echo "density $SBMT_DENS")"

echo "== pytorch: attention=$ATTN batch=$BATCH seq_len=$SEQ_LEN threads=$THREADS ${TORCH_ATTN_ARGS[*]}"
"$PYTHON" "$HERE/torch_listops.py" --data "$DATA" --attention "$ATTN" --batch "$BATCH" --seq-len "$SEQ_LEN" --vocab "$VOCAB" \
    "${TORCH_ATTN_ARGS[@]}" --threads "$THREADS" --steps "$TORCH_STEPS" --warmup-steps "$TORCH_WARMUP" \
    2> "$OUT/torch.err" | tee "$OUT/torch.out"
grep -q WARNING "$OUT/torch.err" && cat "$OUT/torch.err" >&2
TORCH_RES=$("$PYTHON" -c 'import json,sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
d = r.get("density")
print(r["tokens_per_s"], "null" if d is None else d)' < "$OUT/torch.out")
read -r TORCH_TOK TORCH_DENS <<< "$TORCH_RES"

"$PYTHON" - "$SBMT_TOK" "$TORCH_TOK" "$BATCH" "$SEQ_LEN" "$THREADS" "$ATTN" "$SBMT_DENS" "$TORCH_DENS" <<'EOF'
import json, sys
s, t = float(sys.argv[1]), float(sys.argv[2])
sd, td = (None if x == "null" else float(x) for x in sys.argv[7:9])
line = f"sbmt {s:.1f} tokens/s, pytorch {t:.1f} tokens/s, ratio sbmt/pytorch = {s / t:.2f}x"
if sd is not None or td is not None:
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"
    line += f" (density sbmt {fmt(sd)}, pytorch {fmt(td)})"
print(line)
print(json.dumps({"attention": sys.argv[6], "batch": int(sys.argv[3]),
                  "seq_len": int(sys.argv[4]), "threads": int(sys.argv[5]),
                  "sbmt_tokens_per_s": s, "pytorch_tokens_per_s": t, "ratio": s / t,
                  "sbmt_density": sd, "pytorch_density": td}))
EOF
echo "outputs in $OUT"
