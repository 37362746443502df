// Preflight of a merge: reads only headers and configs, checks that the models can be merged
// (architecture, shapes, vocabulary, tied names, block count), the data file, the output
// directory, and reports every problem at once before any heavy read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/model/model_dir.h"

namespace recall {

struct MergeInputs {
  std::vector<ModelDir> models;     // config order
  size_t reference = 0;             // index of the reference model
  std::optional<size_t> base;       // index of the base model (task-vector methods)
  int64_t data_samples = 0;         // non-blank lines of `data` (recall only)
  std::vector<TensorSlot> slots;    // the tensors every model has, canonical order
};

// Throws one Error listing every problem ("preflight found N problems: ...").
MergeInputs preflight(const MergeConfig& config);

// The problems alone (empty when mergeable); `inputs` is filled as far as possible.
std::vector<std::string> preflight_problems(const MergeConfig& config, MergeInputs* inputs);

// Counts the non-blank lines of a JSONL file (cheap: no parsing).
int64_t count_jsonl_lines(const std::string& path);

}  // namespace recall
