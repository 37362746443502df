// Sparsification masks of the task-vector methods: TIES's top-k, Model Breadcrumbs' magnitude
// band, DELLA's ranked random drop (see recall/merge/sparsify.h and docs/ALGORITHM.md).
#include "recall/merge/sparsify.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernel_io.h"
#include "recall/util/error.h"

namespace recall {

template <typename K>
std::vector<char> rank_interval_mask(const std::vector<K>& key, uint64_t lo, uint64_t hi) {
  const uint64_t n = key.size();
  std::vector<char> mask(n, 0);
  hi = std::min(hi, n);
  if (lo >= hi) return mask;
  // The keys of ranks lo and hi - 1; every element strictly between them is kept, and of the
  // elements equal to either, the ones whose (key, index) rank falls inside.
  std::vector<K> sorted = key;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<int64_t>(lo), sorted.end());
  const K vlo = sorted[lo];
  std::nth_element(sorted.begin() + static_cast<int64_t>(lo), sorted.begin() + static_cast<int64_t>(hi - 1),
                   sorted.end());
  const K vhi = sorted[hi - 1];
  sorted = std::vector<K>();
  uint64_t below_lo = 0, below_hi = 0;
  for (const K& x : key) {
    below_lo += x < vlo;
    below_hi += x < vhi;
  }
  uint64_t seen_lo = 0, seen_hi = 0;
  for (uint64_t j = 0; j < n; ++j) {
    const K x = key[j];
    if (x < vlo || x > vhi) continue;
    uint64_t rank;
    if (x == vlo)
      rank = below_lo + seen_lo++;
    else if (x == vhi)
      rank = below_hi + seen_hi++;
    else
      rank = lo;  // strictly between: inside
    mask[j] = rank >= lo && rank < hi;
  }
  return mask;
}
template std::vector<char> rank_interval_mask<float>(const std::vector<float>&, uint64_t, uint64_t);
template std::vector<char> rank_interval_mask<double>(const std::vector<double>&, uint64_t, uint64_t);

namespace {

// |v| as float32, mergekit's sort key on the CPU (`tensor.abs().float()`).
template <typename T>
std::vector<float> float_magnitudes(const std::vector<T>& v, bool negate) {
  std::vector<float> m(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const float a = std::fabs(static_cast<float>(v[i]));
    m[i] = negate ? -a : a;
  }
  return m;
}

}  // namespace

template <typename T>
std::vector<char> magnitude_mask(const std::vector<T>& v, double density) {
  const uint64_t n = v.size();
  if (density >= 1) return std::vector<char>(n, 1);
  if (density <= 0 || n == 0) return std::vector<char>(n, 0);
  const uint64_t k = std::max<uint64_t>(1, static_cast<uint64_t>(density * static_cast<double>(n)));
  // Descending magnitude with ties by lowest index = ascending (-|v|, index).
  return rank_interval_mask(float_magnitudes(v, true), 0, k);
}
template std::vector<char> magnitude_mask<float>(const std::vector<float>&, double);
template std::vector<char> magnitude_mask<double>(const std::vector<double>&, double);

template <typename T>
std::vector<char> magnitude_outlier_mask(const std::vector<T>& v, double density, double gamma) {
  const uint64_t n = v.size();
  if (density >= 1) return std::vector<char>(n, 1);
  const auto target = static_cast<uint64_t>(std::max(0.0, density) * static_cast<double>(n));
  const auto top = static_cast<uint64_t>(std::max(0.0, gamma) * static_cast<double>(n));
  const uint64_t bottom = n > target + top ? n - target - top : 0;
  return rank_interval_mask(float_magnitudes(v, false), bottom, bottom + target);
}
template std::vector<char> magnitude_outlier_mask<float>(const std::vector<float>&, double, double);
template std::vector<char> magnitude_outlier_mask<double>(const std::vector<double>&, double, double);

template <typename T>
std::vector<char> della_mask(const std::vector<T>& v, uint64_t row_length, double density, double epsilon,
                             uint64_t stream) {
  const uint64_t n = v.size();
  if (density >= 1) return std::vector<char>(n, 1);
  if (density <= 0 || n == 0) return std::vector<char>(n, 0);
  if (!(density - epsilon > 0 && density + epsilon < 1))
    fail("merge: DELLA needs density - epsilon and density + epsilon in (0, 1); got density ", density,
         ", epsilon ", epsilon);
  const uint64_t cols = row_length == 0 || row_length > n ? n : row_length;
  if (n % cols != 0) fail("merge: DELLA rows of ", cols, " elements do not tile a tensor of ", n);
  std::vector<char> mask(n, 0);
  std::vector<uint32_t> order(cols);
  for (uint64_t row = 0; row < n; row += cols) {
    const T* r = v.data() + row;
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(),
                     [r](uint32_t a, uint32_t b) { return std::fabs(r[a]) < std::fabs(r[b]); });
    for (uint64_t rank = 0; rank < cols; ++rank) {
      const uint64_t j = row + order[rank];
      const double rank_norm = cols > 1 ? static_cast<double>(rank) / static_cast<double>(cols - 1) : 0.5;
      const double p = (density - epsilon) + rank_norm * 2 * epsilon;
      mask[j] = kernel::stream_uniform(stream, j) < p;
    }
  }
  return mask;
}
template std::vector<char> della_mask<float>(const std::vector<float>&, uint64_t, double, double, uint64_t);
template std::vector<char> della_mask<double>(const std::vector<double>&, uint64_t, double, double, uint64_t);

}  // namespace recall
