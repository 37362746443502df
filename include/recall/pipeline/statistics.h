// The statistics phase of data-aware methods (RegMean, Fisher) and of AIM: the calibration
// samples (the first calibration.samples lines of `data`) run through the models and what the
// method needs is saved under <dir>.partial/statistics/<model index>/:
//   block_<l>.safetensors  the Gram matrices and |activation| sums of block l's linear inputs,
//                          written by the rank that runs block l on the grid (engine/extraction.h)
//   fisher.safetensors     the model's diagonal Fisher (engine/fisher.h), one model per rank in turn
// then complete.json. A resumed job with complete.json skips the phase; the commit removes the
// directory (it can be larger than the merged model). StatisticsStore reads the files per tensor
// for the merge loop.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/dist/grid.h"
#include "recall/io/safetensors.h"
#include "recall/merge/statistics.h"
#include "recall/model/merge_inputs.h"
#include "recall/util/log.h"

namespace recall {

// What the statistics phase computes for this config.
struct StatisticsNeeds {
  bool gram = false;     // every model's Gram matrices (RegMean, RegMean++)
  bool merged_path = false;  // RegMean++: block l's Grams taken on the merged blocks < l (engine/extraction.h)
  bool abs_sum = false;  // |activation| sums (AIM: the base's)
  bool fisher = false;   // every model's diagonal Fisher
  bool any() const { return gram || abs_sum || fisher; }
};
StatisticsNeeds statistics_needs(const MergeConfig& config);

// <dir>/<model>/fisher.safetensors, model `model`'s Fisher file.
std::string fisher_path(const std::string& dir, size_t model);

// Runs the phase (collective over `comm`; `grid`: the extraction grid, needed for the Gram matrices
// and activation sums) unless `resume` finds <dir>/complete.json and every file the merge will read
// whole (StatisticsStore::damage; a damaged one is logged and the phase runs again: the files are
// recall's own). Returns the number of calibration samples.
int64_t compute_statistics(const dist::Grid* grid, MPI_Comm comm, const MergeConfig& config, const MergeInputs& inputs,
                           const std::string& dir, bool resume, const Log& log);

// The saved statistics, per output tensor, for the merge loop's kernel calls. Files are opened on
// first use and kept open; reads are pread()s of the pieces a kernel asks for.
class StatisticsStore {
 public:
  StatisticsStore(const MergeConfig& config, const MergeInputs& inputs, std::string dir);
  // The statistics of output tensor `slot`, its inputs in layout order (inputs.layout[slot]).
  TensorStatistics of(size_t slot) const;
  // What is wrong with the files the merge would read (missing, truncated, another shape or dtype,
  // no tokens), naming the file; "" when nothing is. Reads headers and the small tensors only.
  std::string damage() const;

 private:
  const SafetensorsFile& file(const std::string& path) const;
  std::string block_file(size_t model, int64_t block) const;
  std::vector<double> aim_importance(size_t model, int64_t block, LinearGroup g) const;
  int64_t tokens(size_t model, int64_t block, LinearGroup g) const;
  const TensorInfo& gram_info(size_t model, int64_t block, LinearGroup g, uint64_t in) const;

  const MergeConfig& config_;
  const MergeInputs& inputs_;
  std::string dir_;
  StatisticsNeeds needs_;
  std::vector<double> fisher_norm_;  // per model
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace recall
