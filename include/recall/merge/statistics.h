// What data-aware merge methods know about one output tensor from the calibration samples: the
// statistics phase (recall/pipeline/statistics.h) runs the samples through the models and saves
// them; the merge loop hands each kernel call the statistics of its tensor through these
// accessors, which read the saved files a piece at a time (a Gram matrix of 28672^2 doubles is
// never held twice). Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "recall/model/tensor_names.h"

namespace recall {

// The linear layers' input groups of a decoder block, by the input they share (the names of the
// statistics files, recall/engine/extraction.h).
enum class LinearGroup { AttnIn, AttnOut, MlpIn, MlpOut };
inline constexpr LinearGroup kLinearGroups[] = {LinearGroup::AttnIn, LinearGroup::AttnOut, LinearGroup::MlpIn,
                                                LinearGroup::MlpOut};
const char* linear_group_name(LinearGroup g);  // "attn_in", "attn_out", "mlp_in", "mlp_out"
// The group whose input a block tensor's linear layer takes (q/k/v_proj: AttnIn, o_proj: AttnOut,
// gate/up_proj: MlpIn, down_proj: MlpOut); nullopt for every other role (norms, biases, embedding,
// lm_head).
std::optional<LinearGroup> linear_group_of(Role role);

struct TensorStatistics {
  // RegMean: rows [r0, r0 + n) of input j's Gram matrix of this linear layer's inputs (float64,
  // [in, in], X^T X summed over the calibration tokens), into dst (n x in). Empty when the tensor
  // is not the weight of a block's linear layer (those tensors are averaged).
  std::function<void(size_t input, uint64_t r0, uint64_t n, double* dst)> gram_rows;
  int64_t gram_size = 0;          // in
  std::vector<double> gram_tokens;  // per input: the tokens its Gram matrix sums over
  // Fisher: elements [first, first + n) of input j's diagonal Fisher of this tensor, as floats.
  std::function<void(size_t input, uint64_t first, uint64_t n, float* dst)> fisher;
  std::vector<double> fisher_norm;  // per input: the L2 norm of its model's Fisher over every tensor
  // AIM: the importance of each input channel of this linear layer from the base model's mean
  // |activation| (recall/merge/aim.h aim_channel_importance); empty when the tensor is not a
  // block's linear weight.
  std::vector<double> aim_importance;
  // Set by RegMean's kernel: the reciprocal condition estimate of the summed Gram matrix it solved
  // (-1 when it solved none), for the report.
  mutable double rcond = -1;
};

}  // namespace recall
