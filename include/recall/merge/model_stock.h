// Model Stock (Jang et al. 2024, arXiv 2403.19522; mergekit's merge_methods/model_stock.py): the
// average of the fine-tuned models pulled toward the base by the angle between their task vectors.
#pragma once

#include <cstdint>
#include <vector>

#include "recall/merge/methods.h"

namespace recall {

// With w_0 the base and w_1..w_N (N >= 2) the others, per vector (the whole flattened tensor, or
// each row of `row_length` elements when `filter_wise`; a 1-D tensor is one row): offsets
// d_i = w_i - w_0, cos = mean over pairs i < j of clamp(<d_i, d_j> / max(|d_i| |d_j|, 1e-6), -1, 1),
// t = N cos / (1 + (N - 1) cos) (t = 0 where |1 + (N - 1) cos| < 1e-6), and the result
// t * (sum_i w_i) / N + (1 - t) w_0.
void merge_model_stock(TensorView base, const std::vector<TensorView>& others, uint64_t numel, uint64_t row_length,
                       bool filter_wise, DType out_dtype, void* out);

}  // namespace recall
