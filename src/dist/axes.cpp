// Data movement along the grid's axes: the model-axis gather of per-cell data and the pipeline
// neighbours on a model's stage axis.
#include "recall/dist/axes.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "recall/util/error.h"

namespace recall::dist {

void gather_models(Communicator& axis, const Grid& grid, int stage, int world_rank,
                   const std::map<int, const void*>& mine, size_t count, DType dtype, void* out) {
  const std::vector<int> members = grid.model_axis_ranks(stage);
  if (static_cast<int>(members.size()) != axis.size() || members[axis.rank()] != world_rank)
    fail("gather along the model axis: the communicator (rank ", axis.rank(), " of ", axis.size(),
         ") is not the model axis of stage ", stage, " for world rank ", world_rank);
  // The models this rank owns at this stage are consecutive (model-major placement).
  std::vector<int> owned;
  for (int m = 0; m < grid.models(); ++m)
    if (grid.owner({m, stage}) == world_rank) owned.push_back(m);
  std::string problem;
  for (int m : owned)
    if (!mine.count(m) || (mine.at(m) == nullptr && count > 0))
      problem = "rank " + std::to_string(world_rank) + " owns cell m" + std::to_string(m) + ".s" +
                std::to_string(stage) + " but passed no data for it";
  for (const auto& [m, ptr] : mine)
    if (std::find(owned.begin(), owned.end(), m) == owned.end())
      problem = "rank " + std::to_string(world_rank) + " passed data for model " + std::to_string(m) +
                " but does not own cell m" + std::to_string(m) + ".s" + std::to_string(stage);
  int bad = problem.empty() ? 0 : 1, any = 0;
  axis.all_reduce(&bad, &any, 1, DType::I32, ReduceOp::Max);
  if (any)
    fail("gather along the model axis at stage ", stage, ": ",
         problem.empty() ? "another rank of the axis passed the wrong cells" : problem);

  const size_t es = dtype_size(dtype);
  // Pack this rank's cells in model order (one copy; device buffers would need a device copy, so
  // on NCCL pass a single cell per rank, the layout of a full-size world).
  std::vector<uint8_t> packed;
  const void* send = owned.empty() ? nullptr : mine.at(owned.front());
  if (owned.size() > 1) {
    if (axis.backend() != Backend::Mpi)
      fail("gather along the model axis: a rank owning ", owned.size(), " cells of stage ", stage,
           " needs host buffers (MPI backend)");
    packed.resize(owned.size() * count * es);
    for (size_t i = 0; i < owned.size(); ++i)
      std::copy_n(static_cast<const uint8_t*>(mine.at(owned[i])), count * es, packed.data() + i * count * es);
    send = packed.data();
  }
  std::vector<size_t> counts(axis.size(), 0);
  for (int m = 0; m < grid.models(); ++m) {
    const int r = static_cast<int>(std::find(members.begin(), members.end(), grid.owner({m, stage})) -
                                   members.begin());
    counts[r] += count;
  }
  axis.all_gather_v(send, out, counts, dtype);
}

StageNeighbours stage_neighbours(const Grid& grid, int model, int stage) {
  const std::vector<int> members = grid.stage_axis_ranks(model);
  auto axis_rank = [&](int s) {
    return static_cast<int>(std::find(members.begin(), members.end(), grid.owner({model, s})) - members.begin());
  };
  StageNeighbours n;
  n.self = axis_rank(stage);
  if (stage > 0) {
    n.prev = axis_rank(stage - 1);
    n.prev_local = n.prev == n.self;
  }
  if (stage + 1 < grid.stages()) {
    n.next = axis_rank(stage + 1);
    n.next_local = n.next == n.self;
  }
  return n;
}

}  // namespace recall::dist
