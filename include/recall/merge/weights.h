// Merge weights from similarities (DESIGN.md §3.4-3.5): a temperature softmax over models per
// block, the policy for tensors outside the blocks, and a global (one vector for all blocks) mode
// for ablations.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recall/model/tensor_names.h"
#include "recall/util/enum_names.h"

namespace recall {

// alpha_i = exp(s_i / tau) / sum_j exp(s_j / tau), computed as exp((s_i - max s) / tau) for
// stability. tau == 0 gives the one-hot of the argmax (ties: lowest model index). The result sums
// to 1 (renormalised once after the exponentials). Errors: empty input, tau < 0 or not finite,
// non-finite similarities.
std::vector<double> softmax_weights(const std::vector<double>& similarity, double temperature);

// Weights of every block: softmax_weights of each row of similarity [L][M].
std::vector<std::vector<double>> block_weights(const std::vector<std::vector<double>>& similarity,
                                               double temperature);

// Global mode (ablation): one weight vector for every block, the softmax of the per-model mean
// similarity over blocks.
std::vector<double> global_weights(const std::vector<std::vector<double>>& similarity, double temperature);

// How tensors outside the blocks (embedding, final norm, lm_head) are weighted.
enum class NonBlockPolicy {
  Uniform,       // 1/M each (default)
  NearestBlock,  // embedding: block 0's weights; final norm and lm_head: the last block's
  Reference,     // one-hot on the reference model
};
inline constexpr EnumName<NonBlockPolicy> kNonBlockPolicies[] = {{"uniform", NonBlockPolicy::Uniform},
                                                                  {"nearest_block", NonBlockPolicy::NearestBlock},
                                                                  {"reference", NonBlockPolicy::Reference}};

// Per-block weights (RECALL) or one vector for every block (ablation: global_weights).
enum class Granularity { Block, Global };
inline constexpr EnumName<Granularity> kGranularities[] = {{"block", Granularity::Block},
                                                           {"global", Granularity::Global}};

// Weights for one non-block role (Embed, FinalNorm or LmHead) from the block weights [L][M].
std::vector<double> non_block_weights(NonBlockPolicy policy, Role role,
                                      const std::vector<std::vector<double>>& block_weights,
                                      int64_t reference);

// Weights for any tensor: the block's row for block roles, non_block_weights otherwise.
std::vector<double> tensor_weights(NonBlockPolicy policy, Role role, int64_t block,
                                   const std::vector<std::vector<double>>& block_weights, int64_t reference);

}  // namespace recall
