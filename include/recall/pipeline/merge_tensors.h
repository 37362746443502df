// The merge loop: every tensor of the output, merged by the configured method (the registry's
// kernel, with the tensor's resolved parameters) from its sources (recall/pipeline/layout.h) and
// written into the HF shards and merged.h5 (collectively), whichever the config asks for, in the
// chunks of plan_merge_chunks (recall/pipeline/plan.h). Row-wise methods split each tensor's rows
// among all ranks and each rank reads only its rows of every input, so every input byte is read
// once; whole-tensor methods give each tensor to one rank. Arithmetic is in fixed model order, so
// the bytes do not depend on the number of ranks.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/io/h5_writer.h"
#include "recall/merge/registry.h"
#include "recall/model/merge_inputs.h"
#include "recall/pipeline/hf_shards.h"
#include "recall/pipeline/statistics.h"

namespace recall {

struct MergeStats {
  uint64_t bytes_read = 0;     // by this rank
  uint64_t bytes_written = 0;  // by this rank
  double seconds = 0;
  // Where the merging thread's time went (reads run on a helper thread and count only as waiting):
  double wait_seconds = 0;   // waiting for a chunk's reads
  double merge_seconds = 0;  // merge kernels and NaN/infinity checks of the outputs
  double write_seconds = 0;  // HF shard and merged.h5 writes, and the collective calls around them
  // XXH3-64 of the output bytes of every tensor this rank merged whole (one rank, or a whole-tensor
  // method's owner), hashed as written: slot index -> checksum. The checksum phase need not read
  // them back.
  std::map<size_t, uint64_t> checksums;
  // RegMean: slot index -> the reciprocal condition estimate of the Gram matrix solved for it (the
  // tensors this rank solved).
  std::map<size_t, double> rcond;
  bool aborted = false;  // some rank failed; every rank stopped at the same collective point
  std::string error;     // this rank's error ("" when another rank failed)
};

// Collective over comm: when `h5` is given, creates /tensors/<name> for every slot and writes the
// merged bytes there; when `hf` is given, writes the same bytes into the export's shards (tensor
// index = slot index). On a failure on any rank every rank returns with `aborted` set (merged.h5
// must still be closed by all). Resuming: `done` lists tensors already merged into the existing
// outputs (their datasets exist and are complete); the datasets are then not created again.
// `statistics`: the calibration statistics of data-aware methods and AIM (nullptr when none).
// `on_tensor_done` runs on every rank after each tensor's writes (the caller flushes and records
// progress there).
// Threads: a helper reads (and checks for NaN/infinity) the next chunk's inputs while the calling
// thread merges the current one; another writes the chunk's HF rows while the calling thread makes
// the collective merged.h5 write. Only the calling thread makes MPI or HDF5 calls.
MergeStats merge_tensors(H5Writer* h5, MPI_Comm comm, const MergeConfig& config, const MergeInputs& inputs,
                         const std::vector<TensorParams>& params, bool resume = false,
                         const std::set<std::string>& done = {}, HfShardWriter* hf = nullptr,
                         const std::function<void(const std::string&)>& on_tensor_done = {},
                         const StatisticsStore* statistics = nullptr);

}  // namespace recall
