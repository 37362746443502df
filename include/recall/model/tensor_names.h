// The tensor-name table: (block, role) <-> Hugging Face tensor name, and the shape each tensor
// must have under a given config. All supported architectures share HF's Llama naming; which
// roles exist depends on the config (biases, q/k norms, tied embeddings).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "recall/model/config.h"

namespace recall {

enum class Role {
  // Non-block tensors.
  Embed, FinalNorm, LmHead,
  // Block tensors.
  InputNorm, QProj, KProj, VProj, OProj, QBias, KBias, VBias, OBias, QNorm, KNorm,
  PostAttnNorm, GateProj, UpProj, DownProj, GateBias, UpBias, DownBias,
};

bool is_block_role(Role r);
std::string_view role_name(Role r);  // e.g. "q_proj"

// One expected tensor of a model.
struct TensorSlot {
  Role role;
  int64_t block;  // -1 for non-block tensors
  std::string name;
  std::vector<int64_t> shape;
};

// HF name of (role, block); block is ignored for non-block roles.
std::string tensor_name(Role role, int64_t block = -1);

// Inverse of tensor_name; nullopt for names outside the table.
std::optional<std::pair<Role, int64_t>> parse_tensor_name(std::string_view name);

// Every tensor a model with this config must have, in canonical order: embedding, blocks 0..L-1
// (roles in table order), final norm, lm_head (absent when embeddings are tied).
std::vector<TensorSlot> expected_tensors(const ModelConfig& config);

}  // namespace recall
