// RegMean++'s merged-path statistics pass (see merged_path.h).
#include "recall/engine/merged_path.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "recall/dist/collectives.h"
#include "recall/dist/failure.h"
#include "recall/engine/held_states.h"
#include "recall/engine/linear_statistics.h"
#include "recall/engine/model.h"
#include "recall/util/error.h"

namespace recall::engine {

namespace {

// This rank's part of the pass: the streams of the models whose current stage it owns, by model.
// A stream is every micro-batch's hidden states (all samples: block l + 1 needs the merged block
// l, which needs every sample's block-l statistics first), held as a streaming pass holds them.
class MergedPathRun {
 public:
  MergedPathRun(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs, const SampleTokens& samples,
                const ExtractOptions& options)
      : grid_(grid), comm_(comm), inputs_(inputs), samples_(samples), options_(options),
        device_(parse_device(std::string(name_of(kDevices, options.device)))),
        dtype_(parse_compute_dtype(options.compute_dtype)), stats_(options.statistics) {
    if (!options.statistics.gram || !options.merged_path.enabled() || !options.merged_path.embedding_rows)
      fail("RegMean++ statistics: the pass needs Gram statistics and both merged-path callbacks");
    MPI_Comm_rank(comm, &rank_);
    N_ = samples.size();
    H_ = inputs.models[inputs.reference].config.hidden_size;
    mb_ = std::max<int64_t>(1, options.micro_batch);
    // The streams a rank may hold at once share the bound on held hidden states.
    uint64_t owned = 0;
    for (int m = 0; m < grid.models(); ++m) {
      bool any = false;
      for (int s = 0; s < grid.stages(); ++s) any = any || grid.owner({m, s}) == rank_;
      owned += any ? 1 : 0;
    }
    held_bytes_ = options.max_resident_bytes / std::max<uint64_t>(1, owned);
    if (options.max_resident_bytes > 0) held_bytes_ = std::max<uint64_t>(1, held_bytes_);
  }

  // Every rank makes every block's agreements (two; three after a stage's last block), in block
  // order, whether it owns the block's stage or not: the ranks of other stages only wait (block
  // l + 1 cannot start anywhere before block l is merged, so there is no pipelining to lose).
  void run() {
    at::InferenceMode guard;
    dist::agreed(comm_, [&] { embed_streams(); });
    for (int l = 0; l < grid_.num_blocks(); ++l) {
      const int s = grid_.stage_of_block(l);
      const std::vector<int> here = models_at(s);
      dist::agreed(comm_, [&] {
        for (int m : here) candidate_statistics(m, l);
      });
      // Every model's block-l Gram matrices are written now (the agreement above is the barrier).
      // Nothing reads the streams after the last block (fusion-bench skips that forward too).
      dist::agreed(comm_, [&] {
        if (!here.empty() && l + 1 < grid_.num_blocks()) advance(here, l);
      });
      report(here, l);
      if (l + 1 == grid_.stage(s).end_block && s + 1 < grid_.stages()) dist::agreed(comm_, [&] { hand_over(s); });
    }
  }

 private:
  std::vector<int> models_at(int s) const {
    std::vector<int> here;
    for (int m = 0; m < grid_.models(); ++m)
      if (grid_.owner({m, s}) == rank_) here.push_back(m);
    return here;
  }

  Batch batch_of(int64_t b0) const {
    std::vector<std::vector<int64_t>> chunk;
    for (int64_t i = b0; i < std::min(N_, b0 + mb_); ++i) chunk.push_back(samples_.sample(i));
    return make_batch(chunk, device_);
  }

  HeldStates& stream(int m) {
    std::unique_ptr<HeldStates>& s = streams_[m];
    if (!s) s = std::make_unique<HeldStates>(held_bytes_, options_.scratch_dir, m, rank_);
    return *s;
  }

  // hidden.0 of every stream at stage 0: the merged embedding of the micro-batch's tokens (the
  // same for every model: they share the calibration samples).
  void embed_streams() {
    for (int m = 0; m < grid_.models(); ++m) {
      if (grid_.owner({m, 0}) != rank_) continue;
      for (int64_t b0 = 0; b0 < N_; b0 += mb_) stream(m).put(b0 / mb_, merged_embedding(batch_of(b0).ids));
    }
  }

  // The merged embedding's rows of the distinct ids of `ids` only (a whole merged embedding is
  // vocabulary x hidden floats), looked up as at::embedding looks up the whole table.
  at::Tensor merged_embedding(const at::Tensor& ids) const {
    const auto [unique, inverse] = at::_unique(ids.to(at::kCPU), /*sorted=*/true, /*return_inverse=*/true);
    const at::Tensor u = unique.contiguous();
    const std::vector<int64_t> rows(u.data_ptr<int64_t>(), u.data_ptr<int64_t>() + u.numel());
    std::vector<float> values = options_.merged_path.embedding_rows(rows);
    if (values.size() != rows.size() * static_cast<size_t>(H_))
      fail("RegMean++: the merged embedding gave ", values.size(), " values for ", rows.size(), " tokens; expected ",
           rows.size(), " x ", H_);
    const at::Tensor table = at::from_blob(values.data(), {static_cast<int64_t>(rows.size()), H_}, at::kFloat)
                                 .to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true);
    return at::embedding(table, inverse.reshape(ids.sizes()).to(device_));
  }

  // Model m's own block l on its stream, for the statistics only (the stream is not advanced).
  void candidate_statistics(int m, int64_t l) {
    LoadOptions lo;
    lo.dtype = dtype_;
    lo.device = device_;
    lo.begin_block = l;
    lo.end_block = l + 1;
    lo.embedding = false;
    lo.head = false;
    const Model block = with_context(
        "loading model '" + inputs_.models[m].path + "' block " + std::to_string(l),
        [&] { return Model::load(inputs_.models[m], lo); });
    for (int64_t b0 = 0; b0 < N_; b0 += mb_) {
      const Batch batch = batch_of(b0);
      stats_.set_mask(batch.mask);
      block.run_block(stream(m).get(b0 / mb_, device_), batch, l, &stats_);
    }
    stats_.write(m, l);
  }

  // The merged block l, built once, moves every stream held here.
  void advance(const std::vector<int>& here, int64_t l) {
    std::map<std::string, MergedTensor> tensors = with_context(
        "RegMean++: merging block " + std::to_string(l) + " for the next block's inputs",
        [&] { return options_.merged_path.block(l); });
    auto tensor = [&](const std::string& name) {
      const auto it = tensors.find(name);
      if (it == tensors.end()) fail("RegMean++: the merged block ", l, " has no tensor '", name, "'");
      return at::from_blob(it->second.values.data(), it->second.shape, at::kFloat);
    };
    const Model merged =
        Model::from_tensors(inputs_.models[inputs_.reference].config, l, tensor, dtype_, device_);
    tensors.clear();
    for (int m : here)
      for (int64_t b0 = 0; b0 < N_; b0 += mb_) {
        const Batch batch = batch_of(b0);
        stream(m).put(b0 / mb_, merged.run_block(stream(m).get(b0 / mb_, device_), batch, l));
      }
  }

  // Progress from the last stage's owners: block k of the stage's n stands for samples
  // [N k / n, N (k + 1) / n), so the counts add up to N over the pass (as streaming's).
  void report(const std::vector<int>& here, int64_t l) const {
    const int s = grid_.stage_of_block(static_cast<int>(l));
    if (!options_.progress || s + 1 != grid_.stages()) return;
    const int64_t k = l - grid_.stage(s).first_block, blocks = grid_.stage(s).num_blocks();
    const int64_t b0 = N_ * k / blocks, b1 = N_ * (k + 1) / blocks;
    for (int m : here) options_.progress(m, b1 - b0, samples_.offsets[b1] - samples_.offsets[b0]);
  }

  // After stage s's last block: each stream goes to the owner of its model's stage s + 1. In model
  // order on every rank, so that each transfer's two ranks meet whatever else they own.
  void hand_over(int s) {
    for (int m = 0; m < grid_.models(); ++m) {
      const int from = grid_.owner({m, s}), to = grid_.owner({m, s + 1});
      if (from == to || (rank_ != from && rank_ != to)) continue;
      for (int64_t b0 = 0; b0 < N_; b0 += mb_) {
        if (rank_ == from) {
          const at::Tensor host = stream(m).get(b0 / mb_, device_).to(at::kCPU).contiguous();
          dist::send_bytes(comm_, host.data_ptr(), host.nbytes(), to, m);
          continue;
        }
        int64_t length = 0;
        for (int64_t i = b0; i < std::min(N_, b0 + mb_); ++i) length = std::max(length, samples_.length(i));
        at::Tensor host = at::empty({std::min(N_, b0 + mb_) - b0, length, H_}, at::TensorOptions().dtype(dtype_));
        dist::recv_bytes(comm_, host.data_ptr(), host.nbytes(), from, m);
        stream(m).put(b0 / mb_, host.to(device_));
      }
      if (rank_ == from) streams_.erase(m);
    }
  }

  const dist::Grid& grid_;
  MPI_Comm comm_;
  const MergeInputs& inputs_;
  const SampleTokens& samples_;
  const ExtractOptions& options_;
  at::Device device_;
  at::ScalarType dtype_;
  LinearStatistics stats_;
  int rank_ = 0;
  int64_t N_ = 0, H_ = 0, mb_ = 1;
  uint64_t held_bytes_ = 0;
  std::map<int, std::unique_ptr<HeldStates>> streams_;
};

}  // namespace

void run_merged_path(const dist::Grid& grid, MPI_Comm comm, const MergeInputs& inputs, const SampleTokens& samples,
                     const ExtractOptions& options) {
  MergedPathRun run(grid, comm, inputs, samples, options);
  run.run();
}

}  // namespace recall::engine
