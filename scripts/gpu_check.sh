#!/usr/bin/env bash
# GPU checks of issue 8, for a lent GPU machine (one short run; see ../shared/device/README.md).
# Builds the fused CUDA merge kernel with its benchmark straight with nvcc (no HDF5/MPI needed:
# the kernel, the CPU reference kernel and the dtype code are self-contained), then runs
#   1. bench_merge_cuda: bitwise equality with the CPU kernel, kernel GB/s vs device copy GB/s;
#   2. bench/gpu_weighted_sum.py: PyTorch eager and torch.compile of the same sum, side by side.
# Usage: bash scripts/gpu_check.sh [OUT_DIR]      (writes OUT_DIR/gpu_check.txt; default $OUT or .)
#        bash scripts/gpu_check.sh --build-only   (only the nvcc build; tests/python/test_gpu_check.py
#                                                 runs it wherever nvcc is, so the source list stays right)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build_only=0
if [ "${1:-}" = "--build-only" ]; then build_only=1; shift; fi
out="${1:-${OUT:-.}}"
mkdir -p "$out"
log="$out/gpu_check.txt"
bin="$(mktemp -d)/bench_merge_cuda"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
python="${RECALL_PYTHON:-$(command -v python3)}"
build() {
  "$nvcc" -std=c++17 -O3 --fmad=false -Xcompiler -ffp-contract=off -DRECALL_HAVE_CUDA_MERGE=1 \
    -gencode arch=compute_90,code=sm_90 -I"$root/include" \
    "$root/src/merge/weighted_cuda.cu" "$root/src/merge/methods.cpp" "$root/src/merge/sparsify.cpp" \
    "$root/src/util/dtype.cpp" "$root/bench/bench_merge_cuda.cpp" -o "$bin"
}
if [ "$build_only" = 1 ]; then build && echo "built $bin"; exit; fi
{
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$nvcc" --version | tail -1
  echo "== build"
  build
  echo "== bench_merge_cuda"
  "$bin" || echo "bench_merge_cuda exited $?"
  echo "== gpu_weighted_sum.py"
  "$python" "$root/bench/gpu_weighted_sum.py" --bench "$bin" || echo "gpu_weighted_sum.py exited $?"
} 2>&1 | tee "$log"
