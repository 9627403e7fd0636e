#!/usr/bin/env bash
# Installs what sbmt needs (launch/install_deps.sh) and builds it into build/ (binary build/sbmt).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install_deps.sh "$@"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >build.log.tmp 2>&1 || { cat build.log.tmp; rm -f build.log.tmp; exit 1; }
rm -f build.log.tmp
cmake --build build -j"$(nproc)"
