#!/usr/bin/env bash
# A softmax model trained by sbmt, loaded into PyTorch with h5py and a name map
# (tests/torch_crosscheck.py), must give the test-split accuracy and loss that `sbmt eval` gives.
# Skips (77) where Debian's python3-torch/h5py are not installed, except in CI, where it fails.
set -euo pipefail
PY=/usr/bin/python3
# In CI (CI set) a missing PyTorch is a failure: the layout check must never be skipped there.
if ! $PY -c "import torch, h5py" 2>/dev/null; then
    echo "python3-torch/h5py not installed (bash launch/install_deps.sh installs them)"
    [ -n "${CI:-}" ] && exit 1
    echo "skipped"
    exit 77
fi
BIN=${SBMT_BIN:?}
SRC=${SBMT_SOURCE_DIR:?}
W=$(mktemp -d /tmp/sbmt_crosscheck_XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
"$BIN" data listops --out lo.h5 --train 600 --dev 20 --test 200 --min-len 10 --max-len 60 \
    --seq-len 64 --seed 4 --quiet > /dev/null
"$BIN" train --data lo.h5 --out run --threads 1 --set model.attention=softmax \
    --set data.seq_len=64 --set train.batch_size=16 --set train.steps=60 --set train.warmup=5 \
    --set train.lr=2e-3 --set train.eval_every=0 --set train.log_every=60 > train.log
S=$("$BIN" eval --ckpt run/final.h5 --data lo.h5 --split test --json | tail -1)
T=$(OMP_NUM_THREADS=1 $PY "$SRC/tests/torch_crosscheck.py" run/final.h5 lo.h5 test)
echo "sbmt:    $S"
echo "pytorch: $T"
$PY - "$S" "$T" <<'PYEOF'
import json, sys
s, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert s["rows"] == t["rows"], (s, t)
assert abs(s["accuracy"] - t["accuracy"]) < 1e-9, ("accuracy differs", s, t)
assert abs(s["loss"] - t["loss"]) < 1e-4 * max(1.0, abs(t["loss"])), ("loss differs", s, t)
print("1 passed, 0 failed")
PYEOF
