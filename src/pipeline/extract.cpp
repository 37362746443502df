// Pipelined extraction of pooled representations over the model x stage grid.
#include "recall/pipeline/extract.h"

#include <algorithm>
#include <memory>

#include "recall/dist/mpi_check.h"
#include "recall/engine/library.h"
#include "recall/merge/typical.h"
#include "recall/text/samples.h"
#include "recall/text/tokenizer.h"
#include "recall/util/error.h"

namespace recall {

std::vector<std::vector<int64_t>> load_task_samples(const MergeConfig& config, const MergeInputs& inputs) {
  const ModelDir& ref = inputs.models[inputs.reference];
  std::vector<Sample> samples = read_samples(config.data);
  if (config.typical.max_samples > 0 && static_cast<int64_t>(samples.size()) > config.typical.max_samples)
    samples.resize(config.typical.max_samples);
  std::unique_ptr<Tokenizer> tokenizer;
  const bool any_text = std::any_of(samples.begin(), samples.end(),
                                    [](const Sample& s) { return s.kind == SampleKind::Text; });
  if (any_text) tokenizer = Tokenizer::open_model_dir(ref.path);
  TokenPolicy policy = TokenPolicy::for_model(ref.config, tokenizer.get());
  const int64_t limit = std::min(config.max_length, ref.config.max_position_embeddings);
  policy.max_positions = 0;  // truncated below instead of rejected
  std::vector<std::vector<int64_t>> out;
  for (const Sample& s : samples) {
    auto ids = sample_token_ids(s, policy);
    if (static_cast<int64_t>(ids.size()) > limit) ids.resize(limit);
    out.push_back(std::move(ids));
  }
  return out;
}

Representations extract_representations(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                         const std::vector<std::vector<int64_t>>& samples,
                                         const ExtractOptions& options, int only_model) {
  const ModelConfig& cfg = inputs.models[inputs.reference].config;
  Representations reps;
  reps.models = static_cast<int64_t>(inputs.models.size());
  reps.hidden_states = cfg.num_hidden_layers + 1;
  reps.samples = static_cast<int64_t>(samples.size());
  reps.hidden = cfg.hidden_size;
  const int64_t N = reps.samples, H = reps.hidden;
  // This rank's pooled results, computed by the engine: (model, hidden state) -> [N, H].
  const std::vector<engine::PooledHiddenState> mine =
      engine::library().pool_own_cells(grid, comm, inputs, samples, options, only_model);

  // All-gather: each rank contributes [(model, hidden state) header + N*H floats] records.
  std::vector<float> send;
  for (const engine::PooledHiddenState& p : mine) {
    send.push_back(static_cast<float>(p.model));
    send.push_back(static_cast<float>(p.hidden_state));
    send.insert(send.end(), p.values.begin(), p.values.end());
  }
  int world = 0;
  MPI_Comm_size(comm, &world);
  int count = static_cast<int>(send.size());
  std::vector<int> counts(world), displs(world);
  MPI_CHECK(MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, comm));
  int64_t total = 0;
  for (int r = 0; r < world; ++r) {
    displs[r] = static_cast<int>(total);
    total += counts[r];
  }
  if (total > INT32_MAX) fail("representations too large to all-gather (", total, " floats)");
  std::vector<float> all(total);
  MPI_CHECK(MPI_Allgatherv(send.data(), count, MPI_FLOAT, all.data(), counts.data(), displs.data(), MPI_FLOAT, comm));
  reps.values.assign(reps.models * reps.hidden_states * N * H, 0.0f);
  for (int64_t pos = 0; pos < total;) {
    const auto m = static_cast<int64_t>(all[pos]), index = static_cast<int64_t>(all[pos + 1]);
    std::copy(all.begin() + pos + 2, all.begin() + pos + 2 + N * H,
              reps.values.begin() + ((m * reps.hidden_states + index) * N) * H);
    pos += 2 + N * H;
  }
  return reps;
}

TypicalSelection select_typical_samples(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                        const MergeConfig& config,
                                        const std::vector<std::vector<int64_t>>& task_samples) {
  ExtractOptions eo;
  eo.device = config.parallel.device;
  eo.micro_batch = config.parallel.micro_batch;
  eo.stream_samples = config.parallel.stream_samples;
  eo.pooling = config.typical.pooling;
  const int ref = static_cast<int>(inputs.reference);
  Representations reps = extract_representations(grid, comm, inputs, task_samples, eo, ref);
  TypicalSelection sel;
  sel.hidden_state = config.typical.hidden_state < 0 ? reps.hidden_states - 1 : config.typical.hidden_state;
  const int64_t N = reps.samples, H = reps.hidden;
  std::vector<double> x(reps.at(ref, sel.hidden_state), reps.at(ref, sel.hidden_state) + N * H);
  KMeansOptions ko;
  ko.clusters = config.typical.clusters;
  ko.seed = config.typical.seed;
  ko.max_iterations = config.typical.iterations;
  // Every rank holds the same pooled matrix, so every rank computes the same clustering.
  KMeansResult km = kmeans(x, N, H, ko);
  sel.sample_ids = km.sample_of_cluster;
  sel.iterations = km.iterations;
  sel.inertia = km.inertia;
  return sel;
}

}  // namespace recall
