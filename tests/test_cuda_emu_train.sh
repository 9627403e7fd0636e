#!/usr/bin/env bash
# `sbmt train` and `sbmt eval` with backend = cuda, end to end, on the CUDA backend built for the
# CPU (sbmt_emu: tests/emu/, tests/cuda_emu.h), against the CPU backend on the same data:
# softmax and SBM runs (dense sampler: the tiles; fastrg: the edge path, with a head size the
# tiles do not take; auto: the dispatcher) give the same per-step losses and the same sampled
# edge counts, on one rank and at dp2/tp2 over NCCL; bf16 and tf32 runs (tensor-core GEMMs and
# tiles) follow the CPU's losses within the operands' rounding; eval on cuda matches eval on
# cpu; settings the GPU cannot honour (bf16 or tf32 on cpu, a head size without tile kernels
# for a sampler that may use them, too many clusters for the edge path or for the tiles'
# shared memory) are refused.
set -uo pipefail
SRC=${SBMT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BIN=${SBMT_BIN:-$SRC/build/sbmt}
EMU=${SBMT_EMU_BIN:-$SRC/build/sbmt_emu}
T0=$(date +%s)
log() { echo "test_cuda_emu_train [$(($(date +%s) - T0))s]: $*"; }
fail() { echo "test_cuda_emu_train: FAIL: $*"; exit 1; }
[ -x "$BIN" ] && [ -x "$EMU" ] || fail "binaries missing ($BIN, $EMU)"
SCR=$(mktemp -d /tmp/sbmt-cuda-emu.XXXXXX) || fail "mktemp"
trap 'rm -rf "$SCR"' EXIT
cd "$SCR" || fail "cd"

"$BIN" data listops --out lo.h5 --train 200 --dev 16 --test 16 --min-len 10 --max-len 60 \
    --seq-len 64 --seed 4 --quiet >/dev/null || fail "data listops"
COMMON=(--data lo.h5 --threads 1 --set data.seq_len=64 --set train.batch_size=4
        --set train.steps=6 --set train.warmup=1 --set train.log_every=1 --set train.eval_every=0
        --set model.d_model=32 --set model.d_ff=48 --set model.head_dim=16 --set model.clusters=16
        --set train.tensorboard=false)
run() {  # binary, out dir, extra args...
    local bin=$1 out=$2
    shift 2
    "$bin" train "${COMMON[@]}" --out "$out" "$@" >"$out.log" 2>&1 || {
        cat "$out.log"
        fail "train --out $out $*"
    }
}
compare() {  # dir a, dir b, what[, tolerance: reduced precision (edge counts then within 2%)]
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" "${4:-}" <<'PYEOF' || fail "$3: runs differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
tol = float(sys.argv[4]) if sys.argv[4] else 1e-4
exact = not sys.argv[4]
ta = [r for r in a if r["split"] == "train"]
tb = [r for r in b if r["split"] == "train"]
assert len(ta) == len(tb) == 6, (len(ta), len(tb))
worst = 0.0
for x, y in zip(ta, tb):
    d = abs(x["loss"] - y["loss"]) / abs(y["loss"])
    worst = max(worst, d)
    assert d < tol, ("step", x["step"], x["loss"], y["loss"])
    if exact or "edges" not in x:
        assert x.get("edges") == y.get("edges"), ("edges differ at step", x["step"], x.get("edges"), y.get("edges"))
    else:
        flat = lambda v: [w for u in v for w in flat(u)] if isinstance(v, list) else [v]
        for ex, ey in zip(flat(x["edges"]), flat(y["edges"])):
            assert abs(ex - ey) <= 0.02 * max(ey, 1), ("edges at step", x["step"], x["edges"], y["edges"])
ea = [r for r in a if r["split"] == "test"][0]
eb = [r for r in b if r["split"] == "test"][0]
assert abs(ea["loss"] - eb["loss"]) < tol * abs(eb["loss"]) and (not exact or ea["accuracy"] == eb["accuracy"])
print("%s: 6 steps, largest relative loss difference %.1e%s; test split %s" % (
    sys.argv[3], worst, ("" if "edges" not in ta[0] else ", edge counts identical" if exact else
    ", edge counts within 2%"), "equal" if exact else "within %g" % tol))
PYEOF
}

run "$BIN" cpu-soft --set model.attention=softmax
run "$EMU" emu-soft --set model.attention=softmax --set train.backend=cuda
compare emu-soft cpu-soft "softmax, cuda (emulated) vs cpu"
log "softmax ok"
run "$BIN" cpu-sbm --set model.attention=sbm --set model.sampler=dense
run "$EMU" emu-sbm --set model.attention=sbm --set model.sampler=dense --set train.backend=cuda
compare emu-sbm cpu-sbm "sbm, cuda (emulated) vs cpu"
log "sbm ok"
run "$BIN" cpu-fastrg --set model.attention=sbm --set model.sampler=fastrg --set model.head_dim=8
run "$EMU" emu-fastrg --set model.attention=sbm --set model.sampler=fastrg --set model.head_dim=8 \
    --set train.backend=cuda
compare emu-fastrg cpu-fastrg "sbm fastrg (edge path, heads of 8), cuda (emulated) vs cpu"
run "$BIN" cpu-auto --set model.attention=sbm --set model.sampler=auto --set model.edge_floor=0.001
run "$EMU" emu-auto --set model.attention=sbm --set model.sampler=auto --set model.edge_floor=0.001 \
    --set train.backend=cuda
compare emu-auto cpu-auto "sbm auto, cuda (emulated) vs cpu"
log "fastrg and auto ok"
if command -v mpirun >/dev/null 2>&1; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    MPI=(mpirun -n 2 --oversubscribe --bind-to none)
    for layout in dp2:1 tp2:2; do
        name=${layout%%:*} tp=${layout##*:}
        "${MPI[@]}" "$EMU" train "${COMMON[@]}" --out "emu-$name" --set model.attention=sbm \
            --set model.sampler=dense --set train.backend=cuda --set dist.tp=$tp \
            >"emu-$name.log" 2>&1 || { cat "emu-$name.log"; fail "mpirun $name"; }
        grep -q "collectives on them over NCCL" "emu-$name.log" || fail "$name: no NCCL context"
        compare "emu-$name" cpu-sbm "sbm $name, cuda + NCCL (emulated) vs cpu 1 rank"
    done
    for layout in dp2:1 tp2:2; do
        name=${layout%%:*} tp=${layout##*:}
        "${MPI[@]}" "$EMU" train "${COMMON[@]}" --out "emu-fastrg-$name" --set model.attention=sbm \
            --set model.sampler=fastrg --set model.head_dim=8 --set train.backend=cuda \
            --set dist.tp=$tp >"emu-fastrg-$name.log" 2>&1 ||
            { cat "emu-fastrg-$name.log"; fail "mpirun fastrg $name"; }
        compare "emu-fastrg-$name" cpu-fastrg "sbm fastrg $name, cuda + NCCL (emulated) vs cpu 1 rank"
    done
    log "dp2 and tp2 over NCCL ok"
    out=$(SBMT_EMU_SHARED_GPU=1 "${MPI[@]}" "$EMU" train "${COMMON[@]}" --out shared \
          --set train.backend=cuda 2>&1) && fail "two ranks on one GPU accepted"
    grep -q "share one GPU" <<<"$out" || fail "one-GPU refusal lacks its message: $out"
    [ "$(grep -c "share one GPU" <<<"$out")" = 1 ] || fail "the refusal was not printed once: $out"
    log "two ranks on one GPU: $(grep -m1 -o "ranks 0 and 1 on host [^ ]* share one GPU" <<<"$out")"
else
    log "no mpirun: multi-rank cases not run"
fi
# Bit-exact resume on cuda: from the step-3 checkpoint, each path (tiles, edges) ends with the
# tensors of the uninterrupted run (AdamW moments and the step's draws restored on the device).
for smp in dense fastrg; do
    run "$EMU" "emu-ck-$smp" --set model.attention=sbm --set model.sampler=$smp \
        --set train.backend=cuda --set train.checkpoint_every=3
    mkdir -p "emu-rs-$smp" && cp "emu-ck-$smp/ckpt_00000003.h5" "emu-rs-$smp/" || fail "copy ckpt"
    run "$EMU" "emu-rs-$smp" --set model.attention=sbm --set model.sampler=$smp \
        --set train.backend=cuda --set train.checkpoint_every=3 --resume auto
    grep -q "resum" "emu-rs-$smp.log" || fail "$smp: the resumed run did not say it resumed"
    steps=$(python3 -c 'import json,sys; print(sorted(json.loads(l)["step"] for l in open(sys.argv[1]) if json.loads(l)["split"] == "train"))' "emu-rs-$smp/metrics.jsonl")
    [ "$steps" = "[4, 5, 6]" ] || fail "$smp: the resumed run trained steps $steps, not 4..6"
    h5diff -q "emu-rs-$smp/final.h5" "emu-ck-$smp/final.h5" /model /model ||
        fail "$smp: resumed run's final tensors differ from the uninterrupted run's"
done
log "resume on cuda (tiles and edge path) bit-exact"
run "$EMU" emu-bf16 --set model.attention=sbm --set model.sampler=dense --set train.backend=cuda \
    --set train.precision=bf16
compare emu-bf16 cpu-sbm "sbm bf16, cuda (emulated) vs cpu fp32" 2e-2
# tf32: GEMMs and the attention tiles on (emulated) tensor cores, the CPU's fp32 run within the
# operands' rounding.
run "$EMU" emu-tf32 --set model.attention=sbm --set model.sampler=dense --set train.backend=cuda \
    --set train.precision=tf32
compare emu-tf32 cpu-sbm "sbm tf32, cuda (emulated) vs cpu fp32" 5e-3
run "$EMU" emu-tf32-soft --set model.attention=softmax --set train.backend=cuda \
    --set train.precision=tf32
compare emu-tf32-soft cpu-soft "softmax tf32, cuda (emulated) vs cpu fp32" 5e-3
log "tf32 ok"

# eval of the CPU-trained SBM checkpoint: cuda (emulated) equals cpu.
E1=$("$BIN" eval --ckpt cpu-sbm/final.h5 --data lo.h5 --split test --json | tail -1)
E2=$("$EMU" eval --ckpt cpu-sbm/final.h5 --data lo.h5 --split test --json --backend cuda | tail -1)
python3 - "$E1" "$E2" <<'PYEOF' || fail "eval on cuda differs: $E1 vs $E2"
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert abs(a["loss"] - b["loss"]) < 1e-4 * abs(a["loss"]) and a["accuracy"] == b["accuracy"], (a, b)
PYEOF
log "eval --backend cuda equals cpu"

expect_refused() {  # message, args...
    local want=$1 out
    shift
    out=$("$EMU" train "${COMMON[@]}" --out refused "$@" 2>&1) && fail "accepted: $*"
    grep -qF -- "$want" <<<"$out" || fail "'$*': message lacks '$want': $out"
    [ -e refused/final.h5 ] && fail "a refused run trained"
    log "refused: $(grep -m1 error <<<"$out")"
}
expect_refused "model.head_dim = 8" --set model.attention=sbm --set model.head_dim=8 \
    --set train.backend=cuda
expect_refused "model.head_dim = 8" --set model.attention=sbm --set model.head_dim=8 \
    --set model.sampler=dense --set train.backend=cuda
expect_refused "model.clusters = 300" --set model.attention=sbm --set model.sampler=fastrg \
    --set model.clusters=300 --set train.backend=cuda
expect_refused "train.precision = bf16 needs train.backend = cuda" --set train.precision=bf16
expect_refused "train.precision = tf32 needs train.backend = cuda" --set train.precision=tf32
# Tile kernels past a block's shared memory: refused at start, whatever the precision (tf32's
# padded tiles need more than fp32's).
expect_refused "would need 230 KB of shared memory per block in tf32" --set model.attention=sbm \
    --set model.head_dim=64 --set model.clusters=176 --set model.sampler=dense \
    --set train.backend=cuda --set train.precision=tf32
expect_refused "model.clusters = 224 with model.head_dim = 64" --set model.attention=sbm \
    --set model.head_dim=64 --set model.clusters=224 --set model.sampler=auto \
    --set train.backend=cuda
log "PASS"
