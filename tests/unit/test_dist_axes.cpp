// Pipeline neighbours on the stage axis without MPI: axis ranks, ends, and in-memory hand-offs
// when one rank owns consecutive stages.
#include <gtest/gtest.h>

#include "recall/dist/axes.h"

using namespace recall::dist;

TEST(DistAxes, StageNeighboursOnEveryLayout) {
  GridSpec spec;
  spec.models = 2;
  spec.stages = 3;
  spec.block_bytes = {1, 1, 1};
  // Full world: one cell per rank; model 1's pipeline is ranks 3, 4, 5 = axis ranks 0, 1, 2.
  const Grid full(spec, 6);
  StageNeighbours n = stage_neighbours(full, 1, 1);
  EXPECT_EQ(n.self, 1);
  EXPECT_EQ(n.prev, 0);
  EXPECT_EQ(n.next, 2);
  EXPECT_FALSE(n.prev_local);
  EXPECT_FALSE(n.next_local);
  n = stage_neighbours(full, 1, 0);
  EXPECT_EQ(n.prev, -1);
  n = stage_neighbours(full, 1, 2);
  EXPECT_EQ(n.next, -1);
  // Two ranks: each owns a whole model, so every hand-off is local and the axis has one rank.
  const Grid two(spec, 2);
  n = stage_neighbours(two, 0, 1);
  EXPECT_EQ(n.self, 0);
  EXPECT_TRUE(n.prev_local);
  EXPECT_TRUE(n.next_local);
  // Four ranks over 6 cells: runs of 2, 1, 2, 1 or similar; check consistency with the owners.
  const Grid four(spec, 4);
  for (int m = 0; m < 2; ++m) {
    const std::vector<int> axis = four.stage_axis_ranks(m);
    for (int s = 0; s < 3; ++s) {
      n = stage_neighbours(four, m, s);
      EXPECT_EQ(axis[n.self], four.owner({m, s}));
      if (s > 0) {
        EXPECT_EQ(axis[n.prev], four.owner({m, s - 1}));
        EXPECT_EQ(n.prev_local, four.owner({m, s - 1}) == four.owner({m, s}));
      }
      if (s < 2) {
        EXPECT_EQ(axis[n.next], four.owner({m, s + 1}));
        EXPECT_EQ(n.next_local, four.owner({m, s + 1}) == four.owner({m, s}));
      }
    }
  }
}
