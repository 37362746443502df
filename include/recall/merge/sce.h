// SCE (Wan et al. 2024, arXiv 2408.07990; mergekit's merge_methods/sce.py): Select the elements
// where the task vectors vary most, Calculate each model's weight from its task vector's energy,
// Erase the elements whose sign disagrees with the majority.
#pragma once

#include <cstdint>
#include <vector>

#include "recall/merge/methods.h"

namespace recall {

// With task vectors d_i = P_i - base (i over the non-base models):
// 1. select_topk < 1: keep the k = floor(select_topk * nnz) elements of largest variance across
//    the models (population variance; nnz = elements of nonzero variance; ties: lowest index),
//    zero the others in every d_i (select_topk <= 0: none kept);
// 2. w_i = mean_j d_ij^2 / sum_i' mean_j d_i'j^2 (1/N each when that sum is below 1e-6);
// 3. per element, the majority sign is the sign of sum_i d_ij (>= 0: +); model i takes part where
//    its sign equals it (zeros never);
// 4. P = base + sum_i w_i d_ij [takes part] / max(sum_i w_i [takes part], 1e-6).
// With no non-base model the base is returned.
void merge_sce(TensorView base, const std::vector<TensorView>& others, uint64_t numel, double select_topk,
               DType out_dtype, void* out);

}  // namespace recall
