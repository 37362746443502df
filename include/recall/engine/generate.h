// Text generation: greedy (temperature 0) or sampled (temperature, nucleus top-p, seeded) decoding
// of new tokens after a prompt.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace recall::engine {

class Model;

struct SamplingOptions {
  int64_t max_new = 32;       // tokens to generate at most
  double temperature = 0.0;   // 0 = greedy (argmax)
  double top_p = 1.0;         // nucleus: keep the smallest set of tokens with probability >= top_p
  uint64_t seed = 0;          // sampling is deterministic for a seed
  std::vector<int64_t> stop_ids;  // generation ends after emitting one of these (e.g. EOS)
};

// Returns only the new tokens. The model must hold all blocks, the embedding and the head.
std::vector<int64_t> generate(const Model& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& options);

// `recall generate`: loads the model, tokenizes the prompt (BOS + text) or takes ids, generates.
struct GenerateOptions {
  std::string model_dir;
  std::string prompt;                // text, or
  std::vector<int64_t> prompt_ids;   // token ids
  SamplingOptions sampling;
  bool stop_at_eos = true;
  std::string dtype = "float32";
  std::string device = "cpu";
};

struct GenerateResult {
  std::vector<int64_t> prompt_ids, new_ids;
  std::string text;  // decoded new tokens ("" without tokenizer.model)
  bool has_text = false;
};

GenerateResult run_generate(const GenerateOptions& options);

}  // namespace recall::engine
