// Model Stock (see recall/merge/model_stock.h).
#include "recall/merge/model_stock.h"

#include <algorithm>
#include <cmath>

#include "kernel_io.h"

namespace recall {

namespace {

// Norms of the offsets d_i = w_i - w_0 (rounded to Acc, as mergekit's float32/float64 tensors)
// and their pairwise dot products over elements [row, row + len), summed in double.
template <typename Acc>
double mean_offset_cosine(const std::vector<Acc>& w0, const std::vector<std::vector<Acc>>& ws, uint64_t row,
                          uint64_t len) {
  const size_t n = ws.size();
  std::vector<double> sq(n, 0.0), dots(n * n, 0.0);
  std::vector<double> d(n);
  for (uint64_t j = row; j < row + len; ++j) {
    for (size_t i = 0; i < n; ++i) d[i] = static_cast<double>(static_cast<Acc>(ws[i][j] - w0[j]));
    for (size_t a = 0; a < n; ++a) {
      sq[a] += d[a] * d[a];
      for (size_t b = a + 1; b < n; ++b) dots[a * n + b] += d[a] * d[b];
    }
  }
  double cos_sum = 0;
  size_t pairs = 0;
  for (size_t a = 0; a < n; ++a)
    for (size_t b = a + 1; b < n; ++b, ++pairs)
      cos_sum += std::clamp(dots[a * n + b] / std::max(std::sqrt(sq[a]) * std::sqrt(sq[b]), 1e-6), -1.0, 1.0);
  return cos_sum / static_cast<double>(pairs);
}

template <typename Acc>
void model_stock_impl(const TensorView& base_v, const std::vector<TensorView>& others, uint64_t numel, uint64_t cols,
                      DType out_dtype, void* out) {
  const std::vector<Acc> w0 = kernel::load_all<Acc>(base_v, numel);
  const std::vector<std::vector<Acc>> ws = kernel::load_each<Acc>(others, numel);
  const size_t n = ws.size();
  std::vector<Acc> result(numel);
  for (uint64_t row = 0; row < numel; row += cols) {
    const uint64_t len = std::min(cols, numel - row);
    const double cos = mean_offset_cosine(w0, ws, row, len);
    const double denominator = 1 + static_cast<double>(n - 1) * cos;
    const Acc t = static_cast<Acc>(std::fabs(denominator) < 1e-6 ? 0.0 : static_cast<double>(n) * cos / denominator);
    const Acc count = static_cast<Acc>(n);
    for (uint64_t j = row; j < row + len; ++j) {
      Acc sum = 0;  // sum(ws) / count, summed in model order
      for (size_t i = 0; i < n; ++i) sum += ws[i][j];
      result[j] = t * (sum / count) + (Acc(1) - t) * w0[j];
    }
  }
  kernel::store(result.data(), 0, numel, out_dtype, out);
}

}  // namespace

void merge_model_stock(TensorView base, const std::vector<TensorView>& others, uint64_t numel, uint64_t row_length,
                       bool filter_wise, DType out_dtype, void* out) {
  if (others.size() < 2) fail("merge: model_stock needs at least 2 models besides the base; got ", others.size());
  std::vector<TensorView> all = others;
  all.push_back(base);
  const uint64_t cols = filter_wise && row_length > 0 ? row_length : std::max<uint64_t>(numel, 1);
  kernel::with_accumulator(out_dtype, all, [&](auto acc) {
    model_stock_impl<decltype(acc)>(base, others, numel, cols, out_dtype, out);
  });
}

}  // namespace recall
