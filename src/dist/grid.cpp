// The model x stage grid: balanced contiguous partitions of blocks into stages and of cells into
// ranks, and the plan rank 0 prints.
#include "recall/dist/grid.h"

#include <algorithm>
#include <limits>
#include <sstream>

#include "recall/util/error.h"
#include "recall/util/format.h"

namespace recall::dist {

namespace {

// Fewest contiguous parts with every part sum <= limit (greedy is optimal for this question).
int parts_needed(const std::vector<uint64_t>& w, uint64_t limit) {
  int parts = 1;
  uint64_t run = 0;
  for (uint64_t x : w) {
    if (run + x > limit) {
      ++parts;
      run = 0;
    }
    run += x;
  }
  return parts;
}

}  // namespace

RowRange row_range(int64_t rows, int parts, int part) {
  if (parts < 1 || part < 0 || part >= parts)
    fail("row_range: part ", part, " of ", parts, " parts; expected 0 <= part < parts");
  if (rows < 0) fail("row_range: ", rows, " rows; expected >= 0");
  return RowRange{rows * part / parts, rows * (part + 1) / parts};
}

std::vector<int> balanced_partition(const std::vector<uint64_t>& weights, int parts) {
  const int n = static_cast<int>(weights.size());
  if (parts < 1) fail("cannot split ", n, " items into ", parts, " parts; expected at least 1 part");
  if (parts > n) fail("cannot split ", n, " items into ", parts, " non-empty parts");

  std::vector<uint64_t> prefix(n + 1, 0);
  uint64_t largest = 0;
  for (int i = 0; i < n; ++i) {
    prefix[i + 1] = prefix[i] + weights[i];
    largest = std::max(largest, weights[i]);
  }
  // 1. The smallest achievable maximum part sum, by bisection on the greedy feasibility test.
  uint64_t lo = largest, hi = prefix[n];
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (parts_needed(weights, mid) <= parts) hi = mid; else lo = mid + 1;
  }
  const uint64_t limit = lo;

  // 2. Among partitions with every part <= limit, the one with the least sum of squares; exact
  //    (unsigned __int128 cannot overflow for byte counts below 2^63).
  using Cost = unsigned __int128;
  const Cost kInf = ~Cost(0);
  std::vector<Cost> cost((parts + 1) * static_cast<size_t>(n + 1), kInf);
  std::vector<int> from((parts + 1) * static_cast<size_t>(n + 1), -1);
  auto at = [n](int p, int j) { return static_cast<size_t>(p) * (n + 1) + j; };
  cost[at(0, 0)] = 0;
  for (int p = 1; p <= parts; ++p) {
    for (int j = p; j <= n - (parts - p); ++j) {
      Cost best = kInf;
      int best_i = -1;
      for (int i = p - 1; i < j; ++i) {  // ascending, strict '<': earliest split wins ties
        const uint64_t seg = prefix[j] - prefix[i];
        if (seg > limit || cost[at(p - 1, i)] == kInf) continue;
        const Cost c = cost[at(p - 1, i)] + Cost(seg) * Cost(seg);
        if (c < best) {
          best = c;
          best_i = i;
        }
      }
      cost[at(p, j)] = best;
      from[at(p, j)] = best_i;
    }
  }
  if (cost[at(parts, n)] == kInf) fail("internal error: no partition of ", n, " items into ", parts, " parts");
  std::vector<int> bounds(parts + 1);
  bounds[parts] = n;
  for (int p = parts, j = n; p > 0; --p) {
    j = from[at(p, j)];
    bounds[p - 1] = j;
  }
  return bounds;
}

std::vector<StageRange> split_stages(const GridSpec& spec) {
  const int blocks = static_cast<int>(spec.block_bytes.size());
  if (blocks == 0) fail("grid: the model has no blocks; expected at least 1");
  if (spec.stages < 1) fail("grid: stages = ", spec.stages, "; expected at least 1");
  if (spec.stages > blocks) {
    fail("grid: stages = ", spec.stages, " but the model has only ", blocks,
         " blocks; every stage needs at least one block (use at most ", blocks, " stages)");
  }
  std::vector<uint64_t> w = spec.block_bytes;
  w.front() += spec.first_stage_extra_bytes;
  w.back() += spec.last_stage_extra_bytes;
  const std::vector<int> bounds = balanced_partition(w, spec.stages);
  std::vector<StageRange> stages(spec.stages);
  for (int s = 0; s < spec.stages; ++s) {
    stages[s].first_block = bounds[s];
    stages[s].end_block = bounds[s + 1];
    for (int b = bounds[s]; b < bounds[s + 1]; ++b) stages[s].bytes += w[b];
  }
  return stages;
}

Grid::Grid(const GridSpec& spec, int world) : models_(spec.models), world_(world) {
  if (spec.models < 1) fail("grid: models = ", spec.models, "; expected at least 1");
  stages_ = split_stages(spec);
  const int S = static_cast<int>(stages_.size());
  const int cells = models_ * S;
  if (world < 1) fail("grid: world size ", world, "; expected at least 1");
  if (world > cells) {
    const int blocks = num_blocks();
    std::ostringstream hint;
    if (S < blocks) {
      const int more = std::min(blocks, (world + models_ - 1) / models_);
      hint << "; ---> HINT: use more stages (stages = " << more << " gives " << models_ * more
           << " cells; the model has " << blocks << " blocks)";
    } else {
      hint << "; every block already is its own stage, so run with at most " << cells << " ranks";
    }
    fail("grid: ", world, " ranks but only ", cells, " cells (", models_, " models x ", S,
         " stages); the largest useful world size is ", cells, hint.str());
  }
  std::vector<uint64_t> cell_bytes(cells);
  for (int m = 0; m < models_; ++m)
    for (int s = 0; s < S; ++s) cell_bytes[m * S + s] = stages_[s].bytes;
  rank_first_cell_ = balanced_partition(cell_bytes, world);
  cell_owner_.assign(cells, -1);
  for (int r = 0; r < world; ++r)
    for (int c = rank_first_cell_[r]; c < rank_first_cell_[r + 1]; ++c) cell_owner_[c] = r;
}

const StageRange& Grid::stage(int s) const {
  if (s < 0 || s >= stages()) fail("grid: stage ", s, " out of range [0, ", stages(), ")");
  return stages_[s];
}

int Grid::stage_of_block(int block) const {
  for (int s = 0; s < stages(); ++s)
    if (block >= stages_[s].first_block && block < stages_[s].end_block) return s;
  fail("grid: block ", block, " out of range [0, ", num_blocks(), ")");
}

int Grid::owner(const Cell& c) const {
  if (c.model < 0 || c.model >= models_ || c.stage < 0 || c.stage >= stages())
    fail("grid: cell (model ", c.model, ", stage ", c.stage, ") outside the ", models_, " x ",
         stages(), " grid");
  return cell_owner_[c.model * stages() + c.stage];
}

std::vector<Cell> Grid::cells_of(int rank) const {
  if (rank < 0 || rank >= world_) fail("grid: rank ", rank, " out of range [0, ", world_, ")");
  std::vector<Cell> out;
  for (int c = rank_first_cell_[rank]; c < rank_first_cell_[rank + 1]; ++c)
    out.push_back(Cell{c / stages(), c % stages()});
  return out;
}

uint64_t Grid::rank_bytes(int rank) const {
  uint64_t total = 0;
  for (const Cell& c : cells_of(rank)) total += stages_[c.stage].bytes;
  return total;
}

std::vector<int> Grid::model_axis_ranks(int s) const {
  stage(s);
  std::vector<int> ranks;
  for (int m = 0; m < models_; ++m) {
    const int r = owner({m, s});
    if (ranks.empty() || ranks.back() != r) ranks.push_back(r);  // owners ascend with m
  }
  return ranks;
}

std::vector<int> Grid::stage_axis_ranks(int m) const {
  if (m < 0 || m >= models_) fail("grid: model ", m, " out of range [0, ", models_, ")");
  std::vector<int> ranks;
  for (int s = 0; s < stages(); ++s) {
    const int r = owner({m, s});
    if (ranks.empty() || ranks.back() != r) ranks.push_back(r);  // owners ascend with s
  }
  return ranks;
}

std::string Grid::describe_cells(int rank) const {
  std::ostringstream os;
  bool first = true;
  for (const Cell& c : cells_of(rank)) {
    os << (first ? "" : " ") << 'm' << c.model << ".s" << c.stage;
    first = false;
  }
  return os.str();
}

std::string Grid::plan() const {
  std::ostringstream os;
  os << "grid: " << models_ << " models x " << stages() << " stages = " << models_ * stages()
     << " cells on " << world_ << " ranks\n";
  for (int s = 0; s < stages(); ++s) {
    const StageRange& st = stages_[s];
    os << "  stage " << s << ": blocks [" << st.first_block << ", " << st.end_block << ") "
       << format_bytes(st.bytes) << " per model\n";
  }
  uint64_t max_bytes = 0, total = 0;
  for (int r = 0; r < world_; ++r) {
    const uint64_t b = rank_bytes(r);
    max_bytes = std::max(max_bytes, b);
    total += b;
    os << "  rank " << r << ": " << describe_cells(r) << "  " << format_bytes(b) << "\n";
  }
  const double mean = static_cast<double>(total) / world_;
  os << "  bytes per rank: max " << format_bytes(max_bytes) << ", mean "
     << format_bytes(static_cast<uint64_t>(mean)) << ", imbalance "
     << (mean > 0 ? static_cast<double>(max_bytes) / mean : 1.0) << "\n";
  return os.str();
}

}  // namespace recall::dist
