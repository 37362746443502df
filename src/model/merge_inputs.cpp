// The opened inputs of a merge (see recall/model/merge_inputs.h).
#include "recall/model/merge_inputs.h"

namespace recall {

uint64_t MergeInputs::model_bytes(size_t model) const {
  uint64_t sum = 0;
  for (uint64_t b : slot_bytes.at(model)) sum += b;
  return sum;
}

std::optional<size_t> MergeInputs::base_source(size_t slot) const {
  if (!base) return std::nullopt;
  const auto& sources = layout.at(slot).sources;
  for (size_t i = 0; i < sources.size(); ++i)
    if (sources[i].model == *base) return i;
  return std::nullopt;
}

}  // namespace recall
