"""scripts/gpu_check.sh is run only on a lent GPU machine, once, with minutes to spare: a source
list that a refactor broke (a file moved, a function moved to another file) would cost that run.
This builds its nvcc target here (`--build-only`: the fused CUDA merge kernel, the CPU kernels it is
compared with, and bench_merge_cuda), wherever nvcc is installed; the CUDA toolkit is on the dev
and CI machines, which have no GPU to run it."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks  # noqa: E402

SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))


def main():
    check = Checks()
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not os.path.exists(nvcc):
        print(f"skip: no nvcc ({nvcc}); the CUDA toolkit is not installed here")
        return 0
    p = subprocess.run(["bash", "scripts/gpu_check.sh", "--build-only"], cwd=SRC, capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, NVCC=nvcc))
    tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-8:])
    check(p.returncode == 0 and "built " in p.stdout, f"scripts/gpu_check.sh --build-only links bench_merge_cuda\n{tail}")
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
