// A Hugging Face model directory opened and validated: config.json decoded, the checkpoint
// indexed, and every tensor the config implies present with its expected shape. Validation
// reads headers only.
#pragma once

#include <string>
#include <vector>

#include "recall/io/checkpoint.h"
#include "recall/model/config.h"
#include "recall/model/tensor_names.h"

namespace recall {

struct ModelDir {
  std::string path;
  ModelConfig config;
  Checkpoint checkpoint;
  std::vector<TensorSlot> slots;        // expected tensors, canonical order
  std::vector<std::string> ignored;     // tensors present but not used (e.g. rotary inv_freq)
};

// Problems found while validating a model directory; empty when valid.
std::vector<std::string> validate_model_tensors(const ModelConfig& config,
                                                const Checkpoint& checkpoint,
                                                std::vector<std::string>* ignored = nullptr);

// Opens and validates; throws an Error listing every problem at once.
ModelDir open_model_dir(const std::string& path);

}  // namespace recall
