// Fisher merging (Matena & Raffel, NeurIPS 2022, "Merging Models with Fisher-Weighted Averaging"):
// a per-element average of the models weighted by their diagonal Fisher information.
//
// As fusion-bench 0.2.x computes it (fusion_bench/method/fisher_merging/fisher_merging.py:
// merging_with_fisher_weights, get_models_fisher_norm; defaults from
// config/method/fisher_merging/fisher_merging.yaml), per element of a tensor:
//   theta* = sum_i c_i (F_i + eps) theta_i / sum_i c_i (F_i + eps)
// with F_i model i's diagonal Fisher (the mean over examples of the squared gradients, computed by
// the engine), eps = `minimal_fisher_weight` (default 1e-6) added to every F_i, and the per-model
// coefficient c_i = lambda_i (`fisher_scaling_coefficients`, default 1/M for M models), times, when
// `normalize_fisher_weight` (default true),
//   (1 / (||F_i|| + eps)) / sum_j (1 / (||F_j|| + eps))
// where ||F_i|| is the L2 norm of model i's Fisher over every merged tensor, before the floor
// (fusion-bench takes each tensor's norm, then the norm of those norms: the same number).
// fisher_model_scales computes c; the caller sums the squares over its tensors (a global reduction)
// for the norms. fusion-bench computes in float32; here float for BF16/F16 outputs and double for
// F32 outputs, like the other kernels (methods.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "recall/merge/methods.h"  // TensorView
#include "recall/util/dtype.h"

namespace recall {

inline constexpr double kFisherMinimalWeight = 1e-6;  // fusion-bench's minimal_fisher_weight

// The per-model coefficients c_i above for `models` models: lambdas (empty = 1/models each) and,
// when fisher_norms is not empty, the normalization by the models' global Fisher L2 norms.
std::vector<double> fisher_model_scales(size_t models, const std::vector<double>& lambdas,
                                        const std::vector<double>& fisher_norms, double epsilon = kFisherMinimalWeight);

// theta* over numel elements: models[i] and fisher[i] (model i's Fisher as float32) point at the
// same elements, out receives them in out_dtype (BF16, F16, F32). Elementwise, so any piece of a
// tensor may be merged on its own (point every array at the piece) with the same bits.
void merge_fisher(const std::vector<TensorView>& models, const std::vector<const float*>& fisher,
                  const std::vector<double>& scales, double epsilon, uint64_t numel, DType out_dtype, void* out);

}  // namespace recall
