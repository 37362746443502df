// RegMean's solve of one linear weight (merge/regmean.h) at a given shape: `models` float64 Gram
// matrices [in, in] (diagonally dominant, symmetric, generated row by row as they are read, as the
// merge reads its Gram files) and bf16 weights [out, in], merged to bf16
// the way the merge loop calls it (Gram rows read in blocks, `threads` of recall's threads each
// calling a one-thread BLAS; the merge uses the rank's usable CPUs). Prints the seconds, the GFLOP/s
// of the products and the factorization, and the BLAS the process loaded.
// bench/regmean_vs_torch.py runs it beside fusion-bench's formula in torch.
//   build/bin/bench_regmean [out=4096] [in=4096] [models=3] [threads=usable CPUs]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "recall/merge/linalg.h"
#include "recall/merge/regmean.h"
#include "recall/util/cpus.h"
#include "recall/util/dtype.h"
#include "recall/util/rng.h"

using namespace recall;

int main(int argc, char** argv) {
  const uint64_t out = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 4096;
  const uint64_t in = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 4096;
  const size_t models = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 3;
  const int threads = argc > 4 ? std::atoi(argv[4]) : usable_cpus();
  // Gram rows are computed as they are read (symmetric, diagonally dominant, different per model),
  // so that a 70B down_proj (in 28672: 6.6 GB per Gram) needs no Gram in memory beside the sum.
  auto gram = [in](size_t m, uint64_t i, uint64_t j) {
    const uint64_t lo = std::min(i, j), hi = std::max(i, j);
    if (lo == hi) return 2.0 + 0.1 * static_cast<double>(m) + static_cast<double>((lo * 2654435761u) % 1000) / 1000;
    return (static_cast<double>((lo * 7919 + hi * 104729 + m * 31) % 2000) / 2000 - 0.5) / static_cast<double>(in);
  };
  PortableRng rng(3);
  std::vector<std::vector<uint16_t>> weights(models, std::vector<uint16_t>(out * in));
  for (size_t m = 0; m < models; ++m)
    for (uint16_t& w : weights[m]) w = float_to_bf16(static_cast<float>(rng.uniform() - 0.5) * 0.05f);
  RegMeanInputs ri;
  for (size_t m = 0; m < models; ++m) ri.weights.push_back(TensorView{DType::BF16, weights[m].data()});
  ri.gram_rows = [&](size_t m, uint64_t r0, uint64_t n, double* dst) {
    for (uint64_t i = 0; i < n; ++i)
      for (uint64_t j = 0; j < in; ++j) dst[i * in + j] = gram(m, r0 + i, j);
  };
  ri.out = out;
  ri.in = in;
  ri.threads = threads;
  std::vector<uint16_t> merged(out * in);
  const auto t0 = std::chrono::steady_clock::now();
  const RegMeanResult r = merge_regmean(ri, DType::BF16, merged.data());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string kernels = linalg::blas_kernels();
  const std::string blas = linalg::blas_library() + (kernels.empty() ? "" : " " + kernels);
  const double flops = static_cast<double>(models) * 2.0 * in * in * out + in * in * (in / 3.0) + 2.0 * in * in * out;
  std::printf("regmean solve: out=%llu in=%llu models=%zu: %.2f s, %.1f GFLOP/s (%s, %d thread(s)), rcond %.3g, work %.1f MB\n",
              static_cast<unsigned long long>(out), static_cast<unsigned long long>(in), models, s, flops / s / 1e9,
              blas.c_str(), threads, r.rcond,
              static_cast<double>(regmean_work_bytes(out, in, models)) / 1e6);
  return 0;
}
