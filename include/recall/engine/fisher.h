// The diagonal empirical Fisher of one model on calibration samples (issue 20, Fisher merging):
// per-sample gradients of the causal-LM log-likelihood in float32, squared and averaged into a
// float64 accumulator, written per Hugging Face tensor with the global norm in the metadata.
// Torch-free, so the core (the job, the memory plan) and the engine's entry-point table include it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "recall/engine/extraction.h"
#include "recall/model/config.h"
#include "recall/model/model_dir.h"
#include "recall/util/device.h"

namespace recall::engine {

// Definition. The model in float32 on `device`. For each sample s with T_s >= 2 tokens (run alone:
// no padding, no batching), ll_s = (1 / (T_s - 1)) * sum_{t=1}^{T_s-1} log p(x_t | x_<t), the mean
// log-likelihood of its next tokens (finetune's causal-LM loss on {"text"} samples, negated), and
// g_s = d ll_s / d theta, one backward per sample. With N the number of such samples,
//   F = (1 / N) * sum_s g_s^2   (elementwise)
// Samples of 0 or 1 token have no next token: they are skipped and not counted in N. The squares
// are accumulated in float64, in sample order, on the device; F is written as float32. One order
// of operations, so a run is bitwise reproducible for the same samples, device and thread count
// (verified on the CPU; on CUDA it rests on the backward ops' determinism, not yet checked).
//
// Output (out_path, its directory created): one F32 tensor per HF tensor of the model, named and
// shaped as in its checkpoint, in canonical order. q/k/v and gate/up, fused inside the engine,
// are split like Model::export_tensors(); a tied lm_head is the embedding's parameter and appears
// once, as model.embed_tokens.weight (its gradient is the sum of both uses). __metadata__:
//   "samples"     N (decimal)
//   "tokens"      scored tokens, sum over the counted samples of T_s - 1 (decimal)
//   "sum_squares" sum over every element of every written tensor of F^2, the float32 values
//                 squared and summed in float64 (shortest round-trip decimal), so a merge can
//                 normalize by the global Fisher norm sqrt(sum_squares) without reading the file.
//
// fusion-bench 0.2.x (fusion_bench/method/fisher_merging/{fisher_merging,gpt2_fisher_merging,
// clip_fisher_merging}.py, after MergeLM) differs in three ways, all deliberate here:
//  - Batch level: it runs one backward per batch of `batch_size` examples on a summed objective and
//    squares the batch gradient, so cross terms between examples enter F; only batch_size 1 is a
//    per-example Fisher. Ours is per sample always.
//  - Objective: for classifiers it backpropagates sum_y sqrt(p_y).detach() * log p_y over the
//    classes (an approximation of the expected Fisher under the model's own labels, whose square
//    still has cross terms between classes); for regression, the batch MSE loss. Ours is the
//    empirical Fisher of the observed next tokens (no sampling from the model, no sum over the
//    vocabulary), each sample's log-likelihood averaged over its tokens.
//  - Same: the sum of squared gradients is divided by the number of examples, and its merge
//    (merging_with_fisher_weights) normalizes each model by the L2 norm of its whole Fisher,
//    sqrt(sum of F^2 over every parameter): our "sum_squares" is that norm squared. It adds
//    minimal_fisher_weight (1e-6) to F at merge time; that knob belongs to the merge, not here.
struct FisherOptions {
  const ModelDir* model = nullptr;       // opened and validated (open_model_dir)
  const SampleTokens* samples = nullptr; // calibration samples, token ids (BOS as the pipeline adds it)
  Device device = Device::Cpu;           // cpu, or the current CUDA device
  std::string out_path;                  // <dir>/<model index>/fisher.safetensors
  // After each input sample (skipped ones included): samples done so far and the total given.
  std::function<void(int64_t samples_done, int64_t samples_total)> progress;
};

struct FisherResult {
  int64_t samples = 0;     // N, the samples with a next token
  int64_t tokens = 0;      // scored tokens
  double seconds = 0;      // wall time, loading and writing included
  double sum_squares = 0;  // as in the metadata
};

// Throws recall::Error when no sample has two tokens, or a token id is outside the vocabulary.
FisherResult run_fisher(const FisherOptions& options);

// An upper bound of the memory run_fisher allocates on its device (host RAM on the CPU), beyond
// what the process held before, for a model with this config and a longest sample of
// `longest_sample` tokens. With P the parameter count (a tied lm_head counted once):
//   weights 4P (float32) + gradients 4P (float32) + accumulator 8P (float64)
//   + squaring scratch: 8 bytes x min(largest tensor, 2^22 elements)
//   + output staging: 4 bytes x the largest HF tensor (one float32 copy at a time)
//   + activations of the longest sample T kept for backward, per block per token
//     4 x (12 H + 8 (Hq + 2 Hkv) D + 6 I) floats' bytes, plus, where a sliding window < T makes the
//     attention masked, 4 x Hq x T^2 per block (scores, if SDPA falls back to the math kernel) and
//     3 T^2 bytes of boolean masks
//   + the head: 4 x T x (3 H + 4 V) (logits, log-softmax and their two gradients)
//   + one block's activations again for the gradients in flight during backward.
// The weights' transient read buffers at load time are smaller than the gradients, which do not
// exist yet. Pure: the memory plan calls it without loading the engine.
uint64_t fisher_memory_bytes(const ModelConfig& config, int64_t longest_sample);

}  // namespace recall::engine
