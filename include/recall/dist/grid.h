// The model x stage grid: blocks split into S contiguous stages balanced by parameter bytes, and
// the M*S cells (model m, stage s) assigned to the ranks of any world size 1..M*S. Everything here
// is a pure function of (models, stages, per-block bytes, world), testable without MPI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace recall::dist {

// The shape of the job that placement needs; the same for every model (preflight checks that the
// models share one architecture).
struct GridSpec {
  int models = 0;                         // M: models merged (reference included)
  int stages = 0;                         // S: pipeline positions per model
  std::vector<uint64_t> block_bytes;      // parameter bytes of each block, index = block
  uint64_t first_stage_extra_bytes = 0;   // non-block bytes on stage 0 (token embedding)
  uint64_t last_stage_extra_bytes = 0;    // non-block bytes on stage S-1 (final norm, lm_head)
};

// Blocks [first_block, end_block) of one stage and the parameter bytes they carry (extras included).
struct StageRange {
  int first_block = 0;
  int end_block = 0;
  uint64_t bytes = 0;
  int num_blocks() const { return end_block - first_block; }
};

struct Cell {
  int model = 0;
  int stage = 0;
  bool operator==(const Cell& o) const { return model == o.model && stage == o.stage; }
};

// Rows [first, end) of `rows` that part `part` of `parts` owns: contiguous, in part order, sizes
// differing by at most one (first = rows * part / parts). Pure; fails on part outside [0, parts).
struct RowRange {
  int64_t first = 0;
  int64_t end = 0;
  int64_t count() const { return end - first; }
};
RowRange row_range(int64_t rows, int parts, int part);

// Splits `weights` (in order) into `parts` contiguous non-empty ranges that minimise the largest
// range sum, and among those the sum of squared range sums (so the slack spreads evenly). Ties go
// to the earliest split point, which makes the result deterministic. Returns parts+1 boundaries
// (first 0, last weights.size()). Fails if parts < 1 or parts > weights.size().
std::vector<int> balanced_partition(const std::vector<uint64_t>& weights, int parts);

// Stage s owns blocks [a_s, b_s); the extras count towards the first/last stage's balance.
// Fails with the numbers if stages < 1 or stages > number of blocks.
std::vector<StageRange> split_stages(const GridSpec& spec);

// The placement of every cell on the ranks of one world size.
//
// Cells are ordered model-major, (0,0), (0,1), .., (0,S-1), (1,0), .., and cut into `world`
// contiguous runs balanced by bytes (balanced_partition). Consequences the rest of the runtime
// relies on: a rank's cells are consecutive, so a rank holding several stages of one model runs
// them as a local pipeline; and for a fixed stage the owner rank never decreases as the model
// index grows (likewise for a fixed model and growing stage), so concatenating per-rank pieces
// in rank order along either axis yields model (or stage) order.
class Grid {
 public:
  // Fails if the spec is invalid or world is not in [1, M*S] (naming the largest useful size).
  Grid(const GridSpec& spec, int world);

  int models() const { return models_; }
  int stages() const { return static_cast<int>(stages_.size()); }
  int world() const { return world_; }
  int num_blocks() const { return stages_.empty() ? 0 : stages_.back().end_block; }

  const StageRange& stage(int s) const;
  const std::vector<StageRange>& stage_ranges() const { return stages_; }
  int stage_of_block(int block) const;

  int owner(const Cell& c) const;               // rank that owns the cell
  std::vector<Cell> cells_of(int rank) const;   // model-major order
  uint64_t rank_bytes(int rank) const;          // parameter bytes the rank holds

  // The model axis at stage s: the distinct ranks owning cells (m, s) for m = 0..M-1, ascending.
  std::vector<int> model_axis_ranks(int stage) const;
  // The stage axis of model m: the distinct ranks owning cells (m, s) for s = 0..S-1, ascending.
  std::vector<int> stage_axis_ranks(int model) const;

  // "m1.s0 m1.s1" for the rank's cells (for logs and error messages).
  std::string describe_cells(int rank) const;

  // The plan rank 0 prints before loading anything: stages with their blocks and bytes, then one
  // line per rank with its cells and bytes, and the imbalance (max / mean bytes per rank).
  std::string plan() const;

 private:
  int models_ = 0;
  int world_ = 0;
  std::vector<StageRange> stages_;
  std::vector<int> cell_owner_;       // index m * S + s
  std::vector<int> rank_first_cell_;  // world + 1 boundaries into the model-major cell order
};

}  // namespace recall::dist
