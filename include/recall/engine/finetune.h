// `recall finetune`: causal-LM fine-tuning of a whole model in float32 (AdamW, linear warm-up then
// cosine decay to zero, global gradient-norm clipping). {"text"}/{"input_ids"} samples train on
// every next token; {"prompt","completion"} samples on the completion tokens only. Deterministic
// for a seed (the seed orders the samples). Writes an HF directory (safetensors + config.json +
// tokenizer files) that transformers loads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recall/dist/comm.h"

namespace recall::engine {

struct FinetuneOptions {
  std::string model_dir;
  std::string data_path;
  std::string out_dir;
  int64_t steps = 100;
  int64_t batch_size = 8;      // samples per step
  int64_t warmup = 10;         // warm-up steps (linear from lr/warmup to lr)
  double lr = 1e-4;            // peak learning rate
  double weight_decay = 0.0;   // AdamW decoupled weight decay
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double clip = 1.0;           // max global gradient norm (0 = no clipping)
  uint64_t seed = 0;
  std::string save_dtype = "float32";  // float32 | bfloat16 | float16
  std::string device = "cpu";
  int64_t log_every = 10;      // steps between progress lines
  std::string probe_path;      // optional JSONL: after training, write the in-memory model's
  std::string probe_out;       //   logits for these samples to probe_out (safetensors)
  // Data parallel: the world's communicator (every rank draws the same global batch, trains on
  // its slice, and the gradients are all-reduced); nullptr = one process.
  dist::Communicator* world = nullptr;
};

struct FinetuneResult {
  std::vector<double> losses;  // per step, before the update
  double seconds = 0;
  int64_t tokens = 0;          // scored tokens over all steps
};

FinetuneResult run_finetune(const FinetuneOptions& options);

}  // namespace recall::engine
