// Fisher merging: per element, sum_i c_i (F_i + eps) theta_i / sum_i c_i (F_i + eps); see fisher.h.
#include "recall/merge/fisher.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernel_io.h"
#include "recall/util/error.h"

namespace recall {

namespace {

using namespace kernel;

template <typename Acc>
void fisher_impl(const std::vector<TensorView>& models, const std::vector<const float*>& fisher,
                 const std::vector<double>& scales, double epsilon, uint64_t numel, DType out_dtype, void* out) {
  const size_t m = models.size();
  const Acc eps = static_cast<Acc>(epsilon);
  std::vector<Acc> c(m);
  for (size_t i = 0; i < m; ++i) c[i] = static_cast<Acc>(scales[i]);
  std::vector<Acc> num(kChunk), den(kChunk), theta(kChunk);
  for (uint64_t begin = 0; begin < numel; begin += kChunk) {
    const uint64_t n = std::min(kChunk, numel - begin);
    std::fill(num.begin(), num.begin() + n, Acc(0));
    std::fill(den.begin(), den.begin() + n, Acc(0));
    for (size_t i = 0; i < m; ++i) {
      load_piece(models[i], begin, n, theta.data());
      const float* f = fisher[i] + begin;
      for (uint64_t j = 0; j < n; ++j) {
        const Acc w = c[i] * (static_cast<Acc>(f[j]) + eps);
        num[j] += w * theta[j];
        den[j] += w;
      }
    }
    for (uint64_t j = 0; j < n; ++j) num[j] /= den[j];
    store_piece(num.data(), begin, n, out_dtype, out);
  }
}

}  // namespace

std::vector<double> fisher_model_scales(size_t models, const std::vector<double>& lambdas,
                                        const std::vector<double>& fisher_norms, double epsilon) {
  if (models == 0) fail("Fisher merging: no models");
  if (!lambdas.empty() && lambdas.size() != models)
    fail("Fisher merging: ", lambdas.size(), " scaling coefficients for ", models, " models");
  if (!fisher_norms.empty() && fisher_norms.size() != models)
    fail("Fisher merging: ", fisher_norms.size(), " Fisher norms for ", models, " models");
  std::vector<double> c(models);
  for (size_t i = 0; i < models; ++i) {
    c[i] = lambdas.empty() ? 1.0 / static_cast<double>(models) : lambdas[i];
    if (!std::isfinite(c[i])) fail("Fisher merging: model ", i, "'s scaling coefficient is ", c[i]);
  }
  if (fisher_norms.empty()) return c;
  std::vector<double> inv(models);
  double sum = 0;
  for (size_t i = 0; i < models; ++i) {
    if (!(fisher_norms[i] >= 0 && std::isfinite(fisher_norms[i])))
      fail("Fisher merging: model ", i, "'s Fisher norm is ", fisher_norms[i], "; expected a finite value >= 0");
    inv[i] = 1.0 / (fisher_norms[i] + epsilon);
    sum += inv[i];
  }
  for (size_t i = 0; i < models; ++i) c[i] *= inv[i] / sum;
  return c;
}

void merge_fisher(const std::vector<TensorView>& models, const std::vector<const float*>& fisher,
                  const std::vector<double>& scales, double epsilon, uint64_t numel, DType out_dtype, void* out) {
  if (models.empty()) fail("Fisher merging: no models");
  if (fisher.size() != models.size() || scales.size() != models.size())
    fail("Fisher merging: ", models.size(), " models, ", fisher.size(), " Fisher arrays and ", scales.size(),
         " scales; expected one of each per model");
  for (size_t i = 0; i < fisher.size(); ++i)
    if (!fisher[i] && numel > 0) fail("Fisher merging: model ", i, " has no Fisher values");
  if (!(epsilon >= 0 && std::isfinite(epsilon)))
    fail("Fisher merging: minimal Fisher weight = ", epsilon, "; expected a finite value >= 0");
  with_accumulator(out_dtype, models, [&](auto acc) {
    fisher_impl<decltype(acc)>(models, fisher, scales, epsilon, numel, out_dtype, out);
  });
}

}  // namespace recall
