// The weighted sum of the merge (RECALL and linear) as one fused CUDA kernel: BF16/F16 inputs read
// once with 16-byte loads, float accumulation in the CPU kernel's order and rounding (no FMA
// contraction, IEEE division, round to nearest even), the same-bits shortcut, and the output
// dtype written once. The bytes equal merge_weighted's on the CPU, so a GPU merge is bitwise the
// CPU merge. Compiled when the CUDA toolkit is found (RECALL_HAVE_CUDA_MERGE); otherwise every
// entry point fails with a clear message.
#pragma once

#include <cstdint>
#include <vector>

#include "recall/util/dtype.h"

namespace recall {

// Most models one kernel launch merges (weights and pointers travel as kernel arguments).
constexpr size_t kMaxCudaMergeModels = 16;

// True when built with CUDA and a device is visible.
bool cuda_merge_available();

// inputs: device pointers to `numel` elements each, all of dtype `in` (BF16 or F16); out: device
// pointer, dtype BF16, F16 or F32. `stream` is a cudaStream_t (nullptr = default stream); the call
// is asynchronous on it. Same contract as merge_weighted (methods.h).
void merge_weighted_cuda(const std::vector<const void*>& inputs, DType in, const std::vector<double>& weights,
                         bool normalize, uint64_t numel, DType out_dtype, void* out, void* stream = nullptr);

}  // namespace recall
