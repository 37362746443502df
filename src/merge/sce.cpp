// SCE (see recall/merge/sce.h).
#include "recall/merge/sce.h"

#include <algorithm>
#include <cmath>

#include "kernel_io.h"
#include "recall/merge/sparsify.h"

namespace recall {

namespace {

// Step 1: the mask of the k elements of largest variance across the task vectors.
template <typename Acc>
std::vector<char> variance_mask(const std::vector<std::vector<Acc>>& d, uint64_t numel, double select_topk) {
  if (select_topk >= 1) return std::vector<char>(numel, 1);
  if (select_topk <= 0) return std::vector<char>(numel, 0);
  const size_t n = d.size();
  std::vector<Acc> neg_var(numel);  // keys of a descending order (ascending -var)
  uint64_t nonzero = 0;
  for (uint64_t j = 0; j < numel; ++j) {
    double mean = 0;
    for (size_t i = 0; i < n; ++i) mean += static_cast<double>(d[i][j]);
    mean /= static_cast<double>(n);
    double var = 0;
    for (size_t i = 0; i < n; ++i) var += (static_cast<double>(d[i][j]) - mean) * (static_cast<double>(d[i][j]) - mean);
    const Acc v = static_cast<Acc>(var / static_cast<double>(n));
    nonzero += v != 0;
    neg_var[j] = -v;
  }
  const auto k = static_cast<uint64_t>(static_cast<double>(nonzero) * select_topk);
  return rank_interval_mask(neg_var, 0, k);
}

template <typename Acc>
void sce_impl(const TensorView& base_v, const std::vector<TensorView>& others, uint64_t numel, double select_topk,
              DType out_dtype, void* out) {
  std::vector<Acc> result = kernel::load_all<Acc>(base_v, numel);
  const size_t n = others.size();
  if (n == 0) {
    kernel::store(result.data(), 0, numel, out_dtype, out);
    return;
  }
  std::vector<std::vector<Acc>> d = kernel::load_each<Acc>(others, numel);
  for (auto& di : d)
    for (uint64_t j = 0; j < numel; ++j) di[j] -= result[j];
  const std::vector<char> selected = variance_mask(d, numel, select_topk);
  for (auto& di : d)
    for (uint64_t j = 0; j < numel; ++j)
      if (!selected[j]) di[j] = 0;
  // Step 2: weights from the mean square of each (selected) task vector.
  std::vector<double> energy(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    energy[i] = static_cast<double>(static_cast<Acc>(kernel::dot(d[i].data(), d[i].data(), numel) /
                                                     static_cast<double>(std::max<uint64_t>(numel, 1))));
    total += energy[i];
  }
  std::vector<Acc> w(n);
  for (size_t i = 0; i < n; ++i)
    w[i] = static_cast<Acc>(std::fabs(total) < 1e-6 ? 1.0 / static_cast<double>(n) : energy[i] / total);
  // Steps 3 and 4.
  for (uint64_t j = 0; j < numel; ++j) {
    Acc sign_weight = 0;
    for (size_t i = 0; i < n; ++i) sign_weight += d[i][j];
    const int majority = sign_weight >= 0 ? 1 : -1;
    Acc merged = 0, divisor = 0;
    for (size_t i = 0; i < n; ++i) {
      const Acc x = d[i][j];
      const int sign = x > 0 ? 1 : (x < 0 ? -1 : 0);
      const Acc wi = sign == majority ? w[i] : Acc(0);
      merged += x * wi;
      divisor += wi;
    }
    result[j] += merged / std::max(divisor, static_cast<Acc>(1e-6));
  }
  kernel::store(result.data(), 0, numel, out_dtype, out);
}

}  // namespace

void merge_sce(TensorView base, const std::vector<TensorView>& others, uint64_t numel, double select_topk,
               DType out_dtype, void* out) {
  std::vector<TensorView> all = others;
  all.push_back(base);
  kernel::with_accumulator(out_dtype, all, [&](auto acc) {
    sce_impl<decltype(acc)>(base, others, numel, select_topk, out_dtype, out);
  });
}

}  // namespace recall
