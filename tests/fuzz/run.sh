#!/usr/bin/env bash
# Fuzzing: builds the libFuzzer targets of tests/fuzz/ (clang, ASan + UBSan, build-fuzz/), makes
# their seed corpora, and runs each for SECONDS (default 20: the smoke run of the test command;
# longer on demand: bash tests/fuzz/run.sh 600). Prints each target's executions; a crash, hang,
# leak or failed property stops with the reproducer's path (build-fuzz/artifacts/).
# SBMT_FUZZ_SEED fixes libFuzzer's random seed (the test command's smoke runs use 1, so CI
# explores the same inputs each time; on-demand runs draw a new seed).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-20}
TARGETS=(config dataset ckpt import_listops import_imdb import_retrieval import_cifar
         import_pathfinder)
command -v clang > /dev/null || { echo "fuzz: clang not found (launch/install_deps.sh installs it)" >&2; exit 1; }
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DSBMT_FUZZ=ON -DSBMT_CUDA=OFF \
    > build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
rm -f build-fuzz.log
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]/#/fuzz_}" > /dev/null
S=build-fuzz/seeds
rm -rf "$S" && mkdir -p "$S" build-fuzz/artifacts
python3 - "$S" << 'PY'
import os, struct, sys, zlib
S = sys.argv[1]
def put(target, name, data):
    os.makedirs(f"{S}/{target}", exist_ok=True)
    open(f"{S}/{target}/{name}", "wb").write(data)
for f in sorted(os.listdir("configs")):
    put("config", f, open(f"configs/{f}", "rb").read())
put("config", "set", b"train.lr=1e-3\n[model]\nheads = 4\n")
for i, flags in enumerate([0xFFFFFFFF, 0x0000FFFF, 0x00007FFF, 0x12345678]):
    put("dataset", f"s{i}", struct.pack(">I", flags) + bytes(range(256)) * 2)
    put("ckpt", f"s{i}", struct.pack(">I", flags) + bytes([1, 3, 5, 7]) * 120)
lo = b"Source\tTarget\n( [MAX 2 9 ] )\t9\n[MIN 3 ( [SM 1 2 ] ) ]\t3\n"
put("import_listops", "s0", lo + b"\xff" + lo + b"\xff" + lo)
put("import_imdb", "s0", b"a great film\xffboring\xffnot bad at all\xffworst ever\xffok\xffyes")
aan = b"1\tP1\tP2\tgraphs are sparse\tattention\n0.0\tA\tB\tx y\tz\n"
put("import_retrieval", "s0", aan + b"\xff" + aan + b"\xff" + aan)
put("import_cifar", "s0", bytes([1, 1, 1, 1, 1, 2]) + bytes(range(200)))
def png(w, h, px):
    raw = b"".join(b"\x00" + bytes(px[y * w:(y + 1) * w]) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
meta = b"imgs/0 sample_0.png 0 1\nimgs/0 sample_1.png 0 0\n"
put("import_pathfinder", "s0", meta + b"\xff" + png(32, 32, [i % 256 for i in range(1024)])
    + b"\xff" + png(32, 32, [255 - i % 256 for i in range(1024)]))
PY
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1
for t in "${TARGETS[@]}"; do
    mkdir -p "build-fuzz/corpus/$t"
    log=build-fuzz/fuzz_$t.log
    if ! "build-fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix=build-fuzz/artifacts/"$t"- \
        ${SBMT_FUZZ_SEED:+-seed=$SBMT_FUZZ_SEED} \
        "build-fuzz/corpus/$t" "$S/$t" > "$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $t FAILED: reproducer in build-fuzz/artifacts/ (run build-fuzz/fuzz_$t FILE)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    printf "fuzz_%-18s %8s executions in %ss, %s, corpus %s\n" "$t" "$runs" "$SECONDS_EACH" \
        "$cov" "$(ls "build-fuzz/corpus/$t" | wc -l)"
done
echo "fuzz: ${#TARGETS[@]} passed, 0 failed"
