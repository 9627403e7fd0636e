#!/bin/bash
# gpu_check.sh: the device check of the CUDA backend, in two halves, because the GPU host has the
# CUDA toolkit but none of this project's Debian packages (OpenBLAS, cmocka, ...):
#
#   here:       bash bench/gpu_check.sh --pack
#               builds, then copies the CUDA test binaries and the non-CUDA shared libraries they
#               load into gpu/ (about 80 MB, OpenBLAS half of it) and packs that into gpu.tgz
#               (about 29 MB: what a device call can carry is 64 MiB). Both are ignored through
#               .git/info/exclude. Carry `gpu.tgz`.
#   on the GPU: bash bench/gpu_check.sh
#               unpacks gpu.tgz when there is no gpu/, runs the binaries from gpu/ and prints a
#               summary table last; exit status non-zero when a check failed. Sized to finish in
#               a few minutes. `bash bench/gpu_check.sh --sanitize` also runs the tests under
#               compute-sanitizer (memcheck, racecheck) first. SBMT_GPU_CHECK_BUDGET (seconds,
#               default 480) bounds the whole run: every step's timeout is cut to what is left,
#               and the steps that no longer fit are listed as skipped, so the summary always
#               comes (a device call is one chance, and its output is all that comes back).
#
# It runs test_backend_ops (every dense primitive of the CUDA backend, the tiled attention
# kernels among them, against the CPU backend on the same inputs), then the attention benchmark:
# bench_attn_gpu (tiled, and row-wise up to n = 4k) next to PyTorch's SDPA (bench/torch_sdpa.py)
# at dh 64 x 8 heads and at the reference model's dh 32 x 2 heads; then SBM attention by path
# (bench_sbm_paths): the sampled tiles' time and TFLOP/s at n = 1k..16k (d 32 and 64, beside
# SDPA's), both paths against density 0.1%..30% with the crossover marked, fastRG's draws/s.
set -uo pipefail
cd "$(dirname "$0")/.."
PACK=gpu
TESTS=(test_backend_ops)
BENCHES=(bench_attn_gpu bench_sbm_paths sbmt)

if [ "${1:-}" = "--pack" ]; then
    bash launch/build.sh > /dev/null || { echo "gpu_check: build failed" >&2; exit 1; }
    rm -rf "$PACK" && mkdir -p "$PACK/lib"
    grep -qx "/$PACK/" .git/info/exclude 2> /dev/null || echo "/$PACK/" >> .git/info/exclude
    grep -qx "/$PACK.tgz" .git/info/exclude 2> /dev/null || echo "/$PACK.tgz" >> .git/info/exclude
    for t in "${TESTS[@]}" "${BENCHES[@]}"; do
        [ -x "build/$t" ] || { echo "gpu_check: build/$t missing (no CUDA backend built?)" >&2; exit 1; }
        cp "build/$t" "$PACK/"
        # Everything it loads except libc's own and the CUDA toolkit's (present on the GPU host).
        ldd "build/$t" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
            case "$(basename "$lib")" in
            libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda*|libcublas*|libnccl*) ;;
            *) cp -L "$lib" "$PACK/lib/" ;;
            esac
        done
    done
    tar czf "$PACK.tgz" "$PACK" || { echo "gpu_check: tar failed" >&2; exit 1; }
    du -sh "$PACK" "$PACK.tgz"
    bytes=$(stat -c %s "$PACK.tgz")
    [ "$bytes" -lt $((64 * 1024 * 1024)) ] ||
        { echo "gpu_check: $PACK.tgz is $bytes bytes, over the 64 MiB a device call carries" >&2; exit 1; }
    echo "gpu_check: packed $(ls "$PACK" | grep -vc lib) binaries; carry '$PACK.tgz' and run bash bench/gpu_check.sh"
    exit 0
fi

BUDGET=${SBMT_GPU_CHECK_BUDGET:-480}
[[ "$BUDGET" =~ ^[0-9]+$ ]] ||
    { echo "gpu_check: SBMT_GPU_CHECK_BUDGET = '$BUDGET': not a whole number of seconds" >&2; exit 2; }
if [ ! -d "$PACK" ] && [ -f "$PACK.tgz" ]; then
    tar xzf "$PACK.tgz" || { echo "gpu_check: cannot unpack $PACK.tgz" >&2; exit 2; }
fi
[ -d "$PACK" ] || { echo "gpu_check: no $PACK/ or $PACK.tgz (run bash bench/gpu_check.sh --pack where the project builds)" >&2; exit 2; }
# The CUDA libraries (cudart, cuBLAS, NCCL) from the toolkit, or from the NVIDIA wheels that a
# PyTorch image carries (site-packages/nvidia/*/lib).
NVLIB=$(python3 - 2> /dev/null << 'PY'
import glob, os, site
dirs = []
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib")))
    dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "*", "lib")))
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="$PWD/$PACK/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${NVLIB:+$NVLIB:}${LD_LIBRARY_PATH:-}"
missing=$(for b in "$PACK"/*; do [ -f "$b" ] && ldd "$b" 2> /dev/null | grep "not found"; done | sort -u)
if [ -n "$missing" ]; then
    echo "gpu_check: libraries the packed binaries need are missing here:" >&2
    echo "$missing" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2> /dev/null ||
    echo "gpu_check: nvidia-smi not available"
T_START=$SECONDS
SKIPPED=()
# lim S WHAT: TO becomes the timeout for a step that wants S seconds, cut to the budget left;
# under 10 s left, the step is listed as skipped instead (status 1).
lim() {
    local left=$((BUDGET - (SECONDS - T_START)))
    if [ "$left" -lt 10 ]; then
        SKIPPED+=("$2")
        echo "gpu_check: skipped (time budget of ${BUDGET}s spent): $2"
        return 1
    fi
    TO=$(($1 < left ? $1 : left))
}
declare -A RC
for t in "${TESTS[@]}"; do
    echo "== $t"
    : > "/tmp/gpu_check_$t.log"
    RC[$t]=75
    lim 300 "$t" || continue
    timeout "$TO" "$PACK/$t" 2>&1 | tee "/tmp/gpu_check_$t.log"
    RC[$t]=${PIPESTATUS[0]}
done
# --sanitize: the same tests (the quick tile set) under compute-sanitizer's memcheck and
# racecheck, which see what the CPU emulator cannot (out-of-bounds device accesses, shared-memory
# races between real threads). Minutes, so not by default.
if [ "${1:-}" = "--sanitize" ]; then
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null)
    for tool in memcheck racecheck; do
        echo "== compute-sanitizer --tool $tool"
        : > "/tmp/gpu_check_sanitize-$tool.log"
        if [ -z "$CS" ]; then
            echo "gpu_check: no compute-sanitizer here"
            RC["sanitize-$tool"]=77
            continue
        fi
        for t in "${TESTS[@]}"; do
            RC["sanitize-$tool"]=75
            lim 400 "compute-sanitizer $tool" || continue
            SBMT_ATTN_TILES_QUICK=1 timeout "$TO" "$CS" --tool "$tool" --error-exitcode 3 \
                "$PACK/$t" 2>&1 | tail -n 30 | tee "/tmp/gpu_check_sanitize-$tool.log"
            RC["sanitize-$tool"]=${PIPESTATUS[0]}
        done
    done
    TESTS+=(sanitize-memcheck sanitize-racecheck)
fi
: > /tmp/gpu_check_bench.log
for shape in "--dh 64 --heads 8" "--dh 32 --heads 2"; do
    echo "== attention benchmark: $shape"
    for prec in fp32 tf32 bf16; do
        lim 120 "attention $prec $shape" || continue
        timeout "$TO" "$PACK/bench_attn_gpu" --precision $prec $shape 2>&1 |
            tee -a /tmp/gpu_check_bench.log
    done
    lim 60 "attention rowwise $shape" &&
        timeout "$TO" "$PACK/bench_attn_gpu" --rowwise --max-n 4096 $shape 2>&1 |
        tee -a /tmp/gpu_check_bench.log
    if python3 -c "import torch; assert torch.cuda.is_available()" 2> /dev/null; then
        lim 120 "SDPA $shape" &&
            timeout "$TO" python3 bench/torch_sdpa.py $shape 2>&1 | tee -a /tmp/gpu_check_bench.log
    else
        echo "gpu_check: no PyTorch with CUDA: SDPA comparison not run"
    fi
done
: > /tmp/gpu_check_sbm.log
for shape in "--dh 64 --heads 8" "--dh 32 --heads 2"; do
    echo "== SBM sampled tiles: $shape"
    for prec in fp32 tf32; do
        lim 120 "SBM tiles $prec $shape" || continue
        timeout "$TO" "$PACK/bench_sbm_paths" tiles --backend cuda --n 1024 --batch 16 \
            --clusters 32 --precision $prec $shape 2>&1 | tee -a /tmp/gpu_check_sbm.log
    done
done
for kc in 32 128; do
    echo "== SBM paths against density: k $kc"
    lim 150 "SBM paths k $kc" || continue
    timeout "$TO" "$PACK/bench_sbm_paths" density --backend cuda --n 4096 --batch 8 --heads 2 \
        --dh 32 --clusters $kc 2>&1 | tee -a /tmp/gpu_check_sbm.log
done
# A training step of the reference listops model (batch 32, n = 2048, lengths 500..2000) with
# softmax and with SBM attention: sbmt on cuda in fp32, tf32 and bf16, then the same model in
# PyTorch
# on the same GPU (explicit attention as the reference code, SDPA, and the authors' dense SBM),
# fp32 and bf16 autocast.
echo "== training step: listops reference model, softmax attention"
W=$(mktemp -d /tmp/gpu_check_train.XXXXXX)
TRAIN_FAIL=0
: > /tmp/gpu_check_train.log
if ! lim 60 "training data"; then
    TRAIN_FAIL=1
elif timeout "$TO" "$PACK/sbmt" data listops --out "$W/lo.h5" --train 1024 --dev 64 --test 64 \
        --seq-len 2048 --min-len 500 --max-len 2000 --seed 1 --quiet; then
    for run in softmax:fp32 softmax:tf32 softmax:bf16 sbm:fp32 sbm:tf32 sbm:bf16; do
        att=${run%%:*} prec=${run##*:}
        lim 150 "training step sbmt $att $prec" || continue
        timeout "$TO" "$PACK/sbmt" train --config configs/listops.ini --data "$W/lo.h5" \
            --out "$W/run-$att-$prec" --set model.attention=$att --set train.backend=cuda \
            --set train.precision=$prec --set train.batch_size=32 --set train.steps=40 \
            --set train.warmup=5 --set train.log_every=10 --set train.eval_every=0 \
            --set train.tensorboard=false > "$W/train-$att-$prec.log" 2>&1
        rc=$?
        [ $rc = 0 ] || TRAIN_FAIL=1
        tail -n 4 "$W/train-$att-$prec.log"
        tps=$(grep '"split":"train"' "$W/run-$att-$prec/metrics.jsonl" 2> /dev/null | tail -n 3 |
              sed 's/.*"tokens_per_s":\([0-9.]*\).*/\1/' | awk '{s += $1} END {if (NR) printf "%.0f", s / NR}')
        echo "sbmt cuda $att $prec: exit $rc, tokens/s ${tps:-n/a} (mean of the last 3 log lines)" |
            tee -a /tmp/gpu_check_train.log
    done
else
    echo "gpu_check: sbmt data listops failed" | tee -a /tmp/gpu_check_train.log
    TRAIN_FAIL=1
fi
if python3 -c "import torch; assert torch.cuda.is_available()" 2> /dev/null; then
    for flags in "" "--bf16" "--sdpa" "--sdpa --bf16" "--attention sbm" "--attention sbm --bf16"; do
        lim 120 "training step pytorch ${flags:-fp32}" || continue
        out=$(timeout "$TO" python3 bench/torch_listops.py --device cuda --batch 32 --steps 10 \
              --warmup-steps 3 $flags 2>&1 | tail -n 1)
        tps=$(python3 -c 'import json,sys; print("%.0f" % json.loads(sys.argv[1])["tokens_per_s"])' \
              "$out" 2> /dev/null)
        echo "pytorch cuda ${flags:-(explicit fp32)}: tokens/s ${tps:-n/a}" | tee -a /tmp/gpu_check_train.log
        [ -n "$tps" ] || echo "  $out"
    done
fi
rm -rf "$W"
echo
echo "== summary"
printf "%-22s %-8s %s\n" check status detail
fail=0
for t in "${TESTS[@]}"; do
    case ${RC[$t]} in
    0) st=passed ;;
    77) st=skipped ;;
    75) st="not run"; fail=1 ;;
    *) st="FAILED(${RC[$t]})"; fail=1 ;;
    esac
    printf "%-22s %-8s %s\n" "$t" "$st" "$(grep -c 'relative error' "/tmp/gpu_check_$t.log") cases"
done
grep "relative error" /tmp/gpu_check_test_backend_ops.log | sed 's/^/  /'
echo "attention (fwd+bwd TFLOP/s by n):"
grep -E "^#|^ +[0-9]+ " /tmp/gpu_check_bench.log | sed 's/^/  /'
echo "SBM attention (tiles by n; paths by density, crossover):"
grep -E "^#|^ +[0-9.]+ " /tmp/gpu_check_sbm.log | sed 's/^/  /'
echo "training step:"
sed 's/^/  /' /tmp/gpu_check_train.log
[ "$TRAIN_FAIL" = 0 ] || echo "gpu_check: a training step failed (see above)"
echo "time: $((SECONDS - T_START)) s of a ${BUDGET} s budget"
if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo "skipped for time (${#SKIPPED[@]}):"
    printf '  %s\n' "${SKIPPED[@]}"
fi
exit $((fail || TRAIN_FAIL))
