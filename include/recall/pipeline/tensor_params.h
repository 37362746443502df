// The method parameters of every tensor of a merge, resolved from the config the way mergekit
// does (mergekit/parameter_resolver.py): per-model parameters from the slice source's `params`,
// the slice's, the model's own, then the top-level `params`; shared ones from the slice's, then
// the top-level; then the method's default. Gradients at the tensor's gradient position
// (recall/pipeline/layout.h), filters against its name (a source's own tensor name for per-model
// parameters). RECALL's per-model `weight` comes from the block weights instead.
#pragma once

#include <vector>

#include "recall/config/merge_config.h"
#include "recall/merge/registry.h"
#include "recall/model/merge_inputs.h"

namespace recall {

// One TensorParams per inputs.slots entry, per-model values in the order of the slot's sources.
// `block_weights` ([L][M]) is used by methods that use representations and ignored otherwise. Throws naming the tensor when a required parameter has
// no value for it.
std::vector<TensorParams> resolve_tensor_params(const MergeConfig& config, const MergeInputs& inputs,
                                                const std::vector<std::vector<double>>& block_weights);

}  // namespace recall
