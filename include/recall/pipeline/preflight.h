// Preflight of a merge: reads only headers and configs, checks that the models can be merged
// (architecture, shapes, vocabulary, tied names, block count), the data file, the output
// directory, and reports every problem at once before any heavy read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/model/merge_inputs.h"

namespace recall {

// How preflight may treat models it cannot open (planning a cluster job from a laptop).
struct PreflightOptions {
  // Models need only a config.json: a directory with config.json and no weights, or, when
  // `architecture` is set, a path that does not exist here. Tensor bytes come from the shapes
  // the config implies and its torch_dtype (bfloat16 when absent). A missing data file is noted,
  // not a problem.
  bool shapes_only = false;
  std::string architecture;  // a config.json describing every model whose path is absent
};

// Throws one Error listing every problem ("preflight found N problems: ...").
MergeInputs preflight(const MergeConfig& config, const PreflightOptions& options = {});

// The problems alone (empty when mergeable); `inputs` is filled as far as possible. Notes that
// are not problems (what a shapes-only preflight could not check) go to inputs->notes.
std::vector<std::string> preflight_problems(const MergeConfig& config, MergeInputs* inputs,
                                            const PreflightOptions& options = {});

// "preflight ok: 3 llama models, 8 blocks, 75 tensors each, 1.2 GB to read; 2 rank(s)".
std::string preflight_summary(const MergeInputs& inputs, int plan_world, int world);

// Counts the non-blank lines of a JSONL file (cheap: no parsing).
int64_t count_jsonl_lines(const std::string& path);

}  // namespace recall
