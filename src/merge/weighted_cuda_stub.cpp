// Without the CUDA toolkit at build time the fused GPU kernel is absent: clear errors instead.
#ifndef RECALL_HAVE_CUDA_MERGE
#include "recall/merge/weighted_cuda.h"
#include "recall/util/error.h"

namespace recall {

bool cuda_merge_available() { return false; }

void merge_weighted_cuda(const std::vector<const void*>&, DType, const std::vector<double>&, bool, uint64_t, DType,
                         void*, void*) {
  fail("CUDA merge: this build of recall has no CUDA support (the CUDA toolkit was not found at configure time)");
}

}  // namespace recall
#endif
