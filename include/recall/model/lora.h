// PEFT LoRA adapters applied as the base weights are read: W' = W + s * B A with
// s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), computed in float32 and rounded back
// to the weight's dtype, as PEFT's merge_and_unload does. The adapter directory holds
// adapter_config.json and adapter_model.safetensors; users merge LoRA fine-tunes without writing
// full copies first.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "recall/io/checkpoint.h"
#include "recall/util/dtype.h"
#include "recall/model/config.h"

namespace recall {

class LoraAdapter {
 public:
  // Validates the adapter against the base model's config: supported options only, every
  // lora_A/lora_B pair present with shapes [r, in] and [out, r] matching the target tensor.
  static std::shared_ptr<const LoraAdapter> open(const std::string& dir, const ModelConfig& base);

  const std::string& path() const { return path_; }
  double scale() const { return scale_; }
  int64_t rank() const { return rank_; }
  bool targets(const std::string& tensor) const { return pairs_.count(tensor) > 0; }
  size_t target_count() const { return pairs_.size(); }
  const Checkpoint& checkpoint() const { return checkpoint_; }

  // Adds the adapter's delta to rows [row0, row0 + rows) of `tensor`, stored in `bytes` as `dtype`
  // (BF16, F16 or F32) with `cols` elements per row; a no-op for tensors it does not target.
  void apply_rows(const std::string& tensor, DType dtype, uint64_t row0, uint64_t rows, uint64_t cols,
                  void* bytes) const;

 private:
  struct Pair {
    std::string a, b;  // names of lora_A [r, in] and lora_B [out, r] in the adapter file
  };
  std::string path_;
  double scale_ = 1;
  int64_t rank_ = 0;
  Checkpoint checkpoint_;
  std::map<std::string, Pair> pairs_;  // by the base tensor's HF name
};

// True when `dir` holds a PEFT adapter (adapter_config.json).
bool is_lora_adapter(const std::string& dir);

}  // namespace recall
