// NuSLERP, Multi-SLERP and the Karcher mean (see recall/merge/spherical.h). The scalars (norms,
// angles, coefficients) are computed in double and rounded to the accumulator type; the
// elementwise expressions follow mergekit's order of operations.
#include "recall/merge/spherical.h"

#include <algorithm>
#include <cmath>

#include "kernel_io.h"

namespace recall {

namespace {

using kernel::dot;
using kernel::norm2;

// One vector of a tensor: `count` elements from `start`, `stride` apart.
struct VectorSpan {
  uint64_t start, stride, count;
};

std::vector<VectorSpan> vector_spans(uint64_t rows, uint64_t cols, NuslerpVectors how) {
  std::vector<VectorSpan> out;
  if (how == NuslerpVectors::Flat || rows <= 1) {
    out.push_back({0, 1, rows * cols});
  } else if (how == NuslerpVectors::Rows) {
    for (uint64_t r = 0; r < rows; ++r) out.push_back({r * cols, 1, cols});
  } else {
    for (uint64_t c = 0; c < cols; ++c) out.push_back({c, cols, rows});
  }
  return out;
}

template <typename Acc>
void nuslerp_impl(const std::optional<TensorView>& base_v, const TensorView& p0, const TensorView& p1, double t,
                  uint64_t rows, uint64_t cols, NuslerpVectors how, DType out_dtype, void* out) {
  const uint64_t numel = rows * cols;
  std::vector<Acc> v0 = kernel::load_all<Acc>(p0, numel), v1 = kernel::load_all<Acc>(p1, numel);
  std::vector<Acc> base;
  if (base_v) {
    base = kernel::load_all<Acc>(*base_v, numel);
    for (uint64_t j = 0; j < numel; ++j) v0[j] -= base[j], v1[j] -= base[j];
  }
  std::vector<Acc> result(numel);
  std::vector<Acc> a, b;
  for (const VectorSpan& s : vector_spans(rows, cols, how)) {
    a.resize(s.count);
    b.resize(s.count);
    for (uint64_t k = 0; k < s.count; ++k) a[k] = v0[s.start + k * s.stride], b[k] = v1[s.start + k * s.stride];
    const double na = std::max(norm2(a.data(), s.count), 1e-7), nb = std::max(norm2(b.data(), s.count), 1e-7);
    const double cos = std::clamp(dot(a.data(), b.data(), s.count) / (na * nb), -1.0, 1.0);
    const bool colinear = 1 - cos * cos <= 1e-16;
    const double theta = std::acos(colinear ? 0.0 : cos);
    const Acc sa = static_cast<Acc>(std::sin((1 - t) * theta)), sb = static_cast<Acc>(std::sin(t * theta));
    const Acc st = static_cast<Acc>(std::sin(theta)), ta = static_cast<Acc>(1 - t), tb = static_cast<Acc>(t);
    for (uint64_t k = 0; k < s.count; ++k)
      result[s.start + k * s.stride] = colinear ? ta * a[k] + tb * b[k] : (sa * a[k] + sb * b[k]) / st;
  }
  if (base_v)
    for (uint64_t j = 0; j < numel; ++j) result[j] += base[j];
  kernel::store(result.data(), 0, numel, out_dtype, out);
}

template <typename Acc>
void multislerp_impl(const std::optional<TensorView>& base_v, const std::vector<TensorView>& models,
                     std::vector<double> w_in, bool normalize_weights, double eps, uint64_t numel, DType out_dtype,
                     void* out) {
  const size_t n = models.size();
  std::vector<std::vector<Acc>> v = kernel::load_each<Acc>(models, numel);
  if (n == 1) {  // mergekit: no interpolation, the model itself
    kernel::store(v[0].data(), 0, numel, out_dtype, out);
    return;
  }
  std::vector<Acc> base;
  if (base_v) {
    base = kernel::load_all<Acc>(*base_v, numel);
    for (auto& vi : v)
      for (uint64_t j = 0; j < numel; ++j) vi[j] -= base[j];
  }
  std::vector<Acc> w(n);
  Acc wsum = 0;
  for (size_t i = 0; i < n; ++i) w[i] = static_cast<Acc>(w_in[i]), wsum += w[i];
  if (normalize_weights)
    for (Acc& x : w) x /= wsum;
  const Acc e = static_cast<Acc>(eps);
  std::vector<Acc> norms(n), inv(n);
  for (size_t i = 0; i < n; ++i) norms[i] = static_cast<Acc>(norm2(v[i].data(), numel)), inv[i] = norms[i] + e;
  auto unit = [&](size_t i, uint64_t j) { return v[i][j] / inv[i]; };
  std::vector<Acc> mean(numel, Acc(0));
  for (uint64_t j = 0; j < numel; ++j)
    for (size_t i = 0; i < n; ++i) mean[j] += unit(i, j) * w[i];
  const Acc mean_norm = static_cast<Acc>(norm2(mean.data(), numel));
  std::vector<Acc> result(numel);
  if (mean_norm < e) {
    if (n != 2)
      fail("merge: multislerp: the weighted sum of the (unit) task vectors is zero: antipodal models whose weights "
           "cancel; choose other weights");
    for (uint64_t j = 0; j < numel; ++j) result[j] = v[0][j] * w[0] + v[1][j] * w[1];
  } else {
    for (Acc& x : mean) x /= mean_norm;
    std::vector<Acc> dots(n);
    for (size_t i = 0; i < n; ++i) {
      double d = 0;
      for (uint64_t j = 0; j < numel; ++j) d += static_cast<double>(unit(i, j) * mean[j]);
      dots[i] = static_cast<Acc>(d);
    }
    std::vector<Acc> tangent(numel, Acc(0));
    for (uint64_t j = 0; j < numel; ++j)
      for (size_t i = 0; i < n; ++i) tangent[j] += (unit(i, j) - dots[i] * mean[j]) * w[i];
    const double tn = static_cast<double>(static_cast<Acc>(norm2(tangent.data(), numel)) + e);
    const Acc c = static_cast<Acc>(std::cos(tn)), sc = static_cast<Acc>(std::sin(tn) / tn);
    Acc avg_norm = 0;
    for (size_t i = 0; i < n; ++i) avg_norm += norms[i] * w[i];
    for (uint64_t j = 0; j < numel; ++j) result[j] = (mean[j] * c + tangent[j] * sc) * avg_norm;
  }
  if (base_v)
    for (uint64_t j = 0; j < numel; ++j) result[j] += base[j];
  kernel::store(result.data(), 0, numel, out_dtype, out);
}

// One step of the Karcher iteration: the tangent g at m (returns false when |g| < tol: converged).
template <typename Acc>
bool karcher_step(const std::vector<std::vector<Acc>>& units, const std::vector<double>& alpha, double tol,
                  std::vector<Acc>& mean, std::vector<Acc>& tangent) {
  const uint64_t numel = mean.size();
  std::fill(tangent.begin(), tangent.end(), Acc(0));
  for (size_t i = 0; i < units.size(); ++i) {
    const Acc d = static_cast<Acc>(std::clamp(dot(mean.data(), units[i].data(), numel), -1.0, 1.0));
    const double theta = std::acos(static_cast<double>(d));
    if (theta < tol) continue;
    const Acc coef = static_cast<Acc>(alpha[i] * (theta / std::sin(theta)));
    for (uint64_t j = 0; j < numel; ++j) tangent[j] += coef * (units[i][j] - d * mean[j]);
  }
  const double tn = norm2(tangent.data(), numel);
  if (tn < tol) return false;
  const Acc c = static_cast<Acc>(std::cos(tn)), s = static_cast<Acc>(std::sin(tn)), n = static_cast<Acc>(tn);
  for (uint64_t j = 0; j < numel; ++j) mean[j] = c * mean[j] + s * (tangent[j] / n);
  const double un = norm2(mean.data(), numel);
  if (un > tol)
    for (Acc& x : mean) x /= static_cast<Acc>(un);
  return true;
}

template <typename Acc>
void karcher_impl(const std::vector<TensorView>& models, uint64_t numel, int64_t max_iter, double tol,
                  DType out_dtype, void* out) {
  const size_t n = models.size();
  std::vector<std::vector<Acc>> units = kernel::load_each<Acc>(models, numel);
  std::vector<double> norms(n);
  std::vector<std::vector<Acc>> valid;
  for (size_t i = 0; i < n; ++i) {
    norms[i] = static_cast<double>(static_cast<Acc>(norm2(units[i].data(), numel)));
    const Acc nn = static_cast<Acc>(norms[i]);
    for (Acc& x : units[i]) x = nn == 0 ? Acc(0) : x / nn;
    if (norms[i] > tol) valid.push_back(std::move(units[i]));
  }
  units.clear();
  std::vector<Acc> mean(numel, Acc(0));
  if (!valid.empty()) {
    std::vector<double> alpha(valid.size(), 1.0 / static_cast<double>(valid.size()));
    for (size_t i = 0; i < valid.size(); ++i)
      for (uint64_t j = 0; j < numel; ++j) mean[j] += static_cast<Acc>(alpha[i]) * valid[i][j];
    const double mn = norm2(mean.data(), numel);
    if (mn < tol)
      mean = valid[0];
    else
      for (Acc& x : mean) x /= static_cast<Acc>(mn);
    std::vector<Acc> tangent(numel);
    for (int64_t it = 0; it < max_iter && karcher_step(valid, alpha, tol, mean, tangent); ++it) {
    }
    Acc scale = 0;  // sum over every model of (1/N) |P_i|, as mergekit
    for (size_t i = 0; i < n; ++i) scale += static_cast<Acc>(1.0 / static_cast<double>(n)) * static_cast<Acc>(norms[i]);
    for (Acc& x : mean) x = scale * x;
  }
  kernel::store(mean.data(), 0, numel, out_dtype, out);
}

}  // namespace

void merge_nuslerp(std::optional<TensorView> base, TensorView p0, TensorView p1, double w0, double w1, uint64_t rows,
                   uint64_t cols, NuslerpVectors vectors, DType out_dtype, void* out) {
  std::vector<TensorView> all = {p0, p1};
  if (base) all.push_back(*base);
  const double total = w0 + w1;
  const double t = std::fabs(total) < 1e-6 ? 0.5 : w1 / total;
  kernel::with_accumulator(out_dtype, all, [&](auto acc) {
    nuslerp_impl<decltype(acc)>(base, p0, p1, t, rows, cols, vectors, out_dtype, out);
  });
}

void merge_multislerp(std::optional<TensorView> base, const std::vector<TensorView>& models,
                      const std::vector<double>& weights, bool normalize_weights, double eps, uint64_t numel,
                      DType out_dtype, void* out) {
  if (models.empty()) fail("merge: multislerp needs at least one model besides the base");
  if (weights.size() != models.size())
    fail("merge: ", weights.size(), " weights given for ", models.size(), " models");
  std::vector<TensorView> all = models;
  if (base) all.push_back(*base);
  kernel::with_accumulator(out_dtype, all, [&](auto acc) {
    multislerp_impl<decltype(acc)>(base, models, weights, normalize_weights, eps, numel, out_dtype, out);
  });
}

void merge_karcher(const std::vector<TensorView>& models, uint64_t numel, int64_t max_iter, double tol, DType out_dtype,
                   void* out) {
  if (models.empty()) fail("merge: karcher needs at least one model");
  kernel::with_accumulator(out_dtype, models, [&](auto acc) {
    karcher_impl<decltype(acc)>(models, numel, max_iter, tol, out_dtype, out);
  });
}

}  // namespace recall
