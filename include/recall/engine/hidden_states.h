// `recall hidden-states`: the hidden states of every block for a set of samples, written to one
// safetensors file (float32 except the mask; samples right-padded to the longest, T):
//   mask [N, T] int64 (1 = real token); hidden.0 [N, T, H] = embedding output;
//   hidden.{l+1} = output of block l (before the final norm); final_norm [N, T, H];
//   logits [N, T, V]; pooled.{i} [N, H] = mean of hidden.{i} over real tokens.
// Values at pad positions are zero.
#pragma once

#include <cstdint>
#include <string>

namespace recall::engine {

struct HiddenStatesOptions {
  std::string model_dir;
  std::string tokens_path;  // JSONL of {"input_ids": [...]}, or
  std::string text_path;    // JSONL of {"text": "..."} (needs tokenizer.model)
  std::string out_path;     // .safetensors
  std::string dtype = "float32";  // compute dtype
  std::string device = "cpu";
  int64_t batch_size = 8;   // samples per forward pass
};

struct HiddenStatesSummary {
  int64_t samples = 0, max_length = 0, tokens = 0, blocks = 0;
  double seconds = 0;
};

HiddenStatesSummary write_hidden_states(const HiddenStatesOptions& options);

}  // namespace recall::engine
