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

}  // namespace recall
