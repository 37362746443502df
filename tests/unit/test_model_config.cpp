// config.json decoding for llama, mistral, qwen2 and qwen3 in both dialects (rope_theta +
// rope_scaling, transformers 5's rope_parameters) with their defaults and errors; the tensor-name
// table and expected shapes; and model-directory validation that reports every problem at once.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "recall/io/safetensors.h"
#include "recall/model/config.h"
#include "recall/model/model_dir.h"
#include "recall/model/tensor_names.h"
#include "recall/util/fs.h"
#include "testing_files.h"

using namespace recall;
using nlohmann::json;
using recall::testing::expect_error;
using recall::testing::TempDir;
using recall::testing::write_bytes;

namespace {

// A Llama-3-8B config as Meta publishes it (legacy dialect).
json llama3_8b() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": false, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})");
}

json llama3_70b() {
  json c = llama3_8b();
  c["hidden_size"] = 8192;
  c["intermediate_size"] = 28672;
  c["num_attention_heads"] = 64;
  c["num_hidden_layers"] = 80;
  return c;
}

ModelConfig parse(const json& j) { return parse_model_config(j.dump(), "cfg/config.json"); }

// A small config of each architecture for shape and validation tests.
json tiny(const char* model_type) {
  json c = {{"model_type", model_type},
            {"hidden_size", 16},
            {"intermediate_size", 24},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 2},
            {"vocab_size", 32}};
  if (std::string(model_type) == "qwen3") c["head_dim"] = 8;
  return c;
}

}  // namespace

// ---- config.json: both dialects ----------------------------------------------------------------

TEST(ModelConfig, Llama3LegacyDialect) {
  const ModelConfig c = parse(llama3_8b());
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(ModelConfig, Llama3RopeParametersDialect) {
  // transformers 5 writes rope_parameters (theta inside) and "dtype".
  json j = llama3_8b();
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["dtype"] = "bfloat16";
  j["rope_parameters"] = {{"factor", 8.0}, {"high_freq_factor", 4.0}, {"low_freq_factor", 1.0},
                          {"original_max_position_embeddings", 8192}, {"rope_theta", 500000.0},
                          {"rope_type", "llama3"}};
  const ModelConfig a = parse(j), b = parse(llama3_8b());
  EXPECT_EQ(a.rope.type, b.rope.type);
  EXPECT_DOUBLE_EQ(a.rope.theta, b.rope.theta);
  EXPECT_DOUBLE_EQ(a.rope.factor, b.rope.factor);
  EXPECT_DOUBLE_EQ(a.rope.low_freq_factor, b.rope.low_freq_factor);
  EXPECT_DOUBLE_EQ(a.rope.high_freq_factor, b.rope.high_freq_factor);
  EXPECT_EQ(a.rope.original_max_position_embeddings, b.rope.original_max_position_embeddings);
  EXPECT_EQ(a.torch_dtype, "bfloat16");
  // A default rope in the new dialect.
  j["rope_parameters"] = {{"rope_theta", 1000000.0}, {"rope_type", "default"}};
  const ModelConfig d = parse(j);
  EXPECT_EQ(d.rope.type, "default");
  EXPECT_DOUBLE_EQ(d.rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(d.rope.factor, 1.0);
}

TEST(ModelConfig, LinearRopeWithLegacyTypeKey) {
  json j = tiny("llama");
  j["rope_theta"] = 20000.0;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.rope.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope.factor, 4.0);
  EXPECT_DOUBLE_EQ(c.rope.theta, 20000.0);
  // rope_type wins over the legacy key, as in transformers.
  j["rope_scaling"] = {{"rope_type", "linear"}, {"type", "llama3"}, {"factor", 2.0}};
  EXPECT_EQ(parse(j).rope.type, "linear");
  // linear needs a factor.
  j["rope_scaling"] = {{"type", "linear"}};
  expect_error([&] { parse(j); }, {"cfg/config.json", "'rope_scaling' of type linear needs 'factor'"});
  // rope_scaling: null is the same as absent.
  j["rope_scaling"] = nullptr;
  EXPECT_EQ(parse(j).rope.type, "default");
}

TEST(ModelConfig, DefaultsForHeadDimKvHeadsAndRope) {
  json j = {{"model_type", "llama"}, {"hidden_size", 64}, {"intermediate_size", 172},
            {"num_hidden_layers", 5}, {"num_attention_heads", 8}, {"vocab_size", 512}};
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.eos_token_ids.empty());
  // null means "not set" (transformers writes "head_dim": null, "pad_token_id": null).
  j["head_dim"] = nullptr;
  j["num_key_value_heads"] = nullptr;
  j["pad_token_id"] = nullptr;
  EXPECT_EQ(parse(j).head_dim, 8);
  // An explicit head_dim wins over hidden / heads.
  j["head_dim"] = 16;
  EXPECT_EQ(parse(j).head_dim, 16);
  // The architecture may come from "architectures" alone.
  json k = j;
  k.erase("model_type");
  k["architectures"] = {"MistralForCausalLM"};
  EXPECT_EQ(parse(k).arch, Arch::Mistral);
}

TEST(ModelConfig, TiedEmbeddingsAndAttentionBias) {
  json j = tiny("llama");
  j["tie_word_embeddings"] = true;
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  const ModelConfig c = parse(j);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.mlp_bias);
  EXPECT_FALSE(c.qkv_bias);
}

TEST(ModelConfig, Mistral) {
  // Mistral-7B-v0.1 as published: no head_dim, sliding_window 4096.
  json j = json::parse(R"({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
    "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 32000})");
  ModelConfig c = parse(j);
  EXPECT_EQ(c.arch, Arch::Mistral);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_FALSE(c.attention_bias);
  // transformers' default when the key is absent; null disables it (Mistral-7B-v0.2+).
  j.erase("sliding_window");
  EXPECT_EQ(parse(j).sliding_window, 4096);
  j["sliding_window"] = nullptr;
  EXPECT_FALSE(parse(j).sliding_window.has_value());
  // attention_bias is not a Mistral feature: ignored.
  j["attention_bias"] = true;
  EXPECT_FALSE(parse(j).attention_bias);
  // Mistral-Nemo: explicit head_dim different from hidden / heads.
  j["hidden_size"] = 5120;
  j["head_dim"] = 128;
  EXPECT_EQ(parse(j).head_dim, 128);
}

TEST(ModelConfig, Qwen2HasFixedQkvBias) {
  json j = json::parse(R"({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
    "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
    "max_window_layers": 21, "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "use_sliding_window": false, "vocab_size": 151936})");
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.arch, Arch::Qwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.sliding_window.has_value());  // use_sliding_window is false
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  j["use_sliding_window"] = true;
  EXPECT_EQ(parse(j).sliding_window, 32768);
  // The q/k/v biases are in the expected tensors; o_proj has none.
  const auto slots = expected_tensors(c);
  auto has = [&](const std::string& n) {
    for (const auto& s : slots) if (s.name == n) return true;
    return false;
  };
  EXPECT_TRUE(has("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_TRUE(has("model.layers.23.self_attn.v_proj.bias"));
  EXPECT_FALSE(has("model.layers.0.self_attn.o_proj.bias"));
  EXPECT_FALSE(has("lm_head.weight"));
  EXPECT_EQ(slots.size(), 1u + 24 * 12 + 1);
}

TEST(ModelConfig, Qwen3HeadDimAndQkNorm) {
  // Qwen3-0.6B as published in the transformers-5 dialect: explicit head_dim 128 with hidden 1024.
  json j = json::parse(R"({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
    "attention_bias": false, "head_dim": 128, "hidden_size": 1024, "intermediate_size": 3072,
    "max_position_embeddings": 40960, "num_attention_heads": 16, "num_hidden_layers": 28,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
    "sliding_window": null, "tie_word_embeddings": true, "use_sliding_window": false,
    "vocab_size": 151936})");
  ModelConfig c = parse(j);
  EXPECT_EQ(c.arch, Arch::Qwen3);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  // Without head_dim, qwen3 defaults to 128 (not hidden / heads = 64).
  j.erase("head_dim");
  c = parse(j);
  EXPECT_EQ(c.head_dim, 128);
  const auto slots = expected_tensors(c);
  bool found_q_norm = false;
  for (const auto& s : slots) {
    if (s.name == "model.layers.5.self_attn.q_norm.weight") {
      found_q_norm = true;
      EXPECT_EQ(s.shape, (std::vector<int64_t>{128}));
    }
    if (s.name == "model.layers.0.self_attn.q_proj.weight")
      EXPECT_EQ(s.shape, (std::vector<int64_t>{16 * 128, 1024}));
    if (s.name == "model.layers.0.self_attn.o_proj.weight")
      EXPECT_EQ(s.shape, (std::vector<int64_t>{1024, 16 * 128}));
    if (s.name == "model.layers.0.self_attn.k_proj.weight")
      EXPECT_EQ(s.shape, (std::vector<int64_t>{8 * 128, 1024}));
  }
  EXPECT_TRUE(found_q_norm);
  EXPECT_EQ(slots.size(), 1u + 28 * 11 + 1);
  // qwen3 with attention_bias has all four attention biases.
  j["attention_bias"] = true;
  EXPECT_EQ(expected_tensors(parse(j)).size(), 1u + 28 * 15 + 1);
}

// ---- config.json: errors -----------------------------------------------------------------------

TEST(ModelConfigErrors, NotJson) {
  expect_error([] { parse_model_config("{\"model_type\": \"llama\",", "m/config.json"); },
               {"m/config.json", "not valid JSON"});
  expect_error([] { parse_model_config("[1, 2]", "m/config.json"); },
               {"m/config.json", "not a JSON object"});
  expect_error([] { parse_model_config("", "m/config.json"); }, {"m/config.json", "not valid JSON"});
}

TEST(ModelConfigErrors, MissingField) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size"}) {
    json j = llama3_8b();
    j.erase(field);
    expect_error([&] { parse(j); }, {"cfg/config.json", std::string("missing field '") + field + "'"});
    j[field] = nullptr;
    expect_error([&] { parse(j); }, {"cfg/config.json", std::string("missing field '") + field + "'"});
  }
}

TEST(ModelConfigErrors, MistypedField) {
  json j = llama3_8b();
  j["hidden_size"] = "4096";
  expect_error([&] { parse(j); },
               {"cfg/config.json", "field 'hidden_size' must be an integer, got \"4096\""});
  j = llama3_8b();
  j["num_attention_heads"] = 32.5;
  expect_error([&] { parse(j); }, {"field 'num_attention_heads' must be an integer, got 32.5"});
  j = llama3_8b();
  j["tie_word_embeddings"] = "false";
  expect_error([&] { parse(j); }, {"field 'tie_word_embeddings' must be true or false, got \"false\""});
  j = llama3_8b();
  j["rms_norm_eps"] = "1e-5";
  expect_error([&] { parse(j); }, {"field 'rms_norm_eps' must be a number"});
  j = llama3_8b();
  j["vocab_size"] = -5;
  expect_error([&] { parse(j); }, {"field 'vocab_size' must be positive, got -5"});
  j = llama3_8b();
  j["eos_token_id"] = {"</s>"};
  expect_error([&] { parse(j); }, {"field 'eos_token_id' must be an integer or a list of integers"});
  j = llama3_8b();
  j["rope_scaling"]["factor"] = "8";
  expect_error([&] { parse(j); }, {"cfg/config.json", "'rope_scaling'", "field 'factor' must be a number"});
  j = llama3_8b();
  j["rope_scaling"] = 8;
  expect_error([&] { parse(j); }, {"field 'rope_scaling' must be an object, got 8"});
}

TEST(ModelConfigErrors, InconsistentValues) {
  json j = llama3_8b();
  j["num_key_value_heads"] = 6;
  expect_error([&] { parse(j); },
               {"num_attention_heads (32) must be a multiple of num_key_value_heads (6)"});
  j = llama3_8b();
  j["hidden_size"] = 4100;
  expect_error([&] { parse(j); },
               {"hidden_size (4100) is not a multiple of num_attention_heads (32)"});
  j = llama3_8b();
  j["rope_scaling"]["high_freq_factor"] = 0.5;
  expect_error([&] { parse(j); }, {"high_freq_factor > low_freq_factor"});
}

TEST(ModelConfigErrors, HugeDimensionsAreRefusedBeforeTheyOverflow) {
  // Found by fuzz_config_json: 4 heads x 2^62 head_dim overflowed int64 in expected_tensors.
  json j = tiny("llama");
  j["head_dim"] = 4611686018427387904LL;
  expect_error([&] { parse(j); },
               {"cfg/config.json", "field 'head_dim' = 4611686018427387904 exceeds the largest supported size 16777216"});
  j = tiny("llama");
  j["vocab_size"] = 1LL << 40;
  expect_error([&] { parse(j); }, {"field 'vocab_size' = 1099511627776 exceeds"});
  j = tiny("llama");
  j["vocab_size"] = 1 << 24;  // the limit itself is fine
  EXPECT_EQ(parse(j).vocab_size, 1 << 24);
}

TEST(ModelConfigErrors, UnsupportedArchitectureListsSupported) {
  json j = llama3_8b();
  j["model_type"] = "gpt2";
  j["architectures"] = {"GPT2LMHeadModel"};
  expect_error([&] { parse(j); },
               {"cfg/config.json", "unsupported architecture 'gpt2'", "supported:", "llama",
                "mistral", "qwen2", "qwen3"});
  j.erase("model_type");
  expect_error([&] { parse(j); }, {"unsupported architecture 'GPT2LMHeadModel'"});
  j.erase("architectures");
  expect_error([&] { parse(j); }, {"has neither 'model_type' nor 'architectures'", "supported:"});
}

TEST(ModelConfigErrors, UnsupportedRopeTypeListsSupported) {
  json j = llama3_8b();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0},
                       {"original_max_position_embeddings", 32768}};
  expect_error([&] { parse(j); },
               {"cfg/config.json", "unsupported rope type 'yarn' in 'rope_scaling'",
                "supported: default, linear, llama3"});
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "dynamic"}, {"factor", 2.0}, {"rope_theta", 1e4}};
  expect_error([&] { parse(j); },
               {"unsupported rope type 'dynamic' in 'rope_parameters'", "supported: default, linear, llama3"});
  j["rope_parameters"] = {{"type", "yarn"}, {"factor", 2.0}};
  expect_error([&] { parse(j); }, {"unsupported rope type 'yarn'"});
}

TEST(ModelConfigErrors, LoadNamesTheFile) {
  TempDir dir;
  expect_error([&] { load_model_config(dir.path()); },
               {dir.file("config.json"), "does not exist"});
  write_bytes(dir.file("config.json"), "{oops");
  expect_error([&] { load_model_config(dir.path()); }, {dir.file("config.json"), "not valid JSON"});
  write_bytes(dir.file("config.json"), llama3_8b().dump());
  EXPECT_EQ(load_model_config(dir.path()).hidden_size, 4096);
  EXPECT_EQ(load_model_config(dir.file("config.json")).hidden_size, 4096);
}

// ---- the tensor-name table ---------------------------------------------------------------------

TEST(TensorNames, RoundTripForAllRoles) {
  const Role all[] = {Role::Embed, Role::FinalNorm, Role::LmHead, Role::InputNorm, Role::QProj,
                      Role::KProj, Role::VProj, Role::OProj, Role::QBias, Role::KBias, Role::VBias,
                      Role::OBias, Role::QNorm, Role::KNorm, Role::PostAttnNorm, Role::GateProj,
                      Role::UpProj, Role::DownProj, Role::GateBias, Role::UpBias, Role::DownBias};
  std::set<std::string> names;
  for (Role r : all) {
    for (int64_t block : {0, 7, 79, 123456}) {
      const std::string name = tensor_name(r, block);
      auto parsed = parse_tensor_name(name);
      ASSERT_TRUE(parsed.has_value()) << name;
      EXPECT_EQ(parsed->first, r) << name;
      EXPECT_EQ(parsed->second, is_block_role(r) ? block : -1) << name;
      names.insert(name);
    }
    EXPECT_FALSE(role_name(r).empty());
  }
  EXPECT_EQ(names.size(), 3u + 18 * 4);  // all distinct
  EXPECT_EQ(tensor_name(Role::QProj, 3), "model.layers.3.self_attn.q_proj.weight");
  EXPECT_EQ(tensor_name(Role::DownProj, 0), "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(tensor_name(Role::KNorm, 2), "model.layers.2.self_attn.k_norm.weight");
  EXPECT_EQ(tensor_name(Role::Embed), "model.embed_tokens.weight");
  EXPECT_EQ(tensor_name(Role::FinalNorm), "model.norm.weight");
  EXPECT_EQ(tensor_name(Role::LmHead), "lm_head.weight");
  EXPECT_EQ(role_name(Role::GateProj), "gate_proj");
  EXPECT_FALSE(is_block_role(Role::LmHead));
  EXPECT_TRUE(is_block_role(Role::QNorm));
}

TEST(TensorNames, RejectsNonCanonicalAndUnknownNames) {
  for (const char* bad : {"model.layers.01.self_attn.q_proj.weight",
                          "model.layers.-1.self_attn.q_proj.weight",
                          "model.layers..self_attn.q_proj.weight",
                          "model.layers.+1.self_attn.q_proj.weight",
                          "model.layers. 1.self_attn.q_proj.weight",
                          "model.layers.1x.self_attn.q_proj.weight",
                          "model.layers.99999999999999999999999.input_layernorm.weight",
                          "model.layers.1.self_attn.q_proj.weightx",
                          "model.layers.1.mlp.input_layernorm.weight",
                          "model.layers.1.self_attn.rotary_emb.inv_freq",
                          "model.embed_tokens.bias", "embed_tokens.weight", "lm_head", "", "model.",
                          "transformer.h.0.attn.c_attn.weight"}) {
    EXPECT_FALSE(parse_tensor_name(bad).has_value()) << bad;
  }
  EXPECT_TRUE(parse_tensor_name("model.layers.10.self_attn.q_proj.weight").has_value());
  EXPECT_EQ(parse_tensor_name("model.layers.0.mlp.up_proj.bias")->first, Role::UpBias);
}

TEST(TensorNames, ExpectedTensorsCountsAndShapes) {
  const ModelConfig c70 = parse(llama3_70b());
  const auto slots = expected_tensors(c70);
  EXPECT_EQ(slots.size(), 723u);  // 80 blocks x 9 + embedding, final norm, lm_head
  EXPECT_EQ(slots.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(slots.front().shape, (std::vector<int64_t>{128256, 8192}));
  EXPECT_EQ(slots.back().name, "lm_head.weight");
  uint64_t params = 0;
  for (const auto& s : slots) {
    uint64_t n = 1;
    for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
    params += n;
    if (s.name == "model.layers.79.self_attn.k_proj.weight")
      EXPECT_EQ(s.shape, (std::vector<int64_t>{1024, 8192}));
    if (s.name == "model.layers.0.mlp.down_proj.weight")
      EXPECT_EQ(s.shape, (std::vector<int64_t>{8192, 28672}));
    if (s.block >= 0) EXPECT_EQ(s.name, tensor_name(s.role, s.block));
  }
  EXPECT_EQ(params, 70553706496ull);  // Llama-3-70B's published parameter count
  // Block order: every block's tensors are contiguous and in table order.
  EXPECT_EQ(slots[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(slots[10].name, "model.layers.1.input_layernorm.weight");

  json tied = llama3_70b();
  tied["tie_word_embeddings"] = true;
  EXPECT_EQ(expected_tensors(parse(tied)).size(), 722u);
  json biased = tiny("llama");
  biased["attention_bias"] = true;
  biased["mlp_bias"] = true;
  EXPECT_EQ(expected_tensors(parse(biased)).size(), 3u + 2 * (9 + 4 + 3));
  EXPECT_EQ(expected_tensors(parse(tiny("mistral"))).size(), 3u + 2 * 9);
}

// ---- model directory validation ----------------------------------------------------------------

namespace {

// Writes config.json and model.safetensors (bf16 zeros) with the expected tensors of `cfg`,
// after `edit` has changed the list.
void write_model(const TempDir& dir, const json& cfg,
                 const std::function<void(std::vector<TensorData>&)>& edit = {}) {
  write_bytes(dir.file("config.json"), cfg.dump(2));
  std::vector<TensorData> tensors;
  for (const TensorSlot& s : expected_tensors(parse(cfg))) {
    TensorData t{{s.name, DType::BF16, s.shape}, {}};
    t.bytes.assign(t.spec.nbytes(), 0);
    tensors.push_back(std::move(t));
  }
  if (edit) edit(tensors);
  for (TensorData& t : tensors) t.bytes.assign(t.spec.nbytes(), 0);
  write_safetensors_model(dir.path(), tensors, 0);
}

}  // namespace

TEST(ModelDir, ValidDirectoryOfEachArchitecture) {
  for (const char* arch : {"llama", "mistral", "qwen2", "qwen3"}) {
    TempDir dir;
    write_model(dir, tiny(arch));
    const ModelDir m = open_model_dir(dir.path());
    EXPECT_EQ(arch_name(m.config.arch), arch);
    EXPECT_EQ(m.slots.size(), m.checkpoint.entries().size()) << arch;
    EXPECT_TRUE(m.ignored.empty());
  }
}

TEST(ModelDir, IgnoresRotaryBuffersAndTiedLmHead) {
  TempDir dir;
  json cfg = tiny("llama");
  cfg["tie_word_embeddings"] = true;
  write_model(dir, cfg, [](std::vector<TensorData>& ts) {
    ts.push_back({{"model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {4}}, {}});
    ts.push_back({{"lm_head.weight", DType::BF16, {32, 16}}, {}});
  });
  const ModelDir m = open_model_dir(dir.path());
  EXPECT_EQ(m.ignored.size(), 2u);
}

TEST(ModelDir, MissingTensor) {
  TempDir dir;
  write_model(dir, tiny("llama"), [](std::vector<TensorData>& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](const TensorData& t) {
               return t.spec.name == "model.layers.1.mlp.gate_proj.weight";
             }), ts.end());
  });
  expect_error([&] { open_model_dir(dir.path()); },
               {dir.path(), "not a valid llama model (1 problem)",
                "missing tensor 'model.layers.1.mlp.gate_proj.weight' (expected shape [24, 16])"});
}

TEST(ModelDir, WrongShape) {
  TempDir dir;
  write_model(dir, tiny("llama"), [](std::vector<TensorData>& ts) {
    for (auto& t : ts)
      if (t.spec.name == "model.layers.0.mlp.up_proj.weight") t.spec.shape = {12, 16};
  });
  expect_error([&] { open_model_dir(dir.path()); },
               {dir.path(), "tensor 'model.layers.0.mlp.up_proj.weight' has wrong shape; expected [24, 16], got [12, 16]"});
}

TEST(ModelDir, UnexpectedTensorAndNonFloatWeight) {
  TempDir dir;
  write_model(dir, tiny("llama"), [](std::vector<TensorData>& ts) {
    ts.push_back({{"model.layers.2.input_layernorm.weight", DType::BF16, {16}}, {}});
    ts.push_back({{"model.extra.weight", DType::BF16, {16}}, {}});
    for (auto& t : ts)
      if (t.spec.name == "model.norm.weight") t.spec.dtype = DType::I32;
  });
  expect_error([&] { open_model_dir(dir.path()); },
               {"unexpected tensor 'model.layers.2.input_layernorm.weight': block 2 but config.json has num_hidden_layers = 2",
                "unexpected tensor 'model.extra.weight' (not part of a llama model with this config)",
                "tensor 'model.norm.weight' has dtype I32; weights must be floating point"});
}

TEST(ModelDir, AllProblemsReportedAtOnce) {
  TempDir dir;
  write_model(dir, tiny("qwen2"), [](std::vector<TensorData>& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](const TensorData& t) {
               return t.spec.name == "model.layers.0.self_attn.k_proj.bias" ||
                      t.spec.name == "lm_head.weight";
             }), ts.end());
    for (auto& t : ts)
      if (t.spec.name == "model.embed_tokens.weight") t.spec.shape = {31, 16};
    ts.push_back({{"model.layers.0.self_attn.o_proj.bias", DType::BF16, {16}}, {}});
  });
  expect_error([&] { open_model_dir(dir.path()); },
               {dir.path(), "not a valid qwen2 model (4 problems)",
                "missing tensor 'model.layers.0.self_attn.k_proj.bias' (expected shape [8])",
                "missing tensor 'lm_head.weight' (expected shape [32, 16])",
                "tensor 'model.embed_tokens.weight' has wrong shape; expected [32, 16], got [31, 16]",
                "unexpected tensor 'model.layers.0.self_attn.o_proj.bias'"});
  // validate_model_tensors returns the same list.
  const auto problems = validate_model_tensors(load_model_config(dir.path()), Checkpoint::open(dir.path()));
  EXPECT_EQ(problems.size(), 4u);
}

TEST(ModelDir, NotADirectoryOrNoConfig) {
  TempDir dir;
  expect_error([&] { open_model_dir(dir.file("absent")); }, {dir.file("absent"), "is not a model directory"});
  write_safetensors_model(dir.path(), {}, 0);
  expect_error([&] { open_model_dir(dir.path()); }, {dir.file("config.json"), "does not exist"});
}

// Files linked out of the model directory: config.json is refused before it is read (its bytes
// never reach an error or merged.h5); a side file the export would copy is a problem preflight
// reports with the tensors'.
TEST(ModelDir, FilesLinkedOutOfTheDirectoryAreRefused) {
  TempDir dir, elsewhere;
  write_model(dir, tiny("llama"));
  write_bytes(elsewhere.file("secret.json"), R"({"model_type": "llama", "secret": "Zq8-hunter2"})");
  write_bytes(elsewhere.file("shadow"), "root:$6$Zq8:19000:0:99999:7:::\n");
  ASSERT_EQ(::symlink(elsewhere.file("shadow").c_str(), dir.file("merges.txt").c_str()), 0);
  expect_error([&] { open_model_dir(dir.path()); },
               {"not a valid llama model (1 problem)", dir.file("merges.txt"), "outside the model directory"});
  ::unlink(dir.file("merges.txt").c_str());
  ::unlink(dir.file("config.json").c_str());
  ASSERT_EQ(::symlink(elsewhere.file("secret.json").c_str(), dir.file("config.json").c_str()), 0);
  expect_error([&] { load_model_config(dir.path()); }, {dir.file("config.json"), "outside the model directory"});
  try {
    open_model_dir(dir.path());
    ADD_FAILURE() << "opened a model whose config.json links out";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("Zq8"), std::string::npos) << e.what();
  }
}
