// The tensor-name table shared by llama, mistral, qwen2 and qwen3.
#include "recall/model/tensor_names.h"

#include <charconv>

namespace recall {

namespace {

struct RoleRow {
  Role role;
  const char* name;     // short name
  const char* pattern;  // HF name; "{}" is the block index
};

constexpr RoleRow kTable[] = {
    {Role::Embed, "embed_tokens", "model.embed_tokens.weight"},
    {Role::FinalNorm, "norm", "model.norm.weight"},
    {Role::LmHead, "lm_head", "lm_head.weight"},
    {Role::InputNorm, "input_layernorm", "model.layers.{}.input_layernorm.weight"},
    {Role::QProj, "q_proj", "model.layers.{}.self_attn.q_proj.weight"},
    {Role::KProj, "k_proj", "model.layers.{}.self_attn.k_proj.weight"},
    {Role::VProj, "v_proj", "model.layers.{}.self_attn.v_proj.weight"},
    {Role::OProj, "o_proj", "model.layers.{}.self_attn.o_proj.weight"},
    {Role::QBias, "q_proj.bias", "model.layers.{}.self_attn.q_proj.bias"},
    {Role::KBias, "k_proj.bias", "model.layers.{}.self_attn.k_proj.bias"},
    {Role::VBias, "v_proj.bias", "model.layers.{}.self_attn.v_proj.bias"},
    {Role::OBias, "o_proj.bias", "model.layers.{}.self_attn.o_proj.bias"},
    {Role::QNorm, "q_norm", "model.layers.{}.self_attn.q_norm.weight"},
    {Role::KNorm, "k_norm", "model.layers.{}.self_attn.k_norm.weight"},
    {Role::PostAttnNorm, "post_attention_layernorm", "model.layers.{}.post_attention_layernorm.weight"},
    {Role::GateProj, "gate_proj", "model.layers.{}.mlp.gate_proj.weight"},
    {Role::UpProj, "up_proj", "model.layers.{}.mlp.up_proj.weight"},
    {Role::DownProj, "down_proj", "model.layers.{}.mlp.down_proj.weight"},
    {Role::GateBias, "gate_proj.bias", "model.layers.{}.mlp.gate_proj.bias"},
    {Role::UpBias, "up_proj.bias", "model.layers.{}.mlp.up_proj.bias"},
    {Role::DownBias, "down_proj.bias", "model.layers.{}.mlp.down_proj.bias"},
};

const RoleRow& row(Role r) {
  for (const RoleRow& x : kTable)
    if (x.role == r) return x;
  return kTable[0];
}

// Whether the role exists under this config, and its shape.
std::optional<std::vector<int64_t>> shape_of(Role r, const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const bool qkv_bias = c.attention_bias || c.qkv_bias;
  switch (r) {
    case Role::Embed: return std::vector<int64_t>{V, H};
    case Role::FinalNorm: return std::vector<int64_t>{H};
    case Role::LmHead:
      if (c.tie_word_embeddings) return std::nullopt;
      return std::vector<int64_t>{V, H};
    case Role::InputNorm: case Role::PostAttnNorm: return std::vector<int64_t>{H};
    case Role::QProj: return std::vector<int64_t>{q, H};
    case Role::KProj: case Role::VProj: return std::vector<int64_t>{kv, H};
    case Role::OProj: return std::vector<int64_t>{H, q};
    case Role::QBias: if (!qkv_bias) return std::nullopt; return std::vector<int64_t>{q};
    case Role::KBias: case Role::VBias:
      if (!qkv_bias) return std::nullopt;
      return std::vector<int64_t>{kv};
    case Role::OBias: if (!c.attention_bias) return std::nullopt; return std::vector<int64_t>{H};
    case Role::QNorm: case Role::KNorm:
      if (!c.qk_norm) return std::nullopt;
      return std::vector<int64_t>{c.head_dim};
    case Role::GateProj: case Role::UpProj: return std::vector<int64_t>{I, H};
    case Role::DownProj: return std::vector<int64_t>{H, I};
    case Role::GateBias: case Role::UpBias:
      if (!c.mlp_bias) return std::nullopt;
      return std::vector<int64_t>{I};
    case Role::DownBias: if (!c.mlp_bias) return std::nullopt; return std::vector<int64_t>{H};
  }
  return std::nullopt;
}

}  // namespace

bool is_block_role(Role r) { return r != Role::Embed && r != Role::FinalNorm && r != Role::LmHead; }

std::string_view role_name(Role r) { return row(r).name; }

std::string tensor_name(Role role, int64_t block) {
  std::string p = row(role).pattern;
  auto pos = p.find("{}");
  if (pos != std::string::npos) p.replace(pos, 2, std::to_string(block));
  return p;
}

std::optional<std::pair<Role, int64_t>> parse_tensor_name(std::string_view name) {
  for (const RoleRow& x : kTable) {
    std::string_view p = x.pattern;
    auto pos = p.find("{}");
    if (pos == std::string_view::npos) {
      if (name == p) return std::make_pair(x.role, int64_t{-1});
      continue;
    }
    std::string_view prefix = p.substr(0, pos), suffix = p.substr(pos + 2);
    if (name.size() <= prefix.size() + suffix.size() || name.substr(0, prefix.size()) != prefix ||
        name.substr(name.size() - suffix.size()) != suffix)
      continue;
    std::string_view digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    int64_t block = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), block);
    if (ec != std::errc() || end != digits.data() + digits.size() || block < 0) continue;
    if (digits.size() > 1 && digits[0] == '0') continue;  // "01" is not a canonical index
    return std::make_pair(x.role, block);
  }
  return std::nullopt;
}

std::vector<TensorSlot> expected_tensors(const ModelConfig& c) {
  std::vector<TensorSlot> out;
  auto add = [&](Role r, int64_t block) {
    if (auto shape = shape_of(r, c)) out.push_back({r, block, tensor_name(r, block), *shape});
  };
  add(Role::Embed, -1);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (const RoleRow& x : kTable)
      if (is_block_role(x.role)) add(x.role, l);
  add(Role::FinalNorm, -1);
  add(Role::LmHead, -1);
  return out;
}

}  // namespace recall
