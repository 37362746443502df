// RegMean++'s merged path for the statistics phase (engine/extraction.h MergedPath): the merged
// model's embedding rows and blocks, computed with the configured method's own kernel (the
// registry entry, each tensor's resolved parameters, the statistics written so far) in float32,
// from every model's checkpoint (LoRA adapters applied as the merge loop applies them).
#pragma once

#include <string>

#include "recall/config/merge_config.h"
#include "recall/engine/extraction.h"
#include "recall/model/merge_inputs.h"

namespace recall {

// The callbacks for `config` and `inputs` (kept alive until the phase ends; `dir` is the phase's
// statistics directory). The block callback reads block l's Gram files of every model, so it may
// run only once they are written; the engine calls it so.
engine::MergedPath merged_path(const MergeConfig& config, const MergeInputs& inputs, const std::string& dir);

}  // namespace recall
