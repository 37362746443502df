// NearSwap and passthrough (see recall/merge/elementwise.h), streamed in chunks.
#include "recall/merge/elementwise.h"

#include <algorithm>
#include <cmath>

#include "kernel_io.h"

namespace recall {

namespace {

template <typename Acc>
void nearswap_impl(const TensorView& a_v, const TensorView& b_v, double t_in, uint64_t numel, DType out_dtype,
                   void* out) {
  std::vector<Acc> a(kernel::kChunk), b(kernel::kChunk);
  const Acc t = static_cast<Acc>(t_in), floor_diff = static_cast<Acc>(1e-6);
  for (uint64_t begin = 0; begin < numel; begin += kernel::kChunk) {
    const uint64_t n = std::min(kernel::kChunk, numel - begin);
    kernel::load(a_v, begin, n, a.data());
    kernel::load(b_v, begin, n, b.data());
    for (uint64_t j = 0; j < n; ++j) {
      const Acc w = std::clamp(t / std::max(std::fabs(a[j] - b[j]), floor_diff), Acc(0), Acc(1));
      a[j] = w * b[j] + (Acc(1) - w) * a[j];
    }
    kernel::store(a.data(), begin, n, out_dtype, out);
  }
}

template <typename Acc>
void passthrough_impl(const TensorView& in, double scale_in, uint64_t numel, DType out_dtype, void* out) {
  std::vector<Acc> x(kernel::kChunk);
  const Acc scale = static_cast<Acc>(scale_in);
  for (uint64_t begin = 0; begin < numel; begin += kernel::kChunk) {
    const uint64_t n = std::min(kernel::kChunk, numel - begin);
    kernel::load(in, begin, n, x.data());
    if (scale_in != 1)
      for (uint64_t j = 0; j < n; ++j) x[j] *= scale;
    kernel::store(x.data(), begin, n, out_dtype, out);
  }
}

}  // namespace

void merge_nearswap(TensorView base, TensorView other, double t, uint64_t numel, DType out_dtype, void* out) {
  if (!std::isfinite(t)) fail("merge: nearswap t must be finite; got ", t);
  kernel::with_accumulator(out_dtype, {base, other}, [&](auto acc) {
    nearswap_impl<decltype(acc)>(base, other, t, numel, out_dtype, out);
  });
}

void merge_passthrough(TensorView input, double scale, uint64_t numel, DType out_dtype, void* out) {
  if (!std::isfinite(scale)) fail("merge: passthrough scale must be finite; got ", scale);
  kernel::with_accumulator(out_dtype, {input}, [&](auto acc) {
    passthrough_impl<decltype(acc)>(input, scale, numel, out_dtype, out);
  });
}

}  // namespace recall
