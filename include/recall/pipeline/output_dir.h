// The output directory of a merge job and what recall promises about it (docs/RELIABILITY.md):
// - everything is written under <dir>.partial and renamed to <dir> only when every rank succeeded;
//   <dir>.partial itself appears whole (staged as <dir>.partial.new with its job.key, then renamed),
//   so another job looking without the lock never takes a .partial being created for a user's;
// - recall deletes or replaces only what it wrote: a <dir>.partial holding its job.key, a <dir> or
//   <dir>.old holding a recall manifest.json (with output.overwrite for <dir>), or an empty <dir>;
//   never a directory that is or holds one of the job's inputs;
// - one job per output at a time: <dir>.lock, created exclusively (O_EXCL, which NFS and Lustre
//   honour where flock may not), names the job holding it;
// - a rerun resumes an interrupted job's work only when everything that changes the output is
//   the same (the job key).
// Only rank 0 touches the files; the caller agrees on the outcome across ranks.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/model/merge_inputs.h"
#include "recall/util/lock_file.h"

namespace recall {

// What must be equal for a rerun to reuse an interrupted job's work: the resolved config (how
// often progress is saved and whether to overwrite aside), recall's version and revision, the
// identity (path, size, modification time, inode) of every weight file and of the data file, and
// the contents of every model's config.json, the reference's tokenizer files and the LoRA adapters'
// adapter_config.json.
std::string job_key(MergeConfig config, const MergeInputs& inputs);

// Every path a merge reads: model and adapter directories, LoRA base models, the data file, the
// config file.
std::vector<std::string> merge_input_paths(const MergeConfig& config);

class OutputDir {
 public:
  explicit OutputDir(std::string final_dir);

  const std::string& final_dir() const { return final_; }
  const std::string& partial() const { return partial_; }
  std::string h5() const;               // merged.h5
  std::string hf() const;               // hf/
  std::string recall_state() const;     // recall_state.json: typical samples and block weights
  std::string statistics() const;       // statistics/: calibration statistics (removed at the commit)
  std::string file(const std::string& name) const;  // <partial>/<name>

  // Why this output may not be written (empty when it may): it is "/", it is or holds one of
  // `inputs`, or it lies inside a model directory; it exists and is not a committed recall output
  // (or an empty directory), or exists without `overwrite`; a <dir>.partial or <dir>.old that
  // recall did not write is in the way.
  std::vector<std::string> problems(bool overwrite, const std::vector<std::string>& inputs,
                                    const std::vector<std::string>& model_dirs) const;

  // Rank 0: keeps an interrupted job's work when its job key equals `key` (and not `fresh`),
  // else clears <dir>.partial (only when it holds recall's job.key) and starts it with the key.
  // Returns whether the work is kept; `log` gets a line saying what was removed.
  bool prepare(const std::string& key, bool fresh, std::string* log) const;

  // Tensors recorded as merged and synced (empty when none; the caller checks that the outputs
  // they were written to are still there).
  std::set<std::string> merged_tensors() const;
  // Rank 0: starts an empty list / appends to it (synced to disk).
  void start_progress() const;
  void record_merged(const std::vector<std::string>& names) const;

  // Rank 0: the finished <dir>.partial takes the final name. Temporary files of dead processes
  // (*.tmp.<pid>) are removed first; an existing output (with `overwrite`, and a recall output,
  // checked again) moves to <dir>.old and is removed after the rename.
  void commit(bool overwrite) const;

 private:
  std::string final_, partial_;
};

// The exclusive lock of an output directory, held by rank 0 for the whole job: <dir>.lock, a
// recall/util/lock_file.h lock (O_EXCL, holder's host, pid, Slurm job, heartbeat; a dead holder's
// lock is taken over, said in `takeover`). Throws naming the holder when another job holds it.
class OutputLock {
 public:
  explicit OutputLock(const std::string& final_dir);
  ~OutputLock();  // releases the lock
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;
  const std::string& takeover() const;

 private:
  std::unique_ptr<LockFile> lock_;
};

}  // namespace recall
