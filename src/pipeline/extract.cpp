// Pipelined extraction of pooled representations over the model x stage grid, and the typical
// samples (see extract.h).
#include "recall/pipeline/extract.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "recall/dist/comm.h"
#include "recall/engine/library.h"
#include "recall/merge/typical.h"
#include "recall/pipeline/plan.h"
#include "recall/text/samples.h"
#include "recall/text/tokenizer.h"
#include "recall/util/error.h"
#include "recall/util/progress.h"

namespace recall {

SampleTokens load_task_samples(const MergeConfig& config, const MergeInputs& inputs) {
  return load_samples(config, inputs, config.typical.max_samples);
}

SampleTokens load_samples(const MergeConfig& config, const MergeInputs& inputs, int64_t most) {
  const ModelDir& ref = inputs.models[inputs.reference];
  const int64_t limit = std::min(config.max_length, ref.config.max_position_embeddings);
  // The tokenizer is opened at the first text sample (token-id files need none); the policy's
  // checks of token ids do not depend on it.
  std::unique_ptr<Tokenizer> tokenizer;
  TokenPolicy policy = TokenPolicy::for_model(ref.config, nullptr);
  policy.max_positions = 0;  // truncated below instead of rejected
  SampleTokens out;
  if (inputs.data_samples > 0) out.offsets.reserve(static_cast<size_t>(inputs.data_samples) + 1);
  for_each_sample(config.data, [&](Sample&& s) {
    if (s.kind == SampleKind::Text && !tokenizer) {
      tokenizer = Tokenizer::open_model_dir(ref.path);
      policy = TokenPolicy::for_model(ref.config, tokenizer.get());
      policy.max_positions = 0;
    }
    auto ids = sample_token_ids(s, policy);
    if (static_cast<int64_t>(ids.size()) > limit) ids.resize(limit);
    for (int64_t id : ids)
      if (id > INT32_MAX) fail(s.where(), ": token id ", id, " does not fit 32 bits");
    out.add(ids);
    return most <= 0 || out.size() < most;
  });
  // No shrink_to_fit: its copy would hold up to 3x the ids at once where the plan counts 2x
  // (capacity after doubling growth).
  return out;
}

namespace {

// `eo` with progress lines "<what>: done/total samples, samples/s, tokens/s, ETA" on `log`, from
// the rank that runs the last stage of the last of `models` (at most every 5 s and at the end);
// its total counts every model whose last stage that rank runs.
ExtractOptions with_progress(ExtractOptions eo, const dist::Grid& grid, MPI_Comm comm, const std::vector<int>& models,
                             int64_t samples, const std::string& what, const Log& log) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const int last = grid.stages() - 1;
  const int reporter = grid.owner({models.back(), last});
  if (rank != reporter) return eo;
  int64_t runs = 0;
  for (int m : models) runs += grid.owner({m, last}) == reporter ? 1 : 0;
  auto meter = std::make_shared<ProgressMeter>(samples * runs, "samples");
  const Log out = log.printing_here(true);
  eo.progress = [meter, out, what](int, int64_t n, int64_t tokens) {
    if (meter->advance(n, tokens)) out(what, ": ", meter->line());
  };
  return eo;
}

// Host-memory collectives over `comm` (chunked below MPI's int counts), waited for by polling with
// sleeps: the watchdog (a week, so never in practice) makes them non-blocking, and a rank that
// waits for the reference's owner (the typical step runs one model, often for minutes) leaves the
// core to the ranks that compute, where a blocking MPI call would spin on it.
std::unique_ptr<dist::Communicator> host_comm(MPI_Comm comm) {
  dist::CommOptions o;
  o.timeout_s = 7 * 24 * 3600.0;
  return dist::make_mpi_communicator(comm, o);
}

}  // namespace

Representations extract_representations(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                         const SampleTokens& samples, const ExtractOptions& options,
                                         const Log& log, int only_model) {
  const ModelConfig& cfg = inputs.models[inputs.reference].config;
  Representations reps;
  reps.models = static_cast<int64_t>(inputs.models.size());
  reps.hidden_states = cfg.num_hidden_layers + 1;
  reps.samples = samples.size();
  reps.hidden = cfg.hidden_size;
  const int64_t N = reps.samples, H = reps.hidden;
  std::vector<int> models;
  for (int m = 0; m < grid.models(); ++m)
    if (only_model < 0 || m == only_model) models.push_back(m);
  const ExtractOptions eo = with_progress(options, grid, comm, models, N, "representations", log);
  // This rank's pooled results, computed by the engine: (model, hidden state) -> [N, H].
  std::vector<engine::PooledHiddenState> mine =
      engine::library().pool_own_cells(grid, comm, inputs, samples, eo, only_model);

  // All-gather over the dist layer (64-bit counts, rounds below 2^31 elements): each rank
  // contributes [(model, hidden state) header + N*H floats] records.
  std::vector<float> send;
  for (engine::PooledHiddenState& p : mine) {
    send.push_back(static_cast<float>(p.model));
    send.push_back(static_cast<float>(p.hidden_state));
    send.insert(send.end(), p.values.begin(), p.values.end());
    std::vector<float>().swap(p.values);
  }
  auto world = host_comm(comm);
  const std::vector<size_t> counts = world->all_gather_counts(send.size());
  size_t total = 0;
  for (size_t c : counts) total += c;
  std::vector<float> all(total);
  world->all_gather_v(send.data(), all.data(), counts, DType::F32);
  std::vector<float>().swap(send);
  reps.values.assign(static_cast<size_t>(reps.models * reps.hidden_states * N * H), 0.0f);
  for (size_t pos = 0; pos < total;) {
    const auto m = static_cast<int64_t>(all[pos]), index = static_cast<int64_t>(all[pos + 1]);
    std::copy(all.begin() + static_cast<std::ptrdiff_t>(pos + 2),
              all.begin() + static_cast<std::ptrdiff_t>(pos + 2 + N * H),
              reps.values.begin() + ((m * reps.hidden_states + index) * N) * H);
    pos += static_cast<size_t>(2 + N * H);
  }
  return reps;
}

void extract_statistics(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs, const SampleTokens& samples,
                        const ExtractOptions& options, const Log& log, int only_model) {
  std::vector<int> models;
  for (int m = 0; m < grid.models(); ++m)
    if (only_model < 0 || m == only_model) models.push_back(m);
  ExtractOptions eo = with_progress(options, grid, comm, models, samples.size(), "statistics", log);
  eo.pooled = false;
  engine::library().pool_own_cells(grid, comm, inputs, samples, eo, only_model);
}

std::vector<float> pool_reference_state(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                        const SampleTokens& samples, const ExtractOptions& options,
                                        int64_t hidden_state, const Log& log) {
  const int ref = static_cast<int>(inputs.reference);
  const int64_t N = samples.size(), H = inputs.models[ref].config.hidden_size;
  ExtractOptions eo = with_progress(options, grid, comm, {ref}, N, "typical samples", log);
  eo.hidden_states = {hidden_state};
  std::vector<engine::PooledHiddenState> mine = engine::library().pool_own_cells(grid, comm, inputs, samples, eo, ref);
  // hidden.0 lives with stage 0, hidden.l+1 with the stage of block l.
  const int owner = grid.owner({ref, hidden_state == 0 ? 0 : grid.stage_of_block(static_cast<int>(hidden_state - 1))});
  std::vector<float> pooled;
  for (engine::PooledHiddenState& p : mine)
    if (p.hidden_state == hidden_state) pooled = std::move(p.values);
  mine.clear();
  const size_t count = static_cast<size_t>(N * H);
  auto world = host_comm(comm);
  // The owner says what it holds first, so that every rank fails alike when it is not the matrix
  // (a rank that threw alone would leave the others waiting in the broadcast).
  uint64_t held = world->rank() == owner ? pooled.size() : 0;
  world->broadcast(&held, 1, DType::U64, owner);
  if (held != count)
    fail("typical samples: rank ", owner, ", the owner of hidden.", hidden_state, ", pooled ", held,
         " values; expected N x H = ", N, " x ", H, " = ", count);
  if (world->rank() != owner) pooled.assign(count, 0.0f);
  world->broadcast(pooled.data(), count, DType::F32, owner);
  return pooled;
}

TypicalSelection select_typical_samples(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                        const MergeConfig& config, const SampleTokens& task_samples,
                                        const Log& log) {
  ExtractOptions eo;
  eo.device = config.parallel.device;
  eo.micro_batch = config.parallel.micro_batch;
  eo.stream_samples = config.parallel.stream_samples;
  eo.max_resident_bytes = stream_resident_bytes(config, inputs);
  eo.scratch_dir = config.parallel.scratch_dir;
  eo.pooling = config.typical.pooling;
  const int64_t L = inputs.models[inputs.reference].config.num_hidden_layers;
  TypicalSelection sel;
  sel.hidden_state = config.typical.hidden_state < 0 ? L : config.typical.hidden_state;
  const int64_t N = task_samples.size(), H = inputs.models[inputs.reference].config.hidden_size;
  const std::vector<float> x = pool_reference_state(grid, comm, inputs, task_samples, eo, sel.hidden_state, log);
  KMeansOptions ko;
  ko.clusters = config.typical.clusters;
  ko.seed = config.typical.seed;
  ko.max_iterations = config.typical.iterations;
  // Every rank holds the same pooled matrix, so every rank computes the same clustering; the
  // ranks share the assignment step of each Lloyd pass (merge/typical.h: the same result).
  auto world = host_comm(comm);
  ko.parts = world->size();
  ko.part = world->rank();
  std::vector<int64_t> mine_a;
  std::vector<double> mine_d;
  ko.share = [&](int64_t* assignment, double* dist, int64_t n) {
    std::vector<size_t> counts;
    for (int p = 0; p < ko.parts; ++p) {
      const auto [b, e] = kmeans_rows(n, ko.parts, p);
      counts.push_back(static_cast<size_t>(e - b));
    }
    const auto [first, end] = kmeans_rows(n, ko.parts, ko.part);
    mine_a.assign(assignment + first, assignment + end);  // MPI forbids a send inside the receive buffer
    mine_d.assign(dist + first, dist + end);
    world->all_gather_v(mine_a.data(), assignment, counts, DType::I64);
    world->all_gather_v(mine_d.data(), dist, counts, DType::F64);
  };
  const auto t0 = std::chrono::steady_clock::now();
  KMeansResult km = kmeans_subsampled(x.data(), N, H, ko, config.typical.kmeans_samples);
  sel.kmeans_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sel.clustered = std::min(N, config.typical.kmeans_samples > 0 ? config.typical.kmeans_samples : N);
  sel.sample_ids = km.sample_of_cluster;
  sel.iterations = km.iterations;
  sel.inertia = km.inertia;
  return sel;
}

}  // namespace recall
