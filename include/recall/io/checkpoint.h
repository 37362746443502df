// One index for a checkpoint: tensor name -> {shard file, dtype, shape, offsets}, built from a
// single model.safetensors, from model.safetensors.index.json and its shards, or from one
// .safetensors file. Every shard is validated before any tensor is read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "recall/io/safetensors.h"

namespace recall {

class Checkpoint {
 public:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };

  // `path` is a model directory or a .safetensors file. Pickled checkpoints (*.bin, *.pt) are
  // refused: loading them can run code.
  static Checkpoint open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // Ordered by name.
  const std::map<std::string, Entry, std::less<>>& entries() const { return entries_; }
  const Entry* find(std::string_view name) const;
  const Entry& at(std::string_view name) const;  // throws naming the checkpoint
  bool sharded() const { return sharded_; }

  uint64_t total_bytes() const;
  std::map<DType, uint64_t> bytes_by_dtype() const;

  // Whole tensor decoded to float32 (any dtype).
  std::vector<float> read_float(std::string_view name) const;

 private:
  std::string path_;
  bool sharded_ = false;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> entries_;
};

// Validates the JSON text of model.safetensors.index.json and returns tensor -> shard file name.
// Shard names must be plain file names (no directories). `where` names the file in errors.
std::map<std::string, std::string> parse_safetensors_index(std::string_view json,
                                                           const std::string& where);

}  // namespace recall
