// The merge phase of the job around the merge loop (recall/pipeline/merge_tensors.h): merged.h5
// created or reopened on resume, the HF shards written in place (each only when output.formats
// lists it), resume checkpoints every
// output.checkpoint_bytes (outputs synced, then the merged tensors recorded), progress lines with
// an ETA, and at the end what produced the tensors (/recall/* datasets and root attributes).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/merge/registry.h"
#include "recall/model/merge_inputs.h"
#include "recall/pipeline/hf_shards.h"
#include "recall/pipeline/merge_tensors.h"
#include "recall/pipeline/output_dir.h"
#include "recall/pipeline/report.h"
#include "recall/util/log.h"
#include "recall/util/memory.h"

namespace recall {

// Collective over comm. `resume`: the output directory holds an interrupted job's work with the
// same job key. Returns the loop's statistics (`aborted` when another rank failed: its error
// reaches every rank through the caller's agreement); throws this rank's error. Either way every
// rank has closed merged.h5.
MergeStats run_merge_phase(MPI_Comm comm, const MergeConfig& config, const MergeInputs& inputs,
                           const std::vector<TensorParams>& params, const OutputDir& out, bool resume,
                           HfShardWriter& hf, const MergeReport& report, const std::string& resolved_yaml,
                           const Log& log, const StatisticsStore* statistics = nullptr);

// Collective: the XXH3-64 of every merged tensor (those a rank hashed as it wrote them are not
// read back; the others are read from the shards, or from merged.h5 when there are no shards),
// stored as attributes of merged.h5's datasets when it is written (they hold the same bytes).
// Closes the shards. Returns tensor name -> checksum on every rank. Rank 0 logs its read-back
// progress (its share is about 1/world of the tensors not hashed while written).
std::map<std::string, uint64_t> write_checksums(MPI_Comm comm, const MergeConfig& config, const std::string& h5_path,
                                                HfShardWriter& hf, const MergeInputs& inputs,
                                                const std::map<size_t, uint64_t>& known, const Log& log);

// Collective: the merge's bytes (summed over ranks), each rank's loop seconds and memory (its
// plan's total and the peaks `peaks` sampled), into the report.
void gather_merge_totals(MPI_Comm comm, const MergeConfig& config, const MergeInputs& inputs, const MergeStats& stats, uint64_t planned,
                         const MemoryPeaks& peaks, MergeReport* report);

}  // namespace recall
