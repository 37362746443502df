"""RegMean's solve of one linear weight: recall's kernel (bench_regmean: a tiled Cholesky through
LAPACK, on 1 thread and on as many threads as torch uses, each calling a one-thread BLAS on tiles
and panels of fixed size so that the bits do not depend on the count) beside fusion-bench's formula
in torch float64 on the same shape (torch.inverse of the summed Gram matrix times the sum of
G_m W_m^T, every core torch has), run one after the other here, and recall's kernel once more on
Debian's reference BLAS (LD_LIBRARY_PATH to its directories) when it is installed. Prints seconds
and the ratio to torch.

    python bench/regmean_vs_torch.py [--out 4096] [--in 4096] [--models 3]
"""
import argparse
import os
import re
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "build", "bin", "bench_regmean")
REFERENCE_BLAS = ["/usr/lib/x86_64-linux-gnu/blas", "/usr/lib/x86_64-linux-gnu/lapack"]


def recall_seconds(out, inp, models, threads, env=None):
    p = subprocess.run([BENCH, str(out), str(inp), str(models), str(threads)], capture_output=True, text=True, check=True,
                       env=dict(os.environ, **(env or {})))
    line = p.stdout.strip()
    return float(re.search(r": ([0-9.]+) s,", line).group(1)), line


def torch_seconds(out, inp, models):
    import torch
    g = torch.Generator().manual_seed(3)
    grams, weights = [], []
    for _ in range(models):
        a = (torch.rand(inp, inp, generator=g, dtype=torch.float64) - 0.5) / inp
        a = (a + a.T) / 2
        a.diagonal().add_(2.0)
        grams.append(a)
        weights.append(((torch.rand(out, inp, generator=g) - 0.5) * 0.05).to(torch.bfloat16))
    t0 = time.time()
    # fusion_bench/method/regmean/regmean.py merging_with_regmean_weights, alpha applied first
    scaled = [x * 0.9 + torch.diag(torch.diag(x)) * 0.1 for x in grams]
    total = sum(scaled)
    products = sum(x @ w.double().T for x, w in zip(scaled, weights))
    merged = (torch.inverse(total) @ products).T.to(torch.bfloat16)
    secs = time.time() - t0
    assert merged.shape == (out, inp)
    return secs, torch.get_num_threads()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=int, default=4096)
    ap.add_argument("--in", dest="inp", type=int, default=4096)
    ap.add_argument("--models", type=int, default=3)
    a = ap.parse_args()
    import torch
    threads = torch.get_num_threads()
    one, line_one = recall_seconds(a.out, a.inp, a.models, 1)
    ours, line = recall_seconds(a.out, a.inp, a.models, threads)
    theirs, threads = torch_seconds(a.out, a.inp, a.models)
    print(line_one)
    print(line)
    print(f"torch float64 (fusion-bench's formula, {threads} threads): {theirs:.2f} s")
    print(f"recall on {threads} threads / torch: {ours / theirs:.2f}x the time; recall 1 thread / {threads} threads: "
          f"{one / ours:.2f}x")
    if all(os.path.isdir(d) for d in REFERENCE_BLAS):
        ref, line = recall_seconds(a.out, a.inp, a.models, threads, {"LD_LIBRARY_PATH": ":".join(REFERENCE_BLAS)})
        print(line)
        print(f"reference BLAS / OpenBLAS: {ref / ours:.1f}x the time")

if __name__ == "__main__":
    main()
