// The architecture config of a Hugging Face model (config.json), decoded once into a typed
// struct. Reads llama, mistral, qwen2 and qwen3 in both dialects: `rope_theta` + `rope_scaling`
// (most checkpoints in the wild; `rope_type` or the legacy `type`) and transformers 5's
// `rope_parameters`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace recall {

enum class Arch { Llama, Mistral, Qwen2, Qwen3 };

std::string arch_name(Arch a);  // "llama", "mistral", "qwen2", "qwen3"

// Rotary embedding parameters. `type` is one of "default", "linear", "llama3".
struct RopeConfig {
  std::string type = "default";
  double theta = 10000.0;          // base of the inverse frequencies
  double factor = 1.0;             // linear and llama3: context extension factor
  double low_freq_factor = 1.0;    // llama3
  double high_freq_factor = 4.0;   // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string model_type;           // as written in config.json
  std::string architecture;         // e.g. "LlamaForCausalLM"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;    // number of blocks L
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / heads (qwen3: 128)
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;  // no lm_head.weight in the checkpoint when true
  bool attention_bias = false;       // llama/qwen3: biases on q, k, v and o projections
  bool qkv_bias = false;             // qwen2: biases on q, k, v only (always)
  bool mlp_bias = false;             // llama: biases on gate, up, down
  bool qk_norm = false;              // qwen3: per-head RMSNorm of q and k
  std::optional<int64_t> sliding_window;  // mistral/qwen2, when set and enabled
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  std::string torch_dtype;           // "bfloat16", ... ("" when absent)
  std::string raw_json;              // the file as read, for exports
};

// Decodes config.json text; `where` names the file in errors.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where);
// Reads <dir>/config.json (or a config.json path).
ModelConfig load_model_config(const std::string& path);

}  // namespace recall
