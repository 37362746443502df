// The decoder forward pass in libtorch (ATen), matching Hugging Face transformers to rounding for
// llama, mistral, qwen2 and qwen3: embedding, blocks, final norm, logits. A stage API runs blocks
// [begin, end) on given hidden states, so one code path serves one process and a pipeline; a
// model can hold only the blocks of its stage.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "recall/engine/extraction.h"
#include "recall/merge/pooling.h"
#include "recall/model/model_dir.h"

namespace recall::engine {

// Parses "float32" | "bfloat16" | "float16" (also "f32", "bf16", "f16", "fp32", ...).
at::ScalarType parse_compute_dtype(const std::string& name);
// Parses "cpu" | "cuda" | "cuda:N"; throws when CUDA is asked for and not available.
at::Device parse_device(const std::string& name);

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;   // compute dtype; weights are converted to it on load
  at::Device device = at::kCPU;
  int64_t begin_block = 0;             // blocks [begin_block, end_block) are loaded
  int64_t end_block = -1;              // -1 = num_hidden_layers
  std::optional<bool> embedding;       // load the embedding; default: begin_block == 0
  std::optional<bool> head;            // load final norm + lm_head; default: end_block == L
};

// A right-padded batch of token sequences.
struct Batch {
  at::Tensor ids;        // [N, T] int64, pad positions hold 0
  at::Tensor mask;       // [N, T] int64, 1 = real token
  at::Tensor positions;  // [T] int64, 0..T-1 (right padding: real tokens start at 0)
  std::vector<int64_t> lengths;

  int64_t size() const { return ids.size(0); }
  int64_t length() const { return ids.size(1); }
};

// Pads `samples` to max(longest, pad_to) tokens on `device`.
Batch make_batch(const std::vector<std::vector<int64_t>>& samples, at::Device device,
                 int64_t pad_to = 0);

// Mean of hidden [N, T, H] over real tokens (mask [N, T]): sum(hidden * mask) / sum(mask),
// computed in float32; returns [N, H] float32.
at::Tensor masked_mean(const at::Tensor& hidden, const at::Tensor& mask);

// The tokens `pooling` averages, as a [N, T] int64 0/1 mask within `mask` (real tokens, anywhere
// in the row): Mean = mask; MeanSkipFirst = mask without each row's first real token, except in a
// row with one real token, which keeps it; Last = each row's last real token only.
at::Tensor pooling_mask(const at::Tensor& mask, Pooling pooling);

// One vector per sample: masked_mean(hidden, pooling_mask(mask, pooling)), [N, H] float32. With
// Last (or a 1-token row) the mean of one token is that token exactly.
at::Tensor pool_hidden(const at::Tensor& hidden, const at::Tensor& mask, Pooling pooling);

// The weights of one decoder block; q/k/v and gate/up are fused for fewer, larger GEMMs.
struct BlockWeights {
  at::Tensor input_norm, post_attn_norm;
  at::Tensor qkv, qkv_bias;  // [(Hq + 2 Hkv) * D, hidden], bias undefined when absent
  at::Tensor o, o_bias;
  at::Tensor q_norm, k_norm;  // qwen3, [D]
  at::Tensor gate_up, gate_up_bias;  // [2 I, hidden]
  at::Tensor down, down_bias;
  bool sliding = false;  // this block uses the sliding-window mask
};

// Keys and values of past positions for incremental decoding of one sequence: per loaded
// block, [1, Hkv, S, D] after rotary (before K/V heads are repeated).
struct KVCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;  // S, positions already processed
};

// Sees the input of each group of a block's linear layers (extraction.h's LinearGroup), [N, T, in]
// in the compute dtype, right before the linears consume it; pad positions included (the batch's
// mask says which are real). Called on the forward pass's own tensors: an observer must not
// modify them. A null observer costs nothing.
struct BlockObserver {
  virtual ~BlockObserver() = default;
  virtual void linear_input(int64_t block, LinearGroup group, const at::Tensor& x) = 0;
};

class Model {
 public:
  static Model load(const ModelDir& dir, const LoadOptions& options = {});
  // One block (`block` of `config`'s model) from in-memory tensors: `tensor` gives each of the
  // block's tensors by HF name (any float dtype, any device), converted to dtype on device, q/k/v
  // and gate/up fused as load() fuses them. RegMean++ runs its merged blocks so.
  static Model from_tensors(const ModelConfig& config, int64_t block,
                            const std::function<at::Tensor(const std::string&)>& tensor, at::ScalarType dtype,
                            at::Device device);

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }
  int64_t begin_block() const { return begin_; }
  int64_t end_block() const { return end_; }
  int64_t num_blocks() const { return config_.num_hidden_layers; }

  // ids [N, T] -> hidden.0 [N, T, H] in the compute dtype. Needs the embedding.
  at::Tensor embed(const at::Tensor& ids) const;
  // Runs blocks [begin, end) (within the loaded range) on hidden [N, T, H].
  // `observer` (optional) sees every linear group's input.
  at::Tensor run_blocks(at::Tensor hidden, const Batch& batch, int64_t begin, int64_t end,
                        BlockObserver* observer = nullptr) const;
  at::Tensor run_block(const at::Tensor& hidden, const Batch& batch, int64_t block,
                       BlockObserver* observer = nullptr) const;
  at::Tensor final_norm(const at::Tensor& hidden) const;  // needs the head
  at::Tensor logits(const at::Tensor& normed) const;       // [N, T, V], compute dtype
  // embed -> all blocks -> final norm -> logits (needs the whole model).
  at::Tensor forward_logits(const Batch& batch) const;
  // Incremental decoding of one sequence: ids [1, n] at positions cache.length.. (n may exceed 1
  // only for the first call, the prompt); returns the logits [1, n, V] and extends the cache.
  at::Tensor forward_cached(const at::Tensor& ids, KVCache& cache) const;

  // Every distinct weight tensor (a tied lm_head is listed once), for fine-tuning.
  std::vector<at::Tensor> parameters() const;
  // HF name -> tensor (unfused views, compute dtype, on device) in canonical order, for saving.
  std::vector<std::pair<std::string, at::Tensor>> export_tensors() const;
  // The same names and unfused views, of tensors shaped like the weights (their gradients, their
  // Fisher): of(weight) returns the tensor that stands for each weight of parameters().
  std::vector<std::pair<std::string, at::Tensor>> export_tensors(
      const std::function<at::Tensor(const at::Tensor&)>& of) const;

 private:
  struct Context;  // masks and rotary tables of one batch
  Context context(const Batch& batch) const;
  at::Tensor block_forward(const at::Tensor& hidden, const Context& ctx, int64_t block,
                           KVCache* cache = nullptr, BlockObserver* observer = nullptr) const;
  ModelConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  int64_t begin_ = 0, end_ = 0;
  at::Tensor embedding_, norm_, lm_head_;  // lm_head_ aliases embedding_ when tied
  bool tied_ = false;
  std::vector<BlockWeights> blocks_;  // blocks_[i] is block begin_ + i
  at::Tensor inv_freq_;               // [D/2] float32, HF's computation
};

// HF's rotary inverse frequencies for the config (default, linear, llama3), float32 [D/2].
at::Tensor rope_inv_freq(const ModelConfig& config);

}  // namespace recall::engine
