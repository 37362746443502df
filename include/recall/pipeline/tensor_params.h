// The method parameters of every tensor of a merge, resolved from the config the way mergekit
// does (mergekit/parameter_resolver.py): a model's own `params` first, then the top-level
// `params`, then the method's default; gradients at the tensor's block position, filters against
// its name. RECALL's per-model `weight` comes from the block weights instead.
#pragma once

#include <vector>

#include "recall/config/merge_config.h"
#include "recall/merge/registry.h"
#include "recall/model/merge_inputs.h"

namespace recall {

// One TensorParams per inputs.slots entry. `block_weights` ([L][M]) is used by methods that use
// representations and ignored otherwise. Throws naming the tensor when a required parameter has
// no value for it.
std::vector<TensorParams> resolve_tensor_params(const MergeConfig& config, const MergeInputs& inputs,
                                                const std::vector<std::vector<double>>& block_weights);

}  // namespace recall
