// A Hugging Face model directory opened and validated: config.json decoded, the checkpoint
// indexed, and every tensor the config implies present with its expected shape. Validation
// reads headers only.
#pragma once

#include <string>
#include <vector>

#include "recall/io/checkpoint.h"
#include "recall/model/config.h"
#include "recall/model/lora.h"
#include "recall/model/tensor_names.h"

namespace recall {

struct ModelDir {
  std::string path;
  ModelConfig config;
  Checkpoint checkpoint;
  std::vector<TensorSlot> slots;        // expected tensors, canonical order
  std::vector<std::string> ignored;     // tensors present but not used (e.g. rotary inv_freq)
  std::shared_ptr<const LoraAdapter> lora;  // applied to the weights as they are read (may be null)
};

// Problems found while validating a model directory; empty when valid.
std::vector<std::string> validate_model_tensors(const ModelConfig& config,
                                                const Checkpoint& checkpoint,
                                                std::vector<std::string>* ignored = nullptr);

// Opens and validates; throws an Error listing every problem at once.
ModelDir open_model_dir(const std::string& path);

// A model directory, or a PEFT LoRA adapter directory on top of `base_model` (a model directory;
// when empty, the adapter_config.json's base_model_name_or_path if that is a local directory).
ModelDir open_model_or_adapter(const std::string& path, const std::string& base_model);

}  // namespace recall
