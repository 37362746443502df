// The plan of a merge job, as pure functions of the config, the inputs' headers and the world
// size (testable without MPI or weights): the grid's shape, each rank's memory plan, and the
// chunks the merge loop works through. The merge loop sizes its buffers from the same functions,
// so the plan and the job cannot drift apart.
#pragma once

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/dist/grid.h"
#include "recall/engine/extraction.h"
#include "recall/model/merge_inputs.h"

namespace recall {

// The grid's shape: the reference model's bytes per block and outside the blocks.
dist::GridSpec grid_spec(const MergeInputs& inputs);

// One chunk of the merge loop: rows [first_row, end_row) of tensor `tensor` (an index into
// inputs.slots) on this rank; every rank has the same number of chunks per tensor (they meet in
// the same collective writes), some of them empty.
struct MergeChunk {
  size_t tensor = 0;
  uint64_t first_row = 0, end_row = 0;
  bool first = false, last = false;  // of its tensor
  bool whole = false;  // this rank merges the whole tensor (so it can hash it as it writes it)
  uint64_t rows() const { return end_row - first_row; }
};

// The chunks of rank `rank` of `world`, in merge order, skipping the tensors in `done`.
// Row-wise methods split each tensor's rows among the ranks (dist::row_range) and read at most
// `chunk_bytes` of the widest input's rows per chunk; whole-tensor methods give tensor t to rank
// t % world, in one chunk.
std::vector<MergeChunk> plan_merge_chunks(const MergeConfig& config, const MergeInputs& inputs, int rank,
                                          int world, const std::set<std::string>& done = {});

// Bytes of one row of slot `slot` in the widest input dtype.
uint64_t widest_row_bytes(const MergeInputs& inputs, size_t slot);

// The memory one rank needs, in bytes, by part.
struct MemoryPlan {
  uint64_t process = 0;        // the program itself: libraries, MPI and HDF5 state, and libtorch
                               // when the job runs a model (measured baselines, see plan.cpp)
  uint64_t weights = 0;        // extraction: the blocks resident at once, in float32
  uint64_t activations = 0;    // extraction: hidden states, attention scores, MLP activations
  uint64_t recall_data = 0;    // RECALL: token table of the data, then the larger of (pooled [N, H]
                               // floats + k-means) and (representations + their all-gather)
  uint64_t merge_buffers = 0;  // merge: inputs (double-buffered), output, the kernel's working memory
  uint64_t statistics = 0;     // data-aware methods and AIM: the calibration tokens, the linear-input
                               // statistics' accumulators (linear_statistics_bytes) or the Fisher
                               // pass of the models this rank computes
  uint64_t total() const { return process + weights + activations + recall_data + merge_buffers + statistics; }
};

// The streaming extraction's bound on held hidden states in memory (ExtractOptions::
// max_resident_bytes): parallel.stream_samples (rounded up to whole micro-batches) samples at
// max_length tokens of hidden_size float32 values; the job passes it to the engine and the plan
// counts it, one number for both. 0 without streaming.
uint64_t stream_resident_bytes(const MergeConfig& config, const MergeInputs& inputs);

// The accumulators of the linear-input statistics (engine/extraction.h) on `rank` for a pass with
// `statistics`: float64 Gram matrices ([in, in] per group, with gram) and |x| sums ([in], with
// abs_sum) of the four groups of each block held, plus one micro-batch's rows of the widest input
// widened to float64 (and their |x|, and the compact copy in float32: 20 bytes a value). Resident
// extraction holds every block of the largest run of one model's consecutive cells on the rank
// (written at the end of that run), streaming the largest one block (written before the next
// loads); on cuda one more block, the host copy a block's file is written from. 0 when
// !statistics.any() or the rank owns no cell.
uint64_t linear_statistics_bytes(const MergeConfig& config, const MergeInputs& inputs, const dist::Grid& grid,
                                 int rank, const engine::LinearStatisticsOptions& statistics);

// The bytes of the calibration statistics files (<dir>.partial/statistics, pipeline/statistics.h)
// on disk: per model whose cells the extraction runs and per block, the four Gram matrices in
// float64 (in^2 x 8 bytes each) and |x| sums; per model a float32 Fisher of every tensor. A 70B
// RegMean of 3 models: 3 x 80 x 8.2 GB = 2.0 TB.
uint64_t statistics_disk_bytes(const MergeConfig& config, const MergeInputs& inputs);

// RegMean++'s merged path on `rank` (engine/merged_path.h), beyond the candidate blocks and the
// statistics that linear_statistics_bytes and the weights already count: the streams it holds
// (resident: every calibration sample's hidden states at max_length, float32, of each model with a
// cell here; streaming: the stream_resident_bytes bound they share, in the activations already),
// one micro-batch's host copy for a hand-over, the merged block of the largest block of its stages
// in float32 three times (the merged tensors, the block built from them, the fused q/k/v or
// gate/up parts while it is built), the kernel's working memory for that block's largest tensor
// (the RegMean solve), and a micro-batch's merged embedding rows. 0 for other methods or a rank
// without cells.
uint64_t merged_path_bytes(const MergeConfig& config, const MergeInputs& inputs, const dist::Grid& grid, int rank);

// RECALL's data on every rank, in bytes, by part (recall_data() is their sum as the plan counts it).
struct RecallDataPlan {
  uint64_t tokens = 0;           // the data's token table: 8 a sample + 4 a token, x2 for growth
  uint64_t pooled = 0;           // the clustered hidden state of every sample: N x H x 4
  uint64_t kmeans = 0;           // k-means' own buffers and subset (merge/typical.h)
  uint64_t representations = 0;  // M x (L+1) x K x H floats, x4: engine output, send, receive, result
  uint64_t total() const { return tokens + std::max(pooled + kmeans, representations); }
};
RecallDataPlan recall_data_plan(const MergeConfig& config, const MergeInputs& inputs);

// The statistics part of the plan of `rank` (data-aware methods): the calibration tokens, and the
// Fisher pass of the models this rank computes (model m on rank m mod world).
uint64_t statistics_plan(const MergeConfig& config, const MergeInputs& inputs, int rank, int world);

// The plan of `rank`; `grid` is the extraction grid (nullptr for methods without one).
MemoryPlan memory_plan(const MergeConfig& config, const MergeInputs& inputs, const dist::GridSpec& spec,
                       const dist::Grid* grid, int rank, int world);

// The plans of every planned rank, as the job prints them (every rank when at most 64 or
// `verbose`, else the largest), and the budget check: throws naming the rank, the parts and what
// lowers each when the largest plan exceeds `budget` (0 = no limit).
std::string memory_plan_text(const std::vector<MemoryPlan>& plans, uint64_t budget, bool verbose);
void check_memory_budget(const std::vector<MemoryPlan>& plans, uint64_t budget);

// The merge loop's input buffers of one set (one per model) and its output buffer, in bytes, for
// the chunks of `rank` (the largest chunk of each); whole-tensor methods hold one set.
struct MergeBuffers {
  std::vector<uint64_t> input_bytes;  // per model
  uint64_t output_bytes = 0;
  uint64_t work_bytes = 0;            // the method's own working memory (registry)
  int input_sets = 2;                 // 2: the next chunk's reads overlap this chunk's merge
  uint64_t total() const;
};
MergeBuffers merge_buffers(const MergeConfig& config, const MergeInputs& inputs, int rank, int world);

}  // namespace recall
