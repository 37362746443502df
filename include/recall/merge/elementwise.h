// Elementwise merges of mergekit that need no whole-tensor statistics, so the merge loop may split
// their rows among ranks like a weighted sum: NearSwap (merge_methods/nearswap.py) and the
// passthrough copy with an optional scale (passthrough.py).
#pragma once

#include <cstdint>

#include "recall/merge/methods.h"

namespace recall {

// NearSwap of the base a and the other model b: w = clamp(t / max(|a - b|, 1e-6), 0, 1),
// P = w b + (1 - w) a: elements where the models are within t of each other take b.
void merge_nearswap(TensorView base, TensorView other, double t, uint64_t numel, DType out_dtype, void* out);

// Passthrough: P = scale x (the one input), in the output dtype. With scale 1 the input's values
// are copied (converted to the output dtype when it differs).
void merge_passthrough(TensorView input, double scale, uint64_t numel, DType out_dtype, void* out);

}  // namespace recall
