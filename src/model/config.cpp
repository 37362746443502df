// Decoding of Hugging Face config.json for the supported architectures.
#include "recall/model/config.h"

#include <nlohmann/json.hpp>

#include "recall/io/model_files.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall {

using nlohmann::json;

std::string arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Mistral: return "mistral";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
  }
  return "?";
}

namespace {

constexpr const char* kSupportedArchs =
    "llama (LlamaForCausalLM), mistral (MistralForCausalLM), qwen2 (Qwen2ForCausalLM), "
    "qwen3 (Qwen3ForCausalLM)";
constexpr const char* kSupportedRope = "default, linear, llama3";
// 2^24: far above any real model (vocabularies reach ~256K, hidden sizes ~16K), and small enough
// that vocab x hidden x 8 bytes fits in 64 bits.
constexpr int64_t kMaxDimension = int64_t{1} << 24;

// Typed field access with messages that name the file, the field, what was expected and found.
class Fields {
 public:
  Fields(const json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

  bool has(const char* key) const {
    auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }
  int64_t integer(const char* key) const {
    const json& v = require(key);
    if (!v.is_number_integer()) wrong(key, "an integer", v);
    return v.get<int64_t>();
  }
  int64_t positive(const char* key) const {
    int64_t v = integer(key);
    if (v <= 0) fail(where_, ": field '", key, "' must be positive, got ", v);
    return v;
  }
  int64_t positive_or(const char* key, int64_t fallback) const {
    return has(key) ? positive(key) : fallback;
  }
  // A tensor dimension: positive and at most kMaxDimension, so that shapes, element counts and
  // byte counts computed from the config cannot overflow 64 bits.
  int64_t dimension(const char* key) const {
    const int64_t v = positive(key);
    if (v > kMaxDimension)
      fail(where_, ": field '", key, "' = ", v, " exceeds the largest supported size ", kMaxDimension);
    return v;
  }
  int64_t dimension_or(const char* key, int64_t fallback) const {
    return has(key) ? dimension(key) : fallback;
  }
  double number_or(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    if (!v.is_number()) wrong(key, "a number", v);
    return v.get<double>();
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    if (!v.is_boolean()) wrong(key, "true or false", v);
    return v.get<bool>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    if (!v.is_string()) wrong(key, "a string", v);
    return v.get<std::string>();
  }
  std::optional<int64_t> optional_integer(const char* key) const {
    if (!has(key)) return std::nullopt;
    return integer(key);
  }
  std::vector<int64_t> integer_or_list(const char* key) const {
    if (!has(key)) return {};
    const json& v = obj_.at(key);
    if (v.is_number_integer()) return {v.get<int64_t>()};
    if (!v.is_array()) wrong(key, "an integer or a list of integers", v);
    std::vector<int64_t> out;
    for (const json& x : v) {
      if (!x.is_number_integer()) wrong(key, "an integer or a list of integers", v);
      out.push_back(x.get<int64_t>());
    }
    return out;
  }
  const json& require(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) fail(where_, ": missing field '", key, "'");
    return *it;
  }
  [[noreturn]] void wrong(const char* key, const char* expected, const json& got) const {
    fail(where_, ": field '", key, "' must be ", expected, ", got ", got.dump());
  }

 private:
  const json& obj_;
  std::string where_;
};

Arch detect_arch(const json& root, const std::string& where, std::string* model_type,
                 std::string* architecture) {
  if (root.contains("model_type") && root["model_type"].is_string())
    *model_type = root["model_type"].get<std::string>();
  if (root.contains("architectures") && root["architectures"].is_array() &&
      !root["architectures"].empty() && root["architectures"][0].is_string())
    *architecture = root["architectures"][0].get<std::string>();
  const std::string& mt = *model_type;
  const std::string& ar = *architecture;
  if (mt == "llama" || (mt.empty() && ar == "LlamaForCausalLM")) return Arch::Llama;
  if (mt == "mistral" || (mt.empty() && ar == "MistralForCausalLM")) return Arch::Mistral;
  if (mt == "qwen2" || (mt.empty() && ar == "Qwen2ForCausalLM")) return Arch::Qwen2;
  if (mt == "qwen3" || (mt.empty() && ar == "Qwen3ForCausalLM")) return Arch::Qwen3;
  if (mt.empty() && ar.empty())
    fail(where, ": has neither 'model_type' nor 'architectures'; supported: ", kSupportedArchs);
  fail(where, ": unsupported architecture '", mt.empty() ? ar : mt, "'; supported: ",
       kSupportedArchs);
}

// Reads rope_type/type, factor and the llama3 fields from a rope_scaling or rope_parameters
// object into rope.
void read_rope_object(const json& obj, const std::string& where, const char* field,
                      RopeConfig* rope) {
  if (!obj.is_object()) fail(where, ": field '", field, "' must be an object, got ", obj.dump());
  Fields f(obj, where + ": '" + field + "'");
  std::string type = f.string_or("rope_type", f.string_or("type", "default"));
  if (type != "default" && type != "linear" && type != "llama3")
    fail(where, ": unsupported rope type '", type, "' in '", field, "'; supported: ",
         kSupportedRope);
  rope->type = type;
  rope->theta = f.number_or("rope_theta", rope->theta);
  if (type == "linear" || type == "llama3") {
    if (!f.has("factor")) fail(where, ": '", field, "' of type ", type, " needs 'factor'");
    rope->factor = f.number_or("factor", 1.0);
    if (rope->factor <= 0) fail(where, ": '", field, "'.factor must be positive");
  }
  if (type == "llama3") {
    rope->low_freq_factor = f.number_or("low_freq_factor", 1.0);
    rope->high_freq_factor = f.number_or("high_freq_factor", 4.0);
    rope->original_max_position_embeddings = f.positive_or("original_max_position_embeddings", 8192);
    if (rope->high_freq_factor <= rope->low_freq_factor)
      fail(where, ": '", field, "' needs high_freq_factor > low_freq_factor, got ",
           rope->high_freq_factor, " <= ", rope->low_freq_factor);
  }
}

}  // namespace

ModelConfig parse_model_config(const std::string& text, const std::string& where) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON: ", parse_error_text(e));
  }
  if (!root.is_object()) fail(where, ": not a JSON object");
  ModelConfig c;
  c.raw_json = text;
  c.arch = detect_arch(root, where, &c.model_type, &c.architecture);
  Fields f(root, where);
  c.hidden_size = f.dimension("hidden_size");
  c.intermediate_size = f.dimension("intermediate_size");
  c.num_hidden_layers = f.dimension("num_hidden_layers");
  c.num_attention_heads = f.dimension("num_attention_heads");
  c.vocab_size = f.dimension("vocab_size");
  c.num_key_value_heads = f.dimension_or("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(where, ": num_attention_heads (", c.num_attention_heads,
         ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  // transformers' defaults per architecture.
  const bool qwen = c.arch == Arch::Qwen2 || c.arch == Arch::Qwen3;
  const int64_t default_max_pos =
      c.arch == Arch::Llama ? 2048 : c.arch == Arch::Mistral ? 4096 * 32 : 32768;
  c.max_position_embeddings = f.positive_or("max_position_embeddings", default_max_pos);
  if (c.arch == Arch::Qwen3) {
    c.head_dim = f.dimension_or("head_dim", 128);
  } else {
    if (!f.has("head_dim") && c.hidden_size % c.num_attention_heads != 0)
      fail(where, ": hidden_size (", c.hidden_size, ") is not a multiple of num_attention_heads (",
           c.num_attention_heads, ") and no 'head_dim' is given");
    c.head_dim = f.dimension_or("head_dim", c.hidden_size / c.num_attention_heads);
  }
  if (c.head_dim % 2 != 0) fail(where, ": head_dim must be even for rotary embeddings, got ", c.head_dim);
  c.rms_norm_eps = f.number_or("rms_norm_eps", 1e-6);
  if (!(c.rms_norm_eps > 0)) fail(where, ": field 'rms_norm_eps' must be positive");
  c.tie_word_embeddings = f.boolean_or("tie_word_embeddings", false);
  c.attention_bias = (c.arch == Arch::Llama || c.arch == Arch::Qwen3) && f.boolean_or("attention_bias", false);
  c.qkv_bias = c.arch == Arch::Qwen2;
  c.mlp_bias = c.arch == Arch::Llama && f.boolean_or("mlp_bias", false);
  c.qk_norm = c.arch == Arch::Qwen3;
  if (c.arch == Arch::Mistral) {
    if (!root.contains("sliding_window")) c.sliding_window = 4096;
    else c.sliding_window = f.optional_integer("sliding_window");
  } else if (qwen && f.boolean_or("use_sliding_window", false)) {
    c.sliding_window = f.optional_integer("sliding_window");
  }
  c.bos_token_id = f.optional_integer("bos_token_id");
  c.eos_token_ids = f.integer_or_list("eos_token_id");
  c.pad_token_id = f.optional_integer("pad_token_id");
  c.torch_dtype = f.string_or("torch_dtype", f.string_or("dtype", ""));

  // Rotary embeddings: transformers 5 writes rope_parameters; older files write rope_theta at
  // the top level and an optional rope_scaling object.
  c.rope.theta = f.number_or("rope_theta", 10000.0);
  if (f.has("rope_parameters")) {
    read_rope_object(root["rope_parameters"], where, "rope_parameters", &c.rope);
  } else if (f.has("rope_scaling")) {
    read_rope_object(root["rope_scaling"], where, "rope_scaling", &c.rope);
  }
  if (!(c.rope.theta > 0)) fail(where, ": rope theta must be positive, got ", c.rope.theta);
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  // A model directory's config.json is checked like every file next to the weights; a file named
  // on its own (preflight --arch) is the user's choice.
  const std::string file = is_directory(path) ? model_file(path, "config.json") : path;
  if (!path_exists(file)) fail("'", file, "' does not exist (every model directory needs config.json)");
  return parse_model_config(read_text_file(file), file);
}

}  // namespace recall
