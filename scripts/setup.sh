#!/usr/bin/env bash
# Installs what recall needs and is missing, idempotently: Debian packages (compiler tools, Open
# MPI, parallel HDF5, yaml-cpp, SentencePiece, nlohmann-json, xxHash, PCRE2 and utf8proc for the
# tokenizer, LAPACK/BLAS for RegMean, GoogleTest, clang for the fuzzers) and a Python environment
# with pinned torch (whose libtorch is our C++ libtorch), transformers, safetensors, h5py, numpy,
# mergekit and peft, kept outside the checkout in $RECALL_CACHE (default ~/.cache/recall) so
# repeated runs reuse it.
# Sourced by scripts/test.sh and scripts/demo.sh; exports RECALL_PYTHON.
set -euo pipefail

RECALL_ROOT=${RECALL_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
RECALL_CACHE=${RECALL_CACHE:-$HOME/.cache/recall}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

log() { printf '[setup] %s\n' "$*"; }

apt_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev libyaml-cpp-dev libsentencepiece-dev
  nlohmann-json3-dev libxxhash-dev libpcre2-dev libutf8proc-dev libgtest-dev clang libclang-rt-14-dev python3-venv
  liblapack3 libblas3 libopenblas0-pthread  # RegMean's solves load liblapack.so.3 at run time; OpenBLAS becomes Debian's libblas/liblapack (docs/PERFORMANCE.md measures both)
  librsvg2-bin shellcheck  # rsvg-convert renders report.svg in a test; shellcheck lints slurm/
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# Python reference environment, pinned by scripts/requirements.lock (pip freeze of a working set).
venv="$RECALL_CACHE/venv"
lock="$RECALL_ROOT/scripts/requirements.lock"
stamp="$venv/.recall-lock.sha256"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating Python environment in $venv (torch, transformers, mergekit; a few GB, once)"
  mkdir -p "$RECALL_CACHE"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$lock"
  echo "$want" > "$stamp"
else
  log "Python environment present: $venv"
fi
nodeps="$RECALL_ROOT/scripts/requirements-nodeps.lock"
nodeps_stamp="$venv/.recall-nodeps.sha256"
want_nodeps=$(sha256sum "$nodeps" | cut -d' ' -f1)
if [ "$(cat "$nodeps_stamp" 2>/dev/null)" != "$want_nodeps" ]; then
  log "installing fusion-bench's merge functions into $venv (without its dependencies)"
  "$venv/bin/python" -m pip install -q --no-deps -r "$nodeps"
  echo "$want_nodeps" > "$nodeps_stamp"
fi
export RECALL_PYTHON="$venv/bin/python"

# Open MPI refuses to run as root unless told; oversubscription lets tests use more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# ccache keyed on paths relative to the checkout, so a fresh clone elsewhere reuses the cache.
export CCACHE_BASEDIR="$RECALL_ROOT"

# Configure and build (Release) into $RECALL_ROOT/build. The engine library finds libtorch through
# an absolute RUNPATH into the Python environment; when that environment is another one than the
# build was configured with (RECALL_CACHE moved it, say), CMake's cached torch paths would keep
# the old one, so the configuration starts afresh (ccache keeps the rebuild cheap).
recall_build() {
  local jobs torch_dir cached cache="$RECALL_ROOT/build/CMakeCache.txt"
  jobs=$(nproc)
  torch_dir=$("$RECALL_PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')/Torch
  cached=$(sed -n 's/^Torch_DIR:PATH=//p' "$cache" 2>/dev/null || true)
  if [ -n "$cached" ] && [ "$cached" != "$torch_dir" ]; then
    log "torch is now at $torch_dir, the build was configured with $cached: configuring afresh"
    rm -f "$cache"
  fi
  cmake -S "$RECALL_ROOT" -B "$RECALL_ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DRECALL_PYTHON="$RECALL_PYTHON" >"$RECALL_ROOT/build.configure.log" 2>&1 ||
    { cat "$RECALL_ROOT/build.configure.log"; return 1; }
  grep -E '^-- recall:' "$RECALL_ROOT/build.configure.log" || true
  log "building with $jobs jobs"
  cmake --build "$RECALL_ROOT/build" -j "$jobs"
}
