#!/usr/bin/env bash
# Installs what is missing, builds recall (Release) into build/, and runs every test with ctest:
# unit, MPI (1, 2 and 4 ranks), Python reference parity, fuzz. Exits non-zero on any failure.
# Pass ctest arguments to narrow the run, e.g. scripts/test.sh -L unit
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$here/scripts/setup.sh"
recall_build
cd "$here/build"
ctest --output-on-failure --timeout 1200 -j "$(nproc)" "$@"
