// The engine's part of representation extraction: the cells this rank owns run the samples
// through their blocks (hidden states passed from stage to stage over MPI) and keep the
// pooled (mask-aware mean) hidden states that ExtractOptions::hidden_states asks for, [N, H] floats
// each, filled micro-batch by micro-batch. The all-gather of the pooled values across ranks is
// the pipeline's (recall/pipeline/extract.h). Torch stays inside the .cpp.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "recall/dist/grid.h"
#include "recall/engine/extraction.h"
#include "recall/model/merge_inputs.h"

namespace recall::engine {

// Runs `samples` through the cells this rank owns (of `only_model` alone when >= 0) and returns
// their pooled hidden states (those options.hidden_states keeps), reporting to options.progress. Collective along each model's stages: a stage receives its input
// from the previous stage's owner and sends its output to the next one's.
std::vector<PooledHiddenState> pool_own_cells(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                        const SampleTokens& samples, const ExtractOptions& options, int only_model);

// Blocks whose weights pool_own_cells has loaded in this process so far (a stage of n blocks loaded
// at once counts n): a streaming pass loads each of a rank's blocks once, a resident pass its
// stages once. For tests (the engine linked in, or through a helper that is).
int64_t block_loads();
// Bytes of hidden states streaming passes have written to spill files in this process so far.
int64_t spilled_bytes();

}  // namespace recall::engine
