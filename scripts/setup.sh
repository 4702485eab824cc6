#!/usr/bin/env bash
# Installs every Debian package the project needs. Idempotent: packages that
# are already installed are left alone, and apt is not touched at all when
# nothing is missing. Runs as root, or through sudo otherwise.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake pkgconf git
  clang libclang-rt-14-dev          # fuzz targets (libFuzzer) and the sanitizer test build
  # libraries
  libuv1-dev libmsgpack-cxx-dev libboost-dev librocksdb-dev libssl-dev
  libspdlog-dev libcli11-dev libtomlplusplus-dev
  libjemalloc-dev                   # dynamo-node's and dynamo-bench's allocator
  # Python bindings and their tests
  pybind11-dev python3-dev python3-pytest python3-mypy
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # process tests: ip netns for partitions, nft for one-way ones
  iproute2 procps nftables
  # dynamo-bench: the Redis and etcd peers it is compared with, its plots
  libhiredis-dev redis-server etcd-server gnuplot-nox
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "setup: missing packages (${missing[*]}) and neither root nor sudo is available" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
