#!/usr/bin/env bash
# The main job on a fresh machine: install, build, generate ListOps and train configs/listops-small.ini
# on the CPU to a test accuracy (progress on stdout, metrics in runs/listops-small/metrics.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
# --overwrite: running the demo again replaces its earlier run
exec build/sbmt train --config configs/listops-small.ini --out runs/listops-small --overwrite "$@"
