#!/usr/bin/env bash
# Prints the path of a Python that can import TensorBoard's reader (PyPI `tensorboard`), for
# tests/test_tensorboard.sh. Uses SBMT_TB_PYTHON or a python3 that already has it; otherwise
# makes a virtual environment under build/tbvenv (once) and installs tensorboard from PyPI.
# Exits 1 with a message on stderr when none can be had.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
has_tb() { "$1" -c "from tensorboard.backend.event_processing import event_accumulator" \
             >/dev/null 2>&1; }
for py in "${SBMT_TB_PYTHON:-}" "$SRC/build/tbvenv/bin/python" python3; do
    [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 && has_tb "$py" && { command -v "$py"; exit 0; }
done
V=$SRC/build/tbvenv
BASE=$(command -v python3 || true)
[ -n "$BASE" ] || { echo "tb_python: no python3 on PATH" >&2; exit 1; }
mkdir -p "$SRC/build"
rm -rf "$V"
if ! "$BASE" -m venv "$V" >/dev/null 2>&1; then
    echo "tb_python: '$BASE -m venv' failed (Debian: apt-get install python3-venv)" >&2
    exit 1
fi
if ! "$V/bin/pip" install -q --disable-pip-version-check tensorboard >"$V.log" 2>&1; then
    echo "tb_python: pip install tensorboard failed (no PyPI?):" >&2
    tail -n 5 "$V.log" >&2
    exit 1
fi
has_tb "$V/bin/python" || { echo "tb_python: tensorboard installed but does not import" >&2; exit 1; }
echo "$V/bin/python"
