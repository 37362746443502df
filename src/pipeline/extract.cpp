// Pipelined extraction of pooled representations over the model x stage grid.
#include "recall/pipeline/extract.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>

#include "recall/engine/model.h"
#include "recall/merge/typical.h"
#include "recall/text/samples.h"
#include "recall/text/tokenizer.h"
#include "recall/dist/mpi_check.h"
#include "recall/util/error.h"
#include "recall/util/fault.h"
#include "recall/util/fs.h"

namespace recall {

namespace {


// The consecutive stages [s0, s1) of `model` that this rank owns (empty when none).
std::pair<int, int> own_stages(const dist::Grid& grid, int model, int rank) {
  int s0 = -1, s1 = -1;
  for (int s = 0; s < grid.stages(); ++s)
    if (grid.owner({model, s}) == rank) {
      if (s0 < 0) s0 = s;
      s1 = s + 1;
    }
  return {s0, s1};
}

}  // namespace

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
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const ModelConfig& cfg = inputs.models[inputs.reference].config;
  Representations reps;
  reps.models = static_cast<int64_t>(inputs.models.size());
  reps.layers = cfg.num_hidden_layers + 1;
  reps.samples = static_cast<int64_t>(samples.size());
  reps.hidden = cfg.hidden_size;
  const int64_t N = reps.samples, H = reps.hidden, mb = std::max<int64_t>(1, options.micro_batch);
  // This rank's pooled results: (model, layer) -> [N, H].
  std::vector<std::tuple<int, int64_t, std::vector<float>>> mine;

  const at::Device device = engine::parse_device(options.device);
  const at::ScalarType dtype = engine::parse_compute_dtype(options.compute_dtype);
  for (int m = 0; m < grid.models(); ++m) {
    if (only_model >= 0 && m != only_model) continue;
    auto [s0, s1] = own_stages(grid, m, rank);
    if (s0 < 0) continue;
    const int64_t first_block = grid.stage(s0).first_block, end_block = grid.stage(s1 - 1).end_block;
    const int64_t first_layer = s0 == 0 ? 0 : first_block + 1;  // hidden.0 lives with stage 0
    std::vector<at::Tensor> pooled(end_block + 1 - first_layer);
    const int prev = s0 > 0 ? grid.owner({m, s0 - 1}) : -1;
    const int next = s1 < grid.stages() ? grid.owner({m, s1}) : -1;
    auto load = [&](int64_t begin, int64_t end, bool embedding) {
      engine::LoadOptions lo;
      lo.dtype = dtype;
      lo.device = device;
      lo.begin_block = begin;
      lo.end_block = end;
      lo.embedding = embedding;
      lo.head = false;
      return with_context("loading model '" + inputs.models[m].path + "' blocks [" + std::to_string(begin) + ", " +
                              std::to_string(end) + ")",
                          [&] { return engine::Model::load(inputs.models[m], lo); });
    };
    auto pool = [&](int64_t layer, const at::Tensor& h, const engine::Batch& batch) {
      at::Tensor p = engine::masked_mean(h, batch.mask);
      auto& slot = pooled[layer - first_layer];
      slot = slot.defined() ? at::cat({slot, p}) : p;
    };
    // The hidden states of micro-batch [b0, b1): embedded here (stage 0) or received.
    auto input_of = [&](const engine::Model* embedder, int64_t b0, int64_t b1, const engine::Batch& batch) {
      if (s0 == 0) {
        at::Tensor h = embedder->embed(batch.ids);
        pool(0, h, batch);
        return h;
      }
      at::Tensor host = at::empty({b1 - b0, batch.length(), H}, at::TensorOptions().dtype(dtype));
      MPI_CHECK(MPI_Recv(host.data_ptr(), static_cast<int>(host.nbytes()), MPI_BYTE, prev, m, comm, MPI_STATUS_IGNORE));
      return host.to(device);
    };
    auto output = [&](const at::Tensor& h) {
      if (next < 0) return;
      at::Tensor host = h.to(at::kCPU).contiguous();
      MPI_CHECK(MPI_Send(host.data_ptr(), static_cast<int>(host.nbytes()), MPI_BYTE, next, m, comm));
    };
    at::InferenceMode guard;
    if (options.stream_samples <= 0) {
      // Resident: the stage's blocks stay loaded; each micro-batch goes through all of them.
      engine::Model model = load(first_block, end_block, s0 == 0);
      for (int64_t b0 = 0; b0 < N; b0 += mb) {
        const int64_t b1 = std::min(N, b0 + mb);
        std::vector<std::vector<int64_t>> chunk(samples.begin() + b0, samples.begin() + b1);
        engine::Batch batch = engine::make_batch(chunk, device);
        at::Tensor h = input_of(&model, b0, b1, batch);
        for (int64_t l = first_block; l < end_block; ++l) {
          h = model.run_block(h, batch, l);
          pool(l + 1, h, batch);
        }
        fault_point("extract", rank, b0 / mb + 1);
        output(h);
      }
    } else {
      // Streaming: for each group of stream_samples samples (whole micro-batches), the hidden
      // states of the group are held while the stage's blocks are loaded one at a time. The same
      // operations on the same micro-batches as the resident path, so the same values.
      const int64_t group = std::max<int64_t>(1, options.stream_samples / mb) * mb;
      int64_t step = 0;
      for (int64_t g0 = 0; g0 < N; g0 += group) {
        const int64_t g1 = std::min(N, g0 + group);
        std::vector<engine::Batch> batches;
        std::vector<at::Tensor> hs;
        {
          std::optional<engine::Model> embedder;
          if (s0 == 0) embedder.emplace(load(0, 0, true));
          for (int64_t b0 = g0; b0 < g1; b0 += mb) {
            const int64_t b1 = std::min(g1, b0 + mb);
            std::vector<std::vector<int64_t>> chunk(samples.begin() + b0, samples.begin() + b1);
            batches.push_back(engine::make_batch(chunk, device));
            hs.push_back(input_of(embedder ? &*embedder : nullptr, b0, b1, batches.back()));
          }
        }
        for (int64_t l = first_block; l < end_block; ++l) {
          const engine::Model block = load(l, l + 1, false);
          for (size_t i = 0; i < hs.size(); ++i) {
            hs[i] = block.run_block(hs[i], batches[i], l);
            pool(l + 1, hs[i], batches[i]);
          }
          fault_point("extract", rank, ++step);
        }
        for (const at::Tensor& h : hs) output(h);
      }
    }
    for (size_t i = 0; i < pooled.size(); ++i) {
      at::Tensor p = pooled[i].to(at::kCPU).to(at::kFloat).contiguous();
      std::vector<float> v(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
      mine.emplace_back(m, first_layer + static_cast<int64_t>(i), std::move(v));
    }
  }

  // All-gather: each rank contributes [(model, layer) header + N*H floats] records.
  std::vector<float> send;
  for (const auto& [m, layer, v] : mine) {
    send.push_back(static_cast<float>(m));
    send.push_back(static_cast<float>(layer));
    send.insert(send.end(), v.begin(), v.end());
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
  reps.values.assign(reps.models * reps.layers * N * H, 0.0f);
  for (int64_t pos = 0; pos < total;) {
    const auto m = static_cast<int64_t>(all[pos]), layer = static_cast<int64_t>(all[pos + 1]);
    std::copy(all.begin() + pos + 2, all.begin() + pos + 2 + N * H,
              reps.values.begin() + ((m * reps.layers + layer) * N) * H);
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
  const int ref = static_cast<int>(inputs.reference);
  Representations reps = extract_representations(grid, comm, inputs, task_samples, eo, ref);
  TypicalSelection sel;
  sel.layer = config.typical.layer < 0 ? reps.layers - 1 : config.typical.layer;
  const int64_t N = reps.samples, H = reps.hidden;
  std::vector<double> x(reps.at(ref, sel.layer), reps.at(ref, sel.layer) + N * H);
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
