#!/usr/bin/env bash
# Installs the Debian packages sbmt needs to build, test and run bench/.
# Idempotent: packages already present are skipped, so both README commands can call it.
set -euo pipefail

# clang + its runtime: the libFuzzer targets (tests/fuzz/).
# python3-torch/numpy/h5py: the PyTorch cross-check of the checkpoint layout is part of the
# test command (tests/test_torch_crosscheck.sh), and the benchmarks compare against PyTorch.
pkgs=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libhdf5-openmpi-dev
      hdf5-tools libcmocka-dev libopenblas-dev libopenblas0-pthread libpng-dev
      python3-torch python3-numpy python3-h5py
      clang libclang-rt-14-dev libomp-dev)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "sbmt: missing Debian packages: ${missing[*]}" >&2
  echo "sbmt: run this script as root (sudo $0 $*) or install them with apt-get." >&2
  exit 1
fi
echo "sbmt: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
