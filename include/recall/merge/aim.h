// Activation-Informed Merging (AIM; Nobari et al., NeurIPS 2025, arXiv 2502.02421): after any merge,
// pull each linear weight's merged delta back toward the base model in the input channels the base
// model's activations use most.
//
// What the paper's code does (github.com/ahnobari/ActivationInformedMerging,
// MergeModels/ActivationMerging/_utils.py, relax_on_merged; its get_calib_feat hooks every
// nn.Linear of the base model on a task-agnostic calibration set, pile-val, AWQ-style):
//   I_j    = s_j / max_k s_k          s_j = mean |x_j| of the base model's inputs to the layer
// (only ratios of s enter, so a mean and a sum over tokens give the same I up to rounding)
//   theta* = base + (merged - base) * (1 - I_j (1 - omega))    per element [o, j] of W [out, in]
// so omega = 1 leaves the merge as it was and omega = 0 keeps the base weights in the most active
// channel. omega: 0.4 is performAIM.py's command-line default (relax_on_merged's own default is
// 0.2). The code applies it to every module with a weight except embeddings (lm_head included)
// and to weights only, never biases; `nonlinear_scaling` (identity by default) is not offered.
// Choices here: I_j = 0 for every channel when the layer saw no tokens or every s_j is 0 (the
// code would divide by 0 and write NaN); the arithmetic is float for BF16/F16 outputs and double for
// F32 outputs (the code works in bfloat16 throughout).
#pragma once

#include <cstdint>
#include <vector>

#include "recall/merge/methods.h"  // TensorView
#include "recall/util/dtype.h"

namespace recall {

inline constexpr double kAimDefaultOmega = 0.4;

// I_j from the statistics pass's sum of |x| per input channel and its token count (the mean,
// divided by its largest value; all zeros when tokens == 0 or every sum is 0).
std::vector<double> aim_channel_importance(const std::vector<double>& abs_sum, int64_t tokens);

// Rewrites numel merged values in place: elements [first, first + numel) of a tensor whose rows
// have row_length (= in) elements, so element e is in input channel (first + e) % row_length.
// base and merged point at the piece's first element; merged is in merged_dtype (BF16, F16, F32),
// importance has row_length values, omega is in [0, 1]. Any split into pieces gives the same bits.
void apply_aim(TensorView base, DType merged_dtype, void* merged, const std::vector<double>& importance,
               double omega, uint64_t row_length, uint64_t first, uint64_t numel);

}  // namespace recall
