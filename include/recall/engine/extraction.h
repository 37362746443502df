// What the pipeline and the engine exchange for representation extraction (torch-free, so both
// sides and the engine's entry-point table can include it): the samples' token ids in one compact
// table, the options of a pass and the pooled hidden states the engine returns for the cells a
// rank owns.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "recall/merge/pooling.h"
#include "recall/merge/statistics.h"
#include "recall/util/device.h"

namespace recall::engine {

// The token ids of N samples back to back as 32-bit ids (vocabularies are below 2^31) with 64-bit
// offsets: 4 bytes per token + 8 per sample, where a vector per sample costs 8 per token + ~56.
struct SampleTokens {
  std::vector<int32_t> ids;
  std::vector<int64_t> offsets = {0};  // N + 1; sample i is ids[offsets[i], offsets[i + 1])

  int64_t size() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t length(int64_t i) const { return offsets[i + 1] - offsets[i]; }
  int64_t tokens() const { return offsets.back(); }
  std::vector<int64_t> sample(int64_t i) const { return {ids.begin() + offsets[i], ids.begin() + offsets[i + 1]}; }
  void add(const std::vector<int64_t>& sample_ids) {
    ids.insert(ids.end(), sample_ids.begin(), sample_ids.end());
    offsets.push_back(static_cast<int64_t>(ids.size()));
  }
  uint64_t bytes() const { return ids.capacity() * sizeof(int32_t) + offsets.capacity() * sizeof(int64_t); }
};

// Statistics of the inputs of every block's linear layers, accumulated over every real token of
// the samples by the rank that runs the block (RegMean's Gram matrices, AIM's activation
// magnitudes). The groups, by the input they share:
//   attn_in  = the input of q_proj, k_proj, v_proj (after input_layernorm), [hidden]
//   attn_out = the input of o_proj (the attention's output), [heads x head_dim]
//   mlp_in   = the input of gate_proj, up_proj (after post_attention_layernorm), [hidden]
//   mlp_out  = the input of down_proj (act(gate) * up), [intermediate]
// Each block's statistics go to <dir>/<model index>/block_<l>.safetensors, tensors
// "<group>.gram" (F64 [in, in], X^T X summed over tokens, when `gram`), "<group>.abs_sum"
// (F64 [in], sum of |x| over tokens, when `abs_sum`) and "<group>.tokens" (I64 [1]).
// The groups are recall::LinearGroup (recall/merge/statistics.h), which the merge reads by.
// <dir>/<model>/block_<block>.safetensors, the file of one block's statistics.
inline std::string linear_statistics_path(const std::string& dir, int model, int64_t block) {
  return dir + "/" + std::to_string(model) + "/block_" + std::to_string(block) + ".safetensors";
}

struct LinearStatisticsOptions {
  bool gram = false;
  bool abs_sum = false;
  std::string dir;  // required when either is set
  bool any() const { return gram || abs_sum; }
};

// A merged tensor handed to the engine: float32 values, row-major.
struct MergedTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// RegMean++'s merged path (docs/ALGORITHM.md §9): the statistics pass runs block by block over the
// whole grid. Every model's stream starts as the MERGED embedding of the samples (fusion-bench's
// regmean_plusplus merges the embedding first); at block l each model's own block l runs on its
// stream with the statistics observer (block l's Grams, written as usual), then, once every
// model's block-l file is written (a collective over the pass's communicator), every rank that
// owns a cell of block l's stage builds the merged block l from `block` and moves each stream it
// holds through it. The callbacks are the pipeline's (they run the merge method's own kernel); the
// engine only builds and runs blocks.
struct MergedPath {
  // The merged embedding's rows of `ids` (float32, ids.size() x hidden).
  std::function<std::vector<float>(const std::vector<int64_t>& ids)> embedding_rows;
  // Merged block `block`'s tensors by HF name, from every model's statistics of that block
  // (called on every rank that owns a cell of the block's stage, after the files are written).
  std::function<std::map<std::string, MergedTensor>(int64_t block)> block;
  bool enabled() const { return static_cast<bool>(block); }
};

struct ExtractOptions {
  Device device = Device::Cpu;
  std::string compute_dtype = "float32";
  int64_t micro_batch = 8;
  // > 0: streaming, block-major: a rank loads each of its blocks once per pass, one at a time, and
  // runs every micro-batch through it; the hidden states of all samples are held between blocks
  // (the value itself no longer groups samples: max_resident_bytes bounds what is held).
  int64_t stream_samples = 0;
  // Streaming: bytes of held hidden states kept in memory (0 = no bound). In order, each
  // micro-batch's hidden states (compute dtype, its own padded length) stay in memory when they fit
  // in what the bound leaves, else they are spilled to a file of their own in a fresh directory
  // under scratch_dir ("" = $TMPDIR, else /tmp), read back and rewritten block by block, and
  // removed at the end of the pass.
  uint64_t max_resident_bytes = 0;
  std::string scratch_dir;
  Pooling pooling = Pooling::Mean;  // token states -> one vector per sample
  // Hidden-state indices to pool and return (empty = all L + 1): the typical-sample step keeps the
  // clustered one only, so a rank holds [N, H] floats for it and nothing for the others.
  std::vector<int64_t> hidden_states;
  bool pooled = true;  // false: no pooled hidden state is kept (a statistics-only pass)
  LinearStatisticsOptions statistics;
  // Set: the statistics pass follows the merged path (RegMean++) instead of each model's own
  // (statistics.gram required; block-major whatever stream_samples says, held states bounded by
  // max_resident_bytes when it is set).
  MergedPath merged_path;
  // Called on the rank that runs a model's last stage after each micro-batch has left it
  // (resident): the model, the samples and the tokens (unpadded) it held. Streaming: after each of
  // the stage's blocks, the share of samples (and their tokens) that block stands for (block k of
  // n: samples [N k / n, N (k + 1) / n)), so the counts add up to N over the pass.
  std::function<void(int model, int64_t samples, int64_t tokens)> progress;

  bool keeps(int64_t hidden_state) const {
    if (!pooled) return false;
    if (hidden_states.empty()) return true;
    for (int64_t h : hidden_states)
      if (h == hidden_state) return true;
    return false;
  }
};

// The pooled representations of one hidden state of one model: [samples x hidden] float32.
struct PooledHiddenState {
  int model = 0;
  int64_t hidden_state = 0;  // 0 = embedding output, l + 1 = block l's output
  std::vector<float> values;
};

}  // namespace recall::engine
