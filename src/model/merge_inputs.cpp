// The opened inputs of a merge (see recall/model/merge_inputs.h).
#include "recall/model/merge_inputs.h"

namespace recall {

uint64_t MergeInputs::model_bytes(size_t model) const {
  uint64_t sum = 0;
  for (uint64_t b : slot_bytes.at(model)) sum += b;
  return sum;
}

}  // namespace recall
