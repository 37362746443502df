// Movement along the grid's axes on 1..4 ranks: the model-axis gather returns every model's
// per-cell data in model order (also when a rank owns several models of a stage), and a toy
// pipeline over the stage axis (hidden states handed from stage to stage through
// stage_neighbours, in memory when local) gives the single-process result.
#include <gtest/gtest.h>
#include <mpi.h>

#include "recall/dist/axes.h"
#include "recall/dist/context.h"
#include "recall/util/error.h"

using namespace recall;
using namespace recall::dist;

namespace {

GridSpec spec_3x2() {
  GridSpec s;
  s.models = 3;
  s.stages = 2;
  s.block_bytes = {5, 5, 5};
  return s;
}

float pooled(int m, int s, size_t i) { return 1000.0f * m + 100.0f * s + static_cast<float>(i) * 0.5f; }

}  // namespace

TEST(MpiAxes, GatherModelsInModelOrder) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  const Grid grid(spec_3x2(), ctx.world());
  ctx.set_grid(grid);
  const size_t count = 11;  // e.g. K samples x hidden, flattened
  for (int s = 0; s < grid.stages(); ++s) {
    if (!ctx.in_model_axis(s)) continue;
    std::map<int, std::vector<float>> data;
    std::map<int, const void*> mine;
    for (const Cell& c : grid.cells_of(ctx.rank())) {
      if (c.stage != s) continue;
      auto& v = data[c.model];
      for (size_t i = 0; i < count; ++i) v.push_back(pooled(c.model, s, i));
      mine[c.model] = v.data();
    }
    std::vector<float> all(grid.models() * count, -1.0f);
    gather_models(ctx.model_axis(s), grid, s, ctx.rank(), mine, count, DType::F32, all.data());
    for (int m = 0; m < grid.models(); ++m)
      for (size_t i = 0; i < count; ++i) ASSERT_EQ(all[m * count + i], pooled(m, s, i)) << "m" << m << ".s" << s;
  }
}

TEST(MpiAxes, GatherWithWrongCellsFailsEveryMember) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  const Grid grid(spec_3x2(), ctx.world());
  ctx.set_grid(grid);
  if (!ctx.in_model_axis(0)) return;
  float x = 0;
  std::map<int, const void*> mine;
  for (const Cell& c : grid.cells_of(ctx.rank()))
    if (c.stage == 0) mine[c.model] = &x;
  const bool culprit = grid.owner({0, 0}) == ctx.rank();
  if (culprit) mine.erase(0);
  std::vector<float> all(grid.models());
  try {
    gather_models(ctx.model_axis(0), grid, 0, ctx.rank(), mine, 1, DType::F32, all.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              culprit ? "gather along the model axis at stage 0: rank " + std::to_string(ctx.rank()) +
                            " owns cell m0.s0 but passed no data for it"
                      : std::string("gather along the model axis at stage 0: another rank of the axis passed the wrong cells"));
  }
}

TEST(MpiAxes, ToyPipelineOverTheStageAxis) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  const Grid grid(spec_3x2(), ctx.world());
  ctx.set_grid(grid);
  // Each stage s of model m maps h -> h * 2 + (m + 1) * (s + 1); the input is h = i.
  const size_t n = 6;
  for (int m = 0; m < grid.models(); ++m) {
    if (!ctx.in_stage_axis(m)) continue;
    Communicator& axis = ctx.stage_axis(m);
    std::vector<double> h(n);
    bool have = false;
    for (int s = 0; s < grid.stages(); ++s) {
      if (grid.owner({m, s}) != ctx.rank()) continue;
      const StageNeighbours nb = stage_neighbours(grid, m, s);
      ASSERT_EQ(nb.self, axis.rank());
      if (s == 0) {
        for (size_t i = 0; i < n; ++i) h[i] = static_cast<double>(i);
      } else if (!nb.prev_local) {
        axis.recv(h.data(), n, DType::F64, nb.prev);
      } else {
        ASSERT_TRUE(have);  // handed over in memory from our own previous stage
      }
      for (double& v : h) v = v * 2 + (m + 1) * (s + 1);
      have = true;
      if (nb.next >= 0 && !nb.next_local) axis.send(h.data(), n, DType::F64, nb.next);
      if (s == grid.stages() - 1) {
        for (size_t i = 0; i < n; ++i) {
          double want = static_cast<double>(i);
          for (int t = 0; t < grid.stages(); ++t) want = want * 2 + (m + 1) * (t + 1);
          ASSERT_EQ(h[i], want) << "model " << m;
        }
      }
    }
  }
}
