// The engine's part of representation extraction: the cells this rank owns run the samples
// through their blocks (hidden states passed from stage to stage over MPI) and keep the
// mask-aware mean of every block's output. The all-gather of the pooled values across ranks is
// the pipeline's (recall/pipeline/extract.h). Torch stays inside the .cpp.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "recall/dist/grid.h"
#include "recall/pipeline/extract.h"
#include "recall/pipeline/preflight.h"

namespace recall::engine {

// The pooled representations of one hidden state of one model: [samples x hidden] float32.
struct PooledLayer {
  int model = 0;
  int64_t layer = 0;  // hidden-state index: 0 = embedding output, l + 1 = block l
  std::vector<float> values;
};

// Runs `samples` through the cells this rank owns (of `only_model` alone when >= 0) and returns
// their pooled hidden states. Collective along each model's stages: a stage receives its input
// from the previous stage's owner and sends its output to the next one's.
std::vector<PooledLayer> pool_own_cells(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                        const std::vector<std::vector<int64_t>>& samples,
                                        const ExtractOptions& options, int only_model);

}  // namespace recall::engine
