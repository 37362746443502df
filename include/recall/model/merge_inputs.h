// The opened inputs of a merge: every model (config order), the tensors they share, their bytes,
// and which model is the reference and the base. Preflight (recall/pipeline/preflight.h) builds
// it from headers alone; the engine and the merge read from it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "recall/model/model_dir.h"

namespace recall {

// One input of an output tensor: tensor `name` of model `model` (config order). Without slices
// every model's tensor of the output's name; with slices a source model's block of the slice.
struct TensorSource {
  size_t model = 0;
  std::string name;
};

// Where an output tensor comes from (recall/pipeline/layout.h).
struct SlotLayout {
  std::vector<TensorSource> sources;  // the inputs the method merges, in config order
  int64_t slice = -1;                 // its slice (config.slices index), -1 without slices
  double t = 0;                       // mergekit's gradient position of the tensor
};

struct MergeInputs {
  std::vector<ModelDir> models;     // config order (a described model has no checkpoint)
  std::vector<bool> described;      // true: shapes from config.json alone, no weights opened
  size_t reference = 0;             // index of the reference model
  std::optional<size_t> base;       // index of the base model (task-vector methods)
  int64_t data_samples = 0;         // non-blank lines of `data` (recall only)
  uint64_t data_bytes = 0;          // size of `data` in bytes (bounds its tokens in the memory plan)
  // The output's tensors in canonical order (names and blocks of the merged model), where each
  // comes from, and the bytes read from each model for it (0 where the model is not a source).
  std::vector<TensorSlot> slots;
  std::vector<SlotLayout> layout;                 // [slot]
  std::vector<std::vector<uint64_t>> slot_bytes;  // [model][slot]
  int64_t output_blocks = 0;                      // blocks of the merged model
  std::string output_config_json;                 // its config.json (the reference's, block count set)

  std::vector<std::string> notes;   // what a shapes-only preflight did not check

  uint64_t model_bytes(size_t model) const;  // sum of slot_bytes[model]
  // Position of the base among slot `slot`'s sources; nullopt when it is not one.
  std::optional<size_t> base_source(size_t slot) const;
};

}  // namespace recall
