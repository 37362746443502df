// k-means of the typical samples at scale: N x H float rows (sums of a few fixed directions plus
// noise, like pooled hidden states), K clusters, the default 100 iterations at most; prints the
// seconds of seeding + Lloyd and the bytes beside the matrix.
//   build/bin/bench_kmeans [N=1000000] [H=64] [K=32]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "recall/merge/typical.h"

using namespace recall;

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1000000, h = argc > 2 ? std::atoll(argv[2]) : 64,
                k = argc > 3 ? std::atoll(argv[3]) : 32;
  PortableRng rng(1);
  std::vector<float> dirs(static_cast<size_t>(16 * h));
  for (float& d : dirs) d = static_cast<float>(rng.uniform() * 2 - 1);
  std::vector<float> x(static_cast<size_t>(n * h));
  for (int64_t i = 0; i < n; ++i) {
    const float* d = &dirs[static_cast<size_t>((i * 7919) % 16 * h)];
    for (int64_t j = 0; j < h; ++j) x[i * h + j] = d[j] + static_cast<float>(rng.uniform() - 0.5);
  }
  KMeansOptions o;
  o.clusters = k;
  const auto t0 = std::chrono::steady_clock::now();
  const KMeansResult r = kmeans(x.data(), n, h, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("k-means: N=%lld H=%lld K=%lld: %lld iterations (converged %d) in %.2f s (%.3f s/iteration); matrix %.1f MB, "
              "k-means buffers <= %.1f MB\n",
              static_cast<long long>(n), static_cast<long long>(h), static_cast<long long>(k),
              static_cast<long long>(r.iterations), r.converged ? 1 : 0, s, s / std::max<int64_t>(1, r.iterations + 1),
              static_cast<double>(x.size()) * 4 / 1e6, static_cast<double>(kmeans_work_bytes(n, h, k)) / 1e6);
  return 0;
}
