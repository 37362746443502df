// Grid placement without MPI: balanced partitions against brute force, stage splits, cell
// ownership for every world size, the axes' rank order, and the error messages.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>

#include "testing_errors.h"
#include "recall/dist/grid.h"
#include "recall/util/error.h"

using recall::dist::balanced_partition;
using recall::dist::Cell;
using recall::dist::Grid;
using recall::dist::GridSpec;
using recall::dist::split_stages;

namespace {

struct Score {
  uint64_t max = 0;
  unsigned __int128 sumsq = 0;
};

Score score(const std::vector<uint64_t>& w, const std::vector<int>& bounds) {
  Score s;
  for (size_t p = 0; p + 1 < bounds.size(); ++p) {
    uint64_t sum = 0;
    for (int i = bounds[p]; i < bounds[p + 1]; ++i) sum += w[i];
    s.max = std::max(s.max, sum);
    s.sumsq += static_cast<unsigned __int128>(sum) * sum;
  }
  return s;
}

// Every way to cut n items into k non-empty contiguous parts; the lexicographic best
// (max, sum of squares), first found in lexicographic order of the cut points.
std::vector<int> brute_force(const std::vector<uint64_t>& w, int k) {
  const int n = static_cast<int>(w.size());
  std::vector<int> best;
  Score best_score;
  std::vector<int> cuts(k + 1);
  cuts[0] = 0;
  cuts[k] = n;
  std::function<void(int)> rec = [&](int p) {
    if (p == k) {
      const Score s = score(w, cuts);
      if (best.empty() || s.max < best_score.max ||
          (s.max == best_score.max && s.sumsq < best_score.sumsq)) {
        best = cuts;
        best_score = s;
      }
      return;
    }
    for (int c = cuts[p - 1] + 1; c <= n - (k - p); ++c) {
      cuts[p] = c;
      rec(p + 1);
    }
  };
  if (k == 1) return {0, n};
  rec(1);
  return best;
}

GridSpec llama_like(int models, int stages, int blocks) {
  GridSpec spec;
  spec.models = models;
  spec.stages = stages;
  spec.block_bytes.assign(blocks, 1000);
  spec.first_stage_extra_bytes = 1500;  // embedding
  spec.last_stage_extra_bytes = 1600;   // norm + lm_head
  return spec;
}

}  // namespace

TEST(Grid, BalancedPartitionMatchesBruteForce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 9);
    std::vector<uint64_t> w(n);
    for (auto& x : w) x = rng() % 4 == 0 ? 0 : rng() % 50;  // zeros and ties included
    for (int k = 1; k <= n; ++k) {
      const std::vector<int> got = balanced_partition(w, k);
      const std::vector<int> want = brute_force(w, k);
      ASSERT_EQ(got, want) << "n=" << n << " k=" << k << " trial " << trial;
      for (int p = 0; p < k; ++p) ASSERT_LT(got[p], got[p + 1]);  // non-empty
    }
  }
}

TEST(Grid, BalancedPartitionErrors) {
  EXPECT_EQ(error_message([] { balanced_partition({1, 2, 3}, 4); }),
            "cannot split 3 items into 4 non-empty parts");
  EXPECT_EQ(error_message([] { balanced_partition({1, 2, 3}, 0); }),
            "cannot split 3 items into 0 parts; expected at least 1 part");
}

TEST(Grid, StagesAreContiguousBalancedAndCountExtras) {
  // 8 equal blocks + a heavy embedding and lm_head: the first and last stage get fewer blocks.
  GridSpec spec = llama_like(1, 4, 8);
  spec.first_stage_extra_bytes = 2000;
  spec.last_stage_extra_bytes = 2000;
  const auto st = split_stages(spec);
  ASSERT_EQ(st.size(), 4u);
  EXPECT_EQ(st[0].first_block, 0);
  EXPECT_EQ(st[3].end_block, 8);
  for (int s = 0; s + 1 < 4; ++s) EXPECT_EQ(st[s].end_block, st[s + 1].first_block);
  // Total 12000 bytes over 4 stages: the optimum is 3000 each: [0,1) [1,4) [4,7) [7,8).
  EXPECT_EQ(st[0].num_blocks(), 1);
  EXPECT_EQ(st[1].num_blocks(), 3);
  EXPECT_EQ(st[2].num_blocks(), 3);
  EXPECT_EQ(st[3].num_blocks(), 1);
  for (const auto& s : st) EXPECT_EQ(s.bytes, 3000u);
}

TEST(Grid, StageErrorsNameTheNumbers) {
  EXPECT_EQ(error_message([] { split_stages(llama_like(2, 9, 8)); }),
            "grid: stages = 9 but the model has only 8 blocks; every stage needs at least one "
            "block (use at most 8 stages)");
  EXPECT_EQ(error_message([] { split_stages(llama_like(2, 0, 8)); }),
            "grid: stages = 0; expected at least 1");
  EXPECT_EQ(error_message([] { split_stages(llama_like(2, 1, 0)); }),
            "grid: the model has no blocks; expected at least 1");
}

TEST(Grid, EveryWorldSizeOwnsEveryCellOnceInAxisOrder) {
  for (int models : {1, 2, 3, 4}) {
    for (int stages : {1, 2, 3, 5}) {
      const GridSpec spec = llama_like(models, stages, 10);
      for (int world = 1; world <= models * stages; ++world) {
        const Grid g(spec, world);
        std::vector<int> seen(models * stages, 0);
        for (int r = 0; r < world; ++r) {
          const auto cells = g.cells_of(r);
          ASSERT_FALSE(cells.empty()) << "rank " << r << " of " << world << " owns nothing";
          for (const Cell& c : cells) {
            ++seen[c.model * stages + c.stage];
            ASSERT_EQ(g.owner(c), r);
          }
        }
        for (int x : seen) ASSERT_EQ(x, 1);
        // Owners ascend along both axes (the all-gathers rely on it).
        for (int s = 0; s < stages; ++s)
          for (int m = 1; m < models; ++m) ASSERT_LE(g.owner({m - 1, s}), g.owner({m, s}));
        for (int m = 0; m < models; ++m)
          for (int s = 1; s < stages; ++s) ASSERT_LE(g.owner({m, s - 1}), g.owner({m, s}));
        // Bytes: the busiest rank holds at most the mean plus one cell (contiguous runs).
        uint64_t total = 0, max_bytes = 0, max_cell = 0;
        for (int r = 0; r < world; ++r) {
          total += g.rank_bytes(r);
          max_bytes = std::max(max_bytes, g.rank_bytes(r));
        }
        for (int s = 0; s < stages; ++s) max_cell = std::max(max_cell, g.stage(s).bytes);
        ASSERT_LE(max_bytes, total / world + max_cell);
        // Deterministic.
        const Grid again(spec, world);
        for (int r = 0; r < world; ++r) ASSERT_EQ(g.describe_cells(r), again.describe_cells(r));
      }
    }
  }
}

TEST(Grid, FullWorldIsOneCellPerRankModelMajor) {
  const Grid g(llama_like(3, 2, 6), 6);
  for (int m = 0; m < 3; ++m)
    for (int s = 0; s < 2; ++s) EXPECT_EQ(g.owner({m, s}), m * 2 + s);
  EXPECT_EQ(g.model_axis_ranks(1), (std::vector<int>{1, 3, 5}));
  EXPECT_EQ(g.stage_axis_ranks(2), (std::vector<int>{4, 5}));
}

TEST(Grid, SmallWorldKeepsAModelsStagesTogether) {
  // 2 models x 2 stages on 2 ranks: each rank runs one whole model.
  const Grid g(llama_like(2, 2, 4), 2);
  EXPECT_EQ(g.describe_cells(0), "m0.s0 m0.s1");
  EXPECT_EQ(g.describe_cells(1), "m1.s0 m1.s1");
  EXPECT_EQ(g.model_axis_ranks(0), (std::vector<int>{0, 1}));
  EXPECT_EQ(g.stage_axis_ranks(1), (std::vector<int>{1}));
  // One rank: everything, and each axis has one member.
  const Grid one(llama_like(2, 2, 4), 1);
  EXPECT_EQ(one.describe_cells(0), "m0.s0 m0.s1 m1.s0 m1.s1");
  EXPECT_EQ(one.model_axis_ranks(1), (std::vector<int>{0}));
}

TEST(Grid, TooManyRanksNamesTheLargestUsefulSize) {
  EXPECT_EQ(error_message([] { Grid(llama_like(2, 2, 8), 6); }),
            "grid: 6 ranks but only 4 cells (2 models x 2 stages); the largest useful world size "
            "is 4; ---> HINT: use more stages (stages = 3 gives 6 cells; the model has 8 blocks)");
  EXPECT_EQ(error_message([] { Grid(llama_like(2, 2, 2), 5); }),
            "grid: 5 ranks but only 4 cells (2 models x 2 stages); the largest useful world size "
            "is 4; every block already is its own stage, so run with at most 4 ranks");
  EXPECT_EQ(error_message([] { Grid(llama_like(2, 2, 2), 0); }), "grid: world size 0; expected at least 1");
}

TEST(Grid, StageOfBlockAndPlan) {
  const Grid g(llama_like(2, 2, 4), 3);
  EXPECT_EQ(g.stage_of_block(0), 0);
  EXPECT_EQ(g.stage_of_block(3), 1);
  EXPECT_EQ(error_message([&] { g.stage_of_block(4); }), "grid: block 4 out of range [0, 4)");
  const std::string plan = g.plan();
  EXPECT_NE(plan.find("grid: 2 models x 2 stages = 4 cells on 3 ranks"), std::string::npos) << plan;
  EXPECT_NE(plan.find("stage 0: blocks [0, 2)"), std::string::npos) << plan;
  EXPECT_NE(plan.find("rank 2:"), std::string::npos) << plan;
  EXPECT_NE(plan.find("imbalance"), std::string::npos) << plan;
}
