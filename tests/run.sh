#!/usr/bin/env bash
# The test command: install, build, run every ctest (cmocka) test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
ctest --test-dir build --output-on-failure -j2 "$@"
