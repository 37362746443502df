// The output layout of a merge: the merged model's tensors and, for each, the input tensors it is
// merged from. Without slices every output tensor comes from the same tensor of every model. With
// mergekit's `slices` the output stacks the slices' blocks (a frankenmerge may have more or fewer
// blocks than its inputs): output block b of slice k, at offset i in it, comes from block
// first_j + i of each source j; the embedding comes from the first slice's sources and the final
// norm and lm_head from the last slice's (mergekit's plan.py). The merge loop, the memory plan,
// the HF export and config.json's num_hidden_layers all read this layout.
#pragma once

#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/model/merge_inputs.h"

namespace recall {

// Fills inputs->slots, layout, slot_bytes, output_blocks and output_config_json from the config
// and the opened models (`opened[m]`: model m's config and headers are there). Appends what does
// not fit (a layer_range beyond a model's blocks, a missing tensor) to `problems`.
void build_output_layout(const MergeConfig& config, MergeInputs* inputs, const std::vector<bool>& opened,
                         std::vector<std::string>* problems);

// config.json of a merged model: `config_json` with num_hidden_layers set to `blocks` and a
// per-block `layer_types` list (when present) taken from each output block's source block.
std::string output_config_json(const std::string& config_json, int64_t blocks,
                               const std::vector<int64_t>& source_block_of_output);

}  // namespace recall
