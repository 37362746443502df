// The spherical merges of mergekit beyond SLERP: NuSLERP (merge_methods/nuslerp.py), Multi-SLERP
// (multislerp.py) and the Karcher mean (karcher.py). Each works on whole vectors (norms, angles),
// so it needs whole tensors; arithmetic is wider than the output as in every recall kernel.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "recall/merge/methods.h"

namespace recall {

// NuSLERP: t = w_1 / (w_0 + w_1) (0.5 when |w_0 + w_1| < 1e-6); with a base, the slerp of the
// task vectors v_i = P_i - base added to the base, else of P_0 and P_1. The slerp of each vector
// (the flattened tensor; or each row; or each column, `row_wise`): u_i = v_i / max(|v_i|, 1e-7),
// cos = clamp(<u_0, u_1>, -1, 1); where 1 - cos^2 <= 1e-16 the lerp (1 - t) v_0 + t v_1, else
// (sin((1 - t) theta) v_0 + sin(t theta) v_1) / sin(theta), theta = acos(cos).
enum class NuslerpVectors { Flat, Rows, Columns };
void merge_nuslerp(std::optional<TensorView> base, TensorView p0, TensorView p1, double w0, double w1,
                   uint64_t rows, uint64_t cols, NuslerpVectors vectors, DType out_dtype, void* out);

// Multi-SLERP (barycentric interpolation on the hypersphere) of N >= 1 models with weights w
// (divided by their sum when `normalize_weights`), around the base when one is given (v_i =
// P_i - base, the result added back), over the flattened tensor: u_i = v_i / (|v_i| + eps),
// m = sum w_i u_i normalized (|m| < eps: for N = 2 the weighted sum, else an error), tangent
// r = sum w_i (u_i - <u_i, m> m), P = (m cos|r|' + r sin|r|' / |r|') sum w_i |v_i| with
// |r|' = |r| + eps. One model: that model, unchanged.
void merge_multislerp(std::optional<TensorView> base, const std::vector<TensorView>& models,
                      const std::vector<double>& weights, bool normalize_weights, double eps, uint64_t numel,
                      DType out_dtype, void* out);

// Karcher (Riemannian) mean on the unit sphere of the flattened tensors with equal weights, scaled
// by the mean norm: units u_i = P_i / |P_i|; among those with |P_i| > tol, start from the
// normalized mean of the units (the first unit when its norm is below tol) and take up to
// `max_iter` steps m <- cos|g| m + sin|g| g / |g| with g = sum alpha_i theta_i / sin(theta_i)
// (u_i - cos(theta_i) m), theta_i = acos(<m, u_i>) (terms with theta_i < tol skipped), stopping
// when |g| < tol; the result is (sum_i |P_i| / N) m. All norms below tol: zeros.
void merge_karcher(const std::vector<TensorView>& models, uint64_t numel, int64_t max_iter, double tol,
                   DType out_dtype, void* out);

}  // namespace recall
