// The distributed context on 1..4 ranks: ranks and local ranks, versions, and the grid's axis
// communicators (membership, rank order, and an all-gather along the model axis in model order).
#include <gtest/gtest.h>
#include <mpi.h>

#include "recall/dist/context.h"
#include "recall/dist/failure.h"
#include "recall/util/error.h"

using namespace recall;
using namespace recall::dist;

namespace {

GridSpec spec_2x2() {
  GridSpec s;
  s.models = 2;
  s.stages = 2;
  s.block_bytes = {100, 100, 100, 100};
  return s;
}

// A 3-model x 2-stage grid (6 cells) for ranks 1..4: some ranks own cells of two models.
GridSpec spec_3x2() {
  GridSpec s = spec_2x2();
  s.models = 3;
  return s;
}

}  // namespace

TEST(MpiContext, RanksHostAndVersions) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  int r = 0, p = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  EXPECT_EQ(ctx.rank(), r);
  EXPECT_EQ(ctx.world(), p);
  // One node in CI: local rank == rank.
  EXPECT_EQ(ctx.local_size(), p);
  EXPECT_EQ(ctx.local_rank(), r);
  EXPECT_EQ(ctx.device_index(), -1);
  EXPECT_FALSE(ctx.host().empty());
  const std::string v = ctx.versions();
  EXPECT_NE(v.find("mpi: Open MPI"), std::string::npos) << v;
  EXPECT_NE(v.find("thread level funneled"), std::string::npos) << v;
  EXPECT_NE(v.find("communicators mpi"), std::string::npos) << v;
  EXPECT_EQ(ctx.where(), "rank " + std::to_string(r) + " (host " + ctx.host() + ")");
  EXPECT_EQ(ctx.world_comm().backend(), Backend::Mpi);
}

TEST(MpiContext, GridAxesFollowTheOwners) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  for (const GridSpec& spec : {spec_2x2(), spec_3x2()}) {
    if (ctx.world() > spec.models * spec.stages) continue;
    const Grid grid(spec, ctx.world());
    ctx.set_grid(grid);
    EXPECT_EQ(ctx.where(), "rank " + std::to_string(ctx.rank()) + " (host " + ctx.host() + ", cells " +
                               grid.describe_cells(ctx.rank()) + ")");
    for (int s = 0; s < grid.stages(); ++s) {
      const std::vector<int> members = grid.model_axis_ranks(s);
      const bool member = std::find(members.begin(), members.end(), ctx.rank()) != members.end();
      ASSERT_EQ(ctx.in_model_axis(s), member) << "stage " << s;
      if (!member) continue;
      Communicator& axis = ctx.model_axis(s);
      ASSERT_EQ(axis.size(), static_cast<int>(members.size()));
      ASSERT_EQ(members[axis.rank()], ctx.rank());
      // Each member contributes one value per cell of stage s it owns (model index * 10 + s);
      // the gathered values must come out in model order 0..M-1.
      std::vector<int32_t> mine;
      for (const Cell& c : grid.cells_of(ctx.rank()))
        if (c.stage == s) mine.push_back(c.model * 10 + s);
      std::vector<int32_t> all(grid.models());
      axis.all_gather_v(mine.data(), mine.size(), all.data(), all.size(), DType::I32);
      for (int m = 0; m < grid.models(); ++m) ASSERT_EQ(all[m], m * 10 + s) << "stage " << s;
    }
    for (int m = 0; m < grid.models(); ++m) {
      const std::vector<int> members = grid.stage_axis_ranks(m);
      const bool member = std::find(members.begin(), members.end(), ctx.rank()) != members.end();
      ASSERT_EQ(ctx.in_stage_axis(m), member) << "model " << m;
      if (!member) continue;
      Communicator& axis = ctx.stage_axis(m);
      ASSERT_EQ(members[axis.rank()], ctx.rank());
      std::vector<int32_t> mine;
      for (const Cell& c : grid.cells_of(ctx.rank()))
        if (c.model == m) mine.push_back(m * 10 + c.stage);
      std::vector<int32_t> all(grid.stages());
      axis.all_gather_v(mine.data(), mine.size(), all.data(), all.size(), DType::I32);
      for (int s = 0; s < grid.stages(); ++s) ASSERT_EQ(all[s], m * 10 + s) << "model " << m;
    }
  }
}

TEST(MpiContext, NotOnAnAxisIsAClearError) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  if (ctx.world() < 2) GTEST_SKIP() << "on 1 rank every axis has this rank";
  GridSpec spec = spec_2x2();
  const Grid grid(spec, ctx.world());
  ctx.set_grid(grid);
  // With 2..4 ranks, rank 0 owns m0.s0 and never a cell of model 1.
  if (ctx.rank() == 0) {
    try {
      ctx.stage_axis(1);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), ctx.where() + " is not on the stage axis of model 1 (it owns no cell of that model)");
    }
  }
  try {
    Context& c = ctx;
    c.set_grid(Grid(spec, 1));
    if (ctx.world() != 1) FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "grid placed for 1 ranks but the job runs on " + std::to_string(ctx.world()));
  }
}

// The device chosen by the config, after the context exists: every rank checks its node and all
// agree before any NCCL set-up. Here (no GPU, or no NCCL in the build) every rank throws the same
// error naming the setting and the fix, and the context stays on cpu with MPI communicators; on a
// node with a GPU per rank the world communicator becomes NCCL's.
TEST(MpiContext, SetDeviceAgreesOnEveryRank) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  const std::string W = std::to_string(ctx.world());
  try {
    ctx.set_device(Device::Cuda, "parallel.device");
    EXPECT_EQ(ctx.world_comm().backend(), Backend::Nccl);
    EXPECT_GE(ctx.device_index(), 0);
  } catch (const CollectiveError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("step 'device': rank 0 (host " + ctx.host() + ") failed: parallel.device is cuda", 0), 0u) << m;
    if (ctx.world() > 1) EXPECT_NE(m.find("(" + W + " of " + W + " ranks failed)"), std::string::npos) << m;
    EXPECT_TRUE(m.find("use parallel.device: cpu") != std::string::npos ||
                m.find("NCCL refuses two ranks on one GPU") != std::string::npos) << m;
    EXPECT_EQ(ctx.device(), Device::Cpu);
    EXPECT_EQ(ctx.world_comm().backend(), Backend::Mpi);
  }
  ctx.set_device(Device::Cpu, "parallel.device");
  EXPECT_EQ(ctx.device(), Device::Cpu);
  EXPECT_EQ(ctx.device_index(), -1);
  EXPECT_EQ(ctx.world_comm().backend(), Backend::Mpi);
  ctx.set_grid(Grid(spec_2x2(), ctx.world()));
  try {
    ctx.set_device(Device::Cpu, "parallel.device");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "distributed context: set the device before the grid");
  }
}
