// Pipelined extraction of pooled representations over the model x stage grid: samples flow
// through each model's stages in micro-batches (hidden states sent from stage to stage over MPI,
// so stages overlap across micro-batches); every cell keeps the mask-aware mean of the hidden
// states asked for; the pooled values then travel over the dist layer (chunked below MPI's int
// counts) so that every rank holds them. Also the first phase of RECALL: the reference model
// embeds the task data, only its clustered hidden state is kept ([N, H] floats, the one N-sized
// matrix besides the compact token table) and k-means picks the typical samples. Progress lines
// with a rate and an ETA come from the rank that runs the last stage. Torch stays inside the
// engine library (recall/engine/library.h).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/dist/grid.h"
#include "recall/engine/extraction.h"
#include "recall/pipeline/preflight.h"
#include "recall/util/log.h"

namespace recall {

using engine::ExtractOptions;
using engine::SampleTokens;

// Token ids of the data file's samples (text tokenized with the reference model's tokenizer),
// truncated to min(max_length, max_position_embeddings); at most max_samples (0 = all). Read one
// line at a time into a compact table (4 bytes a token, 8 a sample).
SampleTokens load_task_samples(const MergeConfig& config, const MergeInputs& inputs);
// The same with at most `most` samples (0 = all): the calibration samples of data-aware methods.
SampleTokens load_samples(const MergeConfig& config, const MergeInputs& inputs, int64_t most);

// Pooled representations [M][L+1][K][H] (index 0 = embedding output hidden.0, l+1 = block l),
// float32, identical on every rank.
struct Representations {
  int64_t models = 0, hidden_states = 0, samples = 0, hidden = 0;  // hidden_states = L + 1
  std::vector<float> values;
  // [samples x hidden] of hidden state `index` (0 = embedding output, l + 1 = block l's output).
  const float* at(int64_t model, int64_t index) const {
    return values.data() + ((model * hidden_states + index) * samples) * hidden;
  }
  const float* block_output(int64_t model, int64_t block) const { return at(model, block + 1); }
};

// Runs `samples` through every model on the grid and all-gathers the pooled representations of
// every hidden state (collective over `comm`, whose size is grid.world()). With `only_model` >= 0
// only that model runs (its representations; other models' entries stay zero). Progress lines
// on `log` ("representations: ...").
Representations extract_representations(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                         const SampleTokens& samples, const ExtractOptions& options,
                                         const Log& log, int only_model = -1);

// Runs `samples` through every model (only `only_model` when >= 0) on the grid for the linear-input
// statistics options.statistics asks for; the rank that runs a block writes its file
// (recall/engine/extraction.h). No pooled state is kept. Collective over `comm`.
void extract_statistics(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs, const SampleTokens& samples,
                        const ExtractOptions& options, const Log& log, int only_model = -1);

// The reference model's pooled hidden state `hidden_state` of every sample, [N, H] floats, the
// same on every rank: only that state is kept, on the rank that owns it, then broadcast (chunked).
std::vector<float> pool_reference_state(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                        const SampleTokens& samples, const ExtractOptions& options,
                                        int64_t hidden_state, const Log& log);

struct TypicalSelection {
  std::vector<int64_t> sample_ids;  // 0-based indices into the task samples (data lines), one per cluster
  int64_t hidden_state = 0;         // hidden-state index clustered
  int64_t iterations = 0;
  double inertia = 0;            // of the rows clustered
  int64_t clustered = 0;         // rows k-means ran on: N, or typical.kmeans_samples of them
  double kmeans_seconds = 0;
};

// k-means over the reference model's pooled `typical.hidden_state` (-1 = last block) of all task
// samples (of a seeded subset of typical.kmeans_samples when there are more, each centroid then
// taking its nearest sample among all: merge/typical.h kmeans_subsampled); the same selection on
// every rank.
TypicalSelection select_typical_samples(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                        const MergeConfig& config, const SampleTokens& task_samples,
                                        const Log& log);

}  // namespace recall
