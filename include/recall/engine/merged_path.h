// RegMean++'s statistics pass (extraction.h MergedPath; docs/ALGORITHM.md §9): every model's
// calibration stream runs block by block through the MERGED model, and each model's own block l
// sees the stream's block-l input for its Gram matrices. Torch stays inside the .cpp.
#pragma once

#include <mpi.h>

#include "recall/dist/grid.h"
#include "recall/engine/extraction.h"
#include "recall/model/merge_inputs.h"

namespace recall::engine {

// Collective over `comm` (every rank of the grid, whether it owns a cell of a block or not): for
// each block l in order, the owners of block l's stage run each of their models' block l on that
// model's stream and write its statistics; every rank agrees (dist::agreed, so a failure anywhere
// stops every rank there); the owners then build the merged block l (options.merged_path.block)
// and move their streams through it; after a stage's last block each stream goes to the owner of
// its model's next stage. Needs options.statistics.gram and options.merged_path.
void run_merged_path(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs, const SampleTokens& samples,
                     const ExtractOptions& options);

}  // namespace recall::engine
