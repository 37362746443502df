// libFuzzer target for parse_model_config (config.json). recall::Error is the only acceptable
// failure. An accepted config must be consistent, and its expected tensor list (the name table
// and shapes) must be computable without overflow for models of up to 256 blocks.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "recall/model/config.h"
#include "recall/model/tensor_names.h"
#include "recall/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const recall::ModelConfig c =
        recall::parse_model_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
    if (c.hidden_size <= 0 || c.num_hidden_layers <= 0 || c.num_attention_heads <= 0 ||
        c.num_key_value_heads <= 0 || c.head_dim <= 0 || c.vocab_size <= 0 ||
        c.num_attention_heads % c.num_key_value_heads != 0 || !(c.rope.theta > 0))
      std::abort();
    if (c.num_hidden_layers <= 256) {
      const auto slots = recall::expected_tensors(c);
      for (const auto& s : slots) {
        const auto parsed = recall::parse_tensor_name(s.name);
        if (!parsed || parsed->first != s.role || (s.block >= 0 && parsed->second != s.block)) std::abort();
      }
    }
  } catch (const recall::Error&) {
  }
  return 0;
}
