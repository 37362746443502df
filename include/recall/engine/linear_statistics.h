// The statistics of the inputs of a block's linear layers (extraction.h: LinearStatisticsOptions,
// the groups and the file format), accumulated as the forward pass runs: a BlockObserver that
// keeps, per (block, group), X^T X and sum |x| in float64 over the real tokens of every
// micro-batch it sees, in the order it sees them (the same micro-batches in the same order give
// the same bits), and writes a block's file when asked. Torch inside the engine only.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <map>

#include "recall/engine/extraction.h"
#include "recall/engine/model.h"

namespace recall::engine {

class LinearStatistics final : public BlockObserver {
 public:
  explicit LinearStatistics(LinearStatisticsOptions options);

  // The micro-batch the next linear_input calls come from: its [N, T] mask (1 = real token).
  void set_mask(const at::Tensor& mask);
  // Adds the real tokens' rows of x [N, T, in] to (block, group)'s statistics (allocated, on x's
  // device, at the block's first call).
  void linear_input(int64_t block, LinearGroup group, const at::Tensor& x) override;

  // Writes block's statistics to linear_statistics_path(dir, model, block) (atomically: a
  // temporary file renamed) and frees them. Fails when the block saw no input.
  void write(int model, int64_t block);
  // Blocks whose statistics are held (not yet written).
  int64_t blocks_held() const { return static_cast<int64_t>(blocks_.size()); }

 private:
  struct Group {
    at::Tensor gram, abs_sum;  // float64 [in, in], [in]
    int64_t tokens = 0;
    bool seen = false;
  };
  LinearStatisticsOptions options_;
  at::Tensor rows_;  // indices of the real tokens among the micro-batch's N x T positions
  std::map<int64_t, std::array<Group, 4>> blocks_;
};

}  // namespace recall::engine
