"""The merge's weighted sum on one GPU, side by side in one run: PyTorch eager, torch.compile of
the same expression, and recall's fused CUDA kernel (build/bin/bench_merge_cuda, which also checks
its bytes against the CPU kernel), on M bf16 inputs of ROWS x COLS (default 4 x 28672 x 8192).
Prints GB/s (bytes read + written) and the ratios. Needs a CUDA device; exits 77 without one.

    python bench/gpu_weighted_sum.py [--rows 28672] [--cols 8192] [--models 4]"""
import argparse
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=28672)
    ap.add_argument("--cols", type=int, default=8192)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--bench", default=os.path.join(os.path.dirname(__file__), "../build/bin/bench_merge_cuda"))
    a = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("no CUDA device; nothing to measure")
        sys.exit(77)
    xs = [torch.randn(a.rows, a.cols, device="cuda").to(torch.bfloat16) for _ in range(a.models)]
    ws = [0.4, 0.3, 0.2, 0.1][: a.models] + [0.1] * max(0, a.models - 4)
    moved = (a.models + 1) * a.rows * a.cols * 2

    def merge(xs):
        acc = ws[0] * xs[0].float()
        for w, x in zip(ws[1:], xs[1:]):
            acc = acc + w * x.float()
        return acc.to(torch.bfloat16)

    def timed(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(a.iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / a.iters

    eager = moved / timed(lambda: merge(xs)) / 1e9
    compiled_fn = torch.compile(merge)
    comp = moved / timed(lambda: compiled_fn(xs)) / 1e9
    src = torch.empty(moved // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy = moved / timed(lambda: dst.copy_(src)) / 1e9
    print(f"{torch.cuda.get_device_name()}: {a.models} x {a.rows} x {a.cols} bf16, {moved / 1e9:.2f} GB moved per merge")
    print(f"PyTorch eager:  {eager:8.0f} GB/s")
    print(f"torch.compile:  {comp:8.0f} GB/s")
    print(f"torch copy_:    {copy:8.0f} GB/s (memory copy bandwidth)")
    del xs, src, dst
    torch.cuda.empty_cache()
    p = subprocess.run([a.bench, "--rows", str(a.rows), "--cols", str(a.cols), "--models", str(a.models),
                        "--iters", str(a.iters)], capture_output=True, text=True)
    print(p.stdout + p.stderr, end="")
    for line in p.stdout.splitlines():
        if line.startswith("fused kernel:"):
            k = float(line.split(",")[1].split()[0])
            print(f"recall fused kernel: {k:.0f} GB/s = {k / eager:.1f}x eager, {k / comp:.2f}x torch.compile, "
                  f"{k / copy:.2f}x copy (target >= 0.90x copy, >= 3,900 GB/s on an H200)")
    sys.exit(p.returncode)


if __name__ == "__main__":
    main()
