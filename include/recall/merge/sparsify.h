// The sparsification masks of the task-vector methods (mergekit's sparsify.py): TIES's top-k by
// magnitude, Model Breadcrumbs' band that drops the smallest and the largest (outlier)
// magnitudes, and DELLA's magnitude-ranked random drop (MAGPRUNE). Where mergekit orders equal
// magnitudes arbitrarily (an unstable argsort), recall ranks them by index, lowest first: the
// result equals mergekit's with a stable sort. Magnitudes are compared as float32, as mergekit
// does on the CPU (`w.float()`), also for float64 deltas.
#pragma once

#include <cstdint>
#include <vector>

namespace recall {

// Elements whose rank is in [lo, hi) when ordered by (key, index) ascending.
template <typename K>
std::vector<char> rank_interval_mask(const std::vector<K>& key, uint64_t lo, uint64_t hi);

// TIES: the k = max(1, floor(density * n)) elements with the largest |v| (ties: lowest index);
// all for density >= 1, none for density <= 0.
template <typename T>
std::vector<char> magnitude_mask(const std::vector<T>& v, double density);

// Model Breadcrumbs (mergekit's magnitude_outliers): with target = floor(density * n),
// top = floor(gamma * n) and bottom = max(0, n - target - top), the elements of ascending rank
// [bottom, bottom + target) by |v|: the `bottom` smallest and (up to) the `top` largest are
// dropped. All for density >= 1.
template <typename T>
std::vector<char> magnitude_outlier_mask(const std::vector<T>& v, double density, double gamma);

// DELLA's MAGPRUNE (mergekit's della_magprune): within each row of `row_length` elements (a 1-D
// tensor is one row), element j of ascending magnitude rank r (ties: lowest index first) is kept
// with probability p = (density - epsilon) + 2 epsilon r / (row_length - 1) (p = density for a
// row of one element), drawn as u_j < p with u_j the counter-based uniform of `stream`
// (dare_stream, methods.h) at the element's index in the tensor. All for density >= 1, none for
// density <= 0; otherwise density - epsilon and density + epsilon must lie in (0, 1).
template <typename T>
std::vector<char> della_mask(const std::vector<T>& v, uint64_t row_length, double density, double epsilon,
                             uint64_t stream);

}  // namespace recall
