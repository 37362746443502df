// The output directory of a merge job: everything is written under <dir>.partial and renamed to
// <dir> only when every rank succeeded. The job key (what must be equal for a rerun to reuse an
// interrupted job's work), the list of tensors already merged (progress.txt, appended at resume
// checkpoints), the saved RECALL weights, and the commit. Only rank 0 touches the files; the
// caller agrees on the results across ranks.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/model/merge_inputs.h"

namespace recall {

// What must be equal for a rerun to reuse an interrupted job's work: the resolved config (how
// often progress is saved and whether to overwrite aside) and the identity of every input shard
// (path, size, modification time).
std::string job_key(MergeConfig config, const MergeInputs& inputs);

class OutputDir {
 public:
  explicit OutputDir(std::string final_dir);

  const std::string& final_dir() const { return final_; }
  const std::string& partial() const { return partial_; }
  std::string h5() const;               // merged.h5
  std::string hf() const;               // hf/
  std::string recall_state() const;     // recall_state.json: typical samples and block weights
  std::string file(const std::string& name) const;  // <partial>/<name>

  // Rank 0: keeps an interrupted job's work when its job key equals `key` (and not `fresh`),
  // else clears <dir>.partial and starts it with the key. Returns whether the work is kept.
  bool prepare(const std::string& key, bool fresh) const;

  // Tensors recorded as merged and synced (empty when none).
  std::set<std::string> merged_tensors() const;
  // Rank 0: starts an empty list / appends to it (synced to disk).
  void start_progress() const;
  void record_merged(const std::vector<std::string>& names) const;

  // Rank 0: the finished <dir>.partial takes the final name (an existing output moves to
  // <dir>.old first and is removed after the rename).
  void commit() const;

 private:
  std::string final_, partial_;
};

}  // namespace recall
