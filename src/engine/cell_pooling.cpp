// The cells this rank owns: samples through their blocks in micro-batches, hidden states
// from stage to stage over MPI, mask-aware means of every block's output.
#include "recall/engine/cell_pooling.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>

#include "recall/dist/mpi_check.h"
#include "recall/engine/model.h"
#include "recall/util/error.h"
#include "recall/util/fault.h"

namespace recall::engine {

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

std::vector<PooledHiddenState> pool_own_cells(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                        const std::vector<std::vector<int64_t>>& samples,
                                        const ExtractOptions& options, int only_model) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const ModelConfig& cfg = inputs.models[inputs.reference].config;
  const int64_t N = static_cast<int64_t>(samples.size()), H = cfg.hidden_size;
  const int64_t mb = std::max<int64_t>(1, options.micro_batch);
  std::vector<PooledHiddenState> mine;
  const at::Device device = parse_device(std::string(name_of(kDevices, options.device)));
  const at::ScalarType dtype = parse_compute_dtype(options.compute_dtype);
  for (int m = 0; m < grid.models(); ++m) {
    if (only_model >= 0 && m != only_model) continue;
    auto [s0, s1] = own_stages(grid, m, rank);
    if (s0 < 0) continue;
    const int64_t first_block = grid.stage(s0).first_block, end_block = grid.stage(s1 - 1).end_block;
    const int64_t first_state = s0 == 0 ? 0 : first_block + 1;  // hidden.0 lives with stage 0
    std::vector<at::Tensor> pooled(end_block + 1 - first_state);
    const int prev = s0 > 0 ? grid.owner({m, s0 - 1}) : -1;
    const int next = s1 < grid.stages() ? grid.owner({m, s1}) : -1;
    auto load = [&](int64_t begin, int64_t end, bool embedding) {
      LoadOptions lo;
      lo.dtype = dtype;
      lo.device = device;
      lo.begin_block = begin;
      lo.end_block = end;
      lo.embedding = embedding;
      lo.head = false;
      return with_context("loading model '" + inputs.models[m].path + "' blocks [" + std::to_string(begin) + ", " +
                              std::to_string(end) + ")",
                          [&] { return Model::load(inputs.models[m], lo); });
    };
    auto pool = [&](int64_t index, const at::Tensor& h, const Batch& batch) {
      at::Tensor p = pool_hidden(h, batch.mask, options.pooling);
      auto& slot = pooled[index - first_state];
      slot = slot.defined() ? at::cat({slot, p}) : p;
    };
    // The hidden states of micro-batch [b0, b1): embedded here (stage 0) or received.
    auto input_of = [&](const Model* embedder, int64_t b0, int64_t b1, const Batch& batch) {
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
      Model model = load(first_block, end_block, s0 == 0);
      for (int64_t b0 = 0; b0 < N; b0 += mb) {
        const int64_t b1 = std::min(N, b0 + mb);
        std::vector<std::vector<int64_t>> chunk(samples.begin() + b0, samples.begin() + b1);
        Batch batch = make_batch(chunk, device);
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
        std::vector<Batch> batches;
        std::vector<at::Tensor> hs;
        {
          std::optional<Model> embedder;
          if (s0 == 0) embedder.emplace(load(0, 0, true));
          for (int64_t b0 = g0; b0 < g1; b0 += mb) {
            const int64_t b1 = std::min(g1, b0 + mb);
            std::vector<std::vector<int64_t>> chunk(samples.begin() + b0, samples.begin() + b1);
            batches.push_back(make_batch(chunk, device));
            hs.push_back(input_of(embedder ? &*embedder : nullptr, b0, b1, batches.back()));
          }
        }
        for (int64_t l = first_block; l < end_block; ++l) {
          const Model block = load(l, l + 1, false);
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
      mine.push_back({m, first_state + static_cast<int64_t>(i), std::move(v)});
    }
  }

  return mine;
}

}  // namespace recall::engine
