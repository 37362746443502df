// The cells this rank owns: samples through their blocks in micro-batches, hidden states
// from stage to stage over MPI, mask-aware means of the kept hidden states.
#include "recall/engine/cell_pooling.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <vector>

#include "recall/dist/collectives.h"
#include "recall/engine/held_states.h"
#include "recall/engine/linear_statistics.h"
#include "recall/engine/merged_path.h"
#include "recall/engine/model.h"
#include "recall/util/fs.h"
#include "recall/util/error.h"
#include "recall/util/fault.h"

namespace recall::engine {

namespace {

std::atomic<int64_t> g_block_loads{0};

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

// One model's consecutive cells on this rank: the blocks they hold, their neighbours on the stage
// axis, and the pooled outputs of the kept hidden states ([N, H] floats each, filled in place).
class CellRun {
 public:
  CellRun(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs, const SampleTokens& samples,
          const ExtractOptions& options, int model, int s0, int s1)
      : inputs_(inputs), samples_(samples), options_(options), comm_(comm), model_(model), s0_(s0),
        device_(parse_device(std::string(name_of(kDevices, options.device)))),
        dtype_(parse_compute_dtype(options.compute_dtype)) {
    MPI_Comm_rank(comm, &rank_);
    N_ = samples.size();
    H_ = inputs.models[inputs.reference].config.hidden_size;
    mb_ = std::max<int64_t>(1, options.micro_batch);
    first_block_ = grid.stage(s0).first_block;
    end_block_ = grid.stage(s1 - 1).end_block;
    first_state_ = s0 == 0 ? 0 : first_block_ + 1;  // hidden.0 lives with stage 0
    prev_ = s0 > 0 ? grid.owner({model, s0 - 1}) : -1;
    next_ = s1 < grid.stages() ? grid.owner({model, s1}) : -1;
    pooled_.resize(end_block_ + 1 - first_state_);
    for (int64_t i = first_state_; i <= end_block_; ++i)
      if (options.keeps(i)) pooled_[i - first_state_].assign(static_cast<size_t>(N_ * H_), 0.0f);
    if (options.statistics.any()) stats_.emplace(options.statistics);
  }

  void run() {
    at::InferenceMode guard;
    if (options_.stream_samples <= 0) run_resident();
    else run_streaming();
  }

  void take(std::vector<PooledHiddenState>* out) {
    for (size_t i = 0; i < pooled_.size(); ++i)
      if (options_.keeps(first_state_ + static_cast<int64_t>(i)))
        out->push_back({model_, first_state_ + static_cast<int64_t>(i), std::move(pooled_[i])});
  }

 private:
  Model load(int64_t begin, int64_t end, bool embedding) const {
    LoadOptions lo;
    lo.dtype = dtype_;
    lo.device = device_;
    lo.begin_block = begin;
    lo.end_block = end;
    lo.embedding = embedding;
    lo.head = false;
    g_block_loads += end - begin;
    return with_context("loading model '" + inputs_.models[model_].path + "' blocks [" + std::to_string(begin) +
                            ", " + std::to_string(end) + ")",
                        [&] { return Model::load(inputs_.models[model_], lo); });
  }

  Batch batch_of(int64_t b0, int64_t b1) const {
    std::vector<std::vector<int64_t>> chunk;
    for (int64_t i = b0; i < b1; ++i) chunk.push_back(samples_.sample(i));
    return make_batch(chunk, device_);
  }

  // Rows [b0, b0 + batch size) of hidden state `index`'s pooled matrix, when it is kept.
  void pool(int64_t index, const at::Tensor& h, const Batch& batch, int64_t b0) {
    std::vector<float>& slot = pooled_[index - first_state_];
    if (slot.empty()) return;
    at::Tensor p = pool_hidden(h, batch.mask, options_.pooling).to(at::kCPU).to(at::kFloat).contiguous();
    std::copy(p.data_ptr<float>(), p.data_ptr<float>() + p.numel(), slot.begin() + b0 * H_);
  }

  // The hidden states of micro-batch [b0, b1): embedded here (stage 0) or received.
  at::Tensor input_of(const Model* embedder, int64_t b0, int64_t b1, const Batch& batch) {
    if (s0_ == 0) {
      at::Tensor h = embedder->embed(batch.ids);
      pool(0, h, batch, b0);
      return h;
    }
    at::Tensor host = at::empty({b1 - b0, batch.length(), H_}, at::TensorOptions().dtype(dtype_));
    dist::recv_bytes(comm_, host.data_ptr(), host.nbytes(), prev_, model_);
    return host.to(device_);
  }

  void output(const at::Tensor& h) {
    if (next_ < 0) return;
    at::Tensor host = h.to(at::kCPU).contiguous();
    dist::send_bytes(comm_, host.data_ptr(), host.nbytes(), next_, model_);
  }

  // Samples [b0, b1) have left this model's last stage (here): progress.
  void finished(int64_t b0, int64_t b1) const {
    if (next_ >= 0 || !options_.progress) return;
    options_.progress(model_, b1 - b0, samples_.offsets[b1] - samples_.offsets[b0]);
  }

  // Resident: the stage's blocks stay loaded; each micro-batch goes through all of them. The
  // statistics of every block of the cells are held until the pass ends.
  void run_resident() {
    Model model = load(first_block_, end_block_, s0_ == 0);
    for (int64_t b0 = 0; b0 < N_; b0 += mb_) {
      const int64_t b1 = std::min(N_, b0 + mb_);
      Batch batch = batch_of(b0, b1);
      if (stats_) stats_->set_mask(batch.mask);
      at::Tensor h = input_of(&model, b0, b1, batch);
      for (int64_t l = first_block_; l < end_block_; ++l) {
        h = model.run_block(h, batch, l, stats_ ? &*stats_ : nullptr);
        pool(l + 1, h, batch, b0);
      }
      fault_point("extract", rank_, b0 / mb_ + 1);
      output(h);
      finished(b0, b1);
    }
    if (stats_)
      for (int64_t l = first_block_; l < end_block_; ++l) stats_->write(model_, l);
  }

  // Streaming, block-major: the hidden states of every micro-batch first (embedded or received),
  // then each block loaded once, every micro-batch run through it in order, and dropped (its
  // statistics written and freed first); the outputs go to the next stage after the last block.
  // The same operations on the same micro-batches as the resident path, so the same values.
  void run_streaming() {
    HeldStates held(options_.max_resident_bytes, options_.scratch_dir, model_, rank_);
    {
      std::optional<Model> embedder;
      if (s0_ == 0) embedder.emplace(load(0, 0, true));
      for (int64_t b0 = 0; b0 < N_; b0 += mb_) {
        const int64_t b1 = std::min(N_, b0 + mb_);
        held.put(b0 / mb_, input_of(embedder ? &*embedder : nullptr, b0, b1, batch_of(b0, b1)));
      }
    }
    const int64_t blocks = end_block_ - first_block_;
    for (int64_t l = first_block_; l < end_block_; ++l) {
      const Model block = load(l, l + 1, false);
      for (int64_t b0 = 0; b0 < N_; b0 += mb_) {
        const Batch batch = batch_of(b0, std::min(N_, b0 + mb_));
        if (stats_) stats_->set_mask(batch.mask);
        at::Tensor h = block.run_block(held.get(b0 / mb_, device_), batch, l, stats_ ? &*stats_ : nullptr);
        pool(l + 1, h, batch, b0);
        held.put(b0 / mb_, h);
      }
      if (stats_) stats_->write(model_, l);
      fault_point("extract", rank_, l - first_block_ + 1);
      const int64_t k = l - first_block_;
      finished(N_ * k / blocks, N_ * (k + 1) / blocks);
    }
    for (int64_t b0 = 0; b0 < N_; b0 += mb_) output(held.get(b0 / mb_, device_));
    if (blocks == 0) finished(0, N_);
  }

  const MergeInputs& inputs_;
  const SampleTokens& samples_;
  const ExtractOptions& options_;
  MPI_Comm comm_;
  int model_, s0_, rank_ = 0;
  at::Device device_;
  at::ScalarType dtype_;
  int64_t N_ = 0, H_ = 0, mb_ = 1, first_block_ = 0, end_block_ = 0, first_state_ = 0;
  int prev_ = -1, next_ = -1;
  std::vector<std::vector<float>> pooled_;  // by hidden state - first_state_; empty when not kept
  std::optional<LinearStatistics> stats_;   // when options.statistics.any()
};

}  // namespace

int64_t block_loads() { return g_block_loads.load(); }

std::vector<PooledHiddenState> pool_own_cells(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs,
                                              const SampleTokens& samples, const ExtractOptions& options,
                                              int only_model) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::vector<PooledHiddenState> mine;
  if (options.merged_path.enabled()) {  // RegMean++: every model's stream through the merged blocks
    if (only_model >= 0) fail("RegMean++ statistics run every model's stream; got only model ", only_model);
    run_merged_path(grid, comm, inputs, samples, options);
    return mine;
  }
  for (int m = 0; m < grid.models(); ++m) {
    if (only_model >= 0 && m != only_model) continue;
    auto [s0, s1] = own_stages(grid, m, rank);
    if (s0 < 0) continue;
    CellRun cells(grid, comm, inputs, samples, options, m, s0, s1);
    cells.run();
    cells.take(&mine);
  }
  return mine;
}

}  // namespace recall::engine
