// Data movement along the grid's axes, for the engine: the all-gather of per-cell data along a
// stage's model axis (pooled representations of every model, in model order) and the pipeline
// neighbours of a cell on its model's stage axis (where hidden states come from and go to).
#pragma once

#include <cstddef>
#include <map>
#include <vector>

#include "recall/dist/comm.h"
#include "recall/dist/grid.h"

namespace recall::dist {

// Collective over the model axis of `stage` (Context::model_axis(stage)). Each member passes the
// data of every cell (m, stage) it owns: model -> `count` elements of `dtype` (host memory for the
// MPI backend, device memory for NCCL). Every member receives grid.models() * count elements in
// model order 0..M-1 into `out` (a buffer of that size). Fails (before moving data) when a member
// passes the wrong set of models; the check is agreed, so every member fails alike.
void gather_models(Communicator& model_axis, const Grid& grid, int stage, int world_rank,
                   const std::map<int, const void*>& mine, size_t count, DType dtype, void* out);

// The pipeline neighbours of cell (model, stage) as ranks of the stage-axis communicator of
// `model` (Context::stage_axis(model)): who computes stage-1 (its output is this cell's input) and
// who computes stage+1 (this cell's output goes there); -1 at the ends. When the neighbour is
// this same rank (it owns consecutive stages) `prev_local` / `next_local` is true: hand the hidden
// states over in memory, no send/recv.
struct StageNeighbours {
  int self = 0;            // this cell's owner, as a stage-axis rank
  int prev = -1, next = -1;
  bool prev_local = false, next_local = false;
};
StageNeighbours stage_neighbours(const Grid& grid, int model, int stage);

}  // namespace recall::dist
