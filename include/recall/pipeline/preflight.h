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
  std::vector<ModelDir> models;     // config order (a described model has no checkpoint)
  std::vector<bool> described;      // true: shapes from config.json alone, no weights opened
  size_t reference = 0;             // index of the reference model
  std::optional<size_t> base;       // index of the base model (task-vector methods)
  int64_t data_samples = 0;         // non-blank lines of `data` (recall only)
  std::vector<TensorSlot> slots;    // the tensors every model has, canonical order
  std::vector<std::vector<uint64_t>> slot_bytes;  // [model][slot]: bytes of each tensor on disk

  std::vector<std::string> notes;   // what a shapes-only preflight did not check

  uint64_t model_bytes(size_t model) const;  // sum of slot_bytes[model]
};

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

// Counts the non-blank lines of a JSONL file (cheap: no parsing).
int64_t count_jsonl_lines(const std::string& path);

}  // namespace recall
