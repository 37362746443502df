// AIM: merged = base + (merged - base) (1 - I_j (1 - omega)) per input channel j; see aim.h.
#include "recall/merge/aim.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernel_io.h"
#include "recall/util/error.h"

namespace recall {

namespace {

using namespace kernel;

template <typename Acc>
void aim_impl(const TensorView& base, DType merged_dtype, void* merged, const std::vector<double>& importance,
              double omega, uint64_t row_length, uint64_t first, uint64_t numel) {
  std::vector<Acc> keep(row_length);  // the factor on channel j's delta
  for (uint64_t j = 0; j < row_length; ++j) keep[j] = static_cast<Acc>(1.0 - importance[j] * (1.0 - omega));
  const TensorView merged_view{merged_dtype, merged};
  std::vector<Acc> b(kChunk), m(kChunk);
  for (uint64_t begin = 0; begin < numel; begin += kChunk) {
    const uint64_t n = std::min(kChunk, numel - begin);
    load_piece(base, begin, n, b.data());
    load_piece(merged_view, begin, n, m.data());
    uint64_t j = (first + begin) % row_length;
    for (uint64_t e = 0; e < n; ++e) {
      m[e] = b[e] + (m[e] - b[e]) * keep[j];
      if (++j == row_length) j = 0;
    }
    store_piece(m.data(), begin, n, merged_dtype, merged);
  }
}

}  // namespace

std::vector<double> aim_channel_importance(const std::vector<double>& abs_sum, int64_t tokens) {
  if (tokens < 0) fail("AIM: token count ", tokens, " is negative");
  std::vector<double> importance(abs_sum.size(), 0.0);
  if (tokens == 0) return importance;
  double largest = 0;
  for (size_t j = 0; j < abs_sum.size(); ++j) {
    if (!(abs_sum[j] >= 0 && std::isfinite(abs_sum[j])))
      fail("AIM: the sum of |x| of input channel ", j, " is ", abs_sum[j], "; expected a finite value >= 0");
    importance[j] = abs_sum[j] / static_cast<double>(tokens);
    largest = std::max(largest, importance[j]);
  }
  if (largest == 0) return std::vector<double>(abs_sum.size(), 0.0);
  for (double& v : importance) v /= largest;
  return importance;
}

void apply_aim(TensorView base, DType merged_dtype, void* merged, const std::vector<double>& importance,
               double omega, uint64_t row_length, uint64_t first, uint64_t numel) {
  if (!(omega >= 0 && omega <= 1)) fail("AIM: omega = ", omega, "; expected a value in [0, 1]");
  if (row_length == 0) fail("AIM: the row length is 0");
  if (importance.size() != row_length)
    fail("AIM: ", importance.size(), " channel importances for rows of ", row_length, " elements");
  for (uint64_t j = 0; j < row_length; ++j)
    if (!(importance[j] >= 0 && importance[j] <= 1))
      fail("AIM: input channel ", j, "'s importance is ", importance[j], "; expected a value in [0, 1]");
  if (numel == 0) return;
  if (!merged) fail("AIM: the merged tensor has no data");
  with_accumulator(merged_dtype, {base}, [&](auto acc) {
    aim_impl<decltype(acc)>(base, merged_dtype, merged, importance, omega, row_length, first, numel);
  });
}

}  // namespace recall
