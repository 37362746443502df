// safetensors files: a validating, memory-mapped reader and an atomic writer.
// Format: u64 little-endian header length N, N bytes of JSON, then the data buffer. Every tensor
// has dtype, shape and data_offsets [begin, end) relative to the buffer start; the offsets must
// tile the buffer with no gap or overlap and end exactly at the end of the file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "recall/util/dtype.h"

namespace recall {

// One tensor entry of a safetensors header.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offset of the first element, relative to the data buffer
  uint64_t end = 0;    // one past the last byte

  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// The parsed, validated header of one safetensors file.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
};

// Parses and validates the JSON header of a file whose data buffer holds `buffer_size` bytes.
// `where` names the file in error messages. Pure function: used by the reader and the fuzzer.
SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t buffer_size,
                                           const std::string& where);

// A safetensors file opened for reading. Only the header is read on open; tensor data is
// memory-mapped on first access.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  uint64_t file_size() const { return file_size_; }
  uint64_t data_start() const { return data_start_; }

  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  // Throws an Error naming the file when absent.
  const TensorInfo& at(std::string_view name) const;

  // Pointer to the tensor's bytes inside the mapping (maps the file on first call).
  const uint8_t* data(const TensorInfo& t) const;
  // Copies `n` bytes starting `offset` bytes into the tensor to dst, with pread (no mapping).
  void read(const TensorInfo& t, uint64_t offset, uint64_t n, void* dst) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> by_name_;
  mutable const uint8_t* map_ = nullptr;
};

// The description of a tensor to write.
struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

// Writes one safetensors file atomically: the header goes out on construction (to
// "<path>.tmp.<pid>"), tensor bytes are written at their offsets in any order (pwrite, so several
// threads may write distinct tensors), and commit() checks that every byte was written, syncs and
// renames to `path`. A writer destroyed without commit() removes its temporary file.
class SafetensorsWriter {
 public:
  // Tensors are laid out in the order given; metadata gets {"format": "pt"} unless it has one.
  SafetensorsWriter(std::string path, std::vector<TensorSpec> specs,
                    std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Writes `n` bytes at `offset` within tensor `name`.
  void write(std::string_view name, const void* data, uint64_t n, uint64_t offset = 0);
  void commit();

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }

 private:
  std::string path_, tmp_path_;
  int fd_ = -1;
  uint64_t data_start_ = 0, file_size_ = 0;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> begin_, written_;
  std::map<std::string, size_t, std::less<>> by_name_;
  bool committed_ = false;
};

// The header of a safetensors file holding `specs` in order: the u64 little-endian length and the
// JSON, padded with spaces so the data starts 8-byte aligned (as the reference writer does).
// `begins` gets each tensor's offset within the data region. Duplicate names are an error.
std::string safetensors_header(const std::vector<TensorSpec>& specs, std::map<std::string, std::string> metadata,
                               std::vector<uint64_t>* begins, const std::string& path);

// Greedy split of `specs` (kept in order) into shards of at most `max_shard_bytes` of tensor
// data each (a tensor larger than the limit gets a shard of its own). Returns index lists.
std::vector<std::vector<size_t>> plan_shards(const std::vector<TensorSpec>& specs,
                                             uint64_t max_shard_bytes);

// "model.safetensors" for one shard, else "model-00001-of-00003.safetensors" (1-based).
std::string shard_file_name(size_t index, size_t count);

// Writes model.safetensors.index.json (weight_map + metadata.total_size) atomically into dir.
void write_safetensors_index(const std::string& dir, const std::vector<TensorSpec>& specs,
                             const std::vector<std::vector<size_t>>& shards);

// A tensor with its bytes in memory, for writing whole models at once.
struct TensorData {
  TensorSpec spec;
  std::vector<uint8_t> bytes;
};

// Writes a complete checkpoint into dir: one file, or shards plus index when the data exceeds
// max_shard_bytes (0 = never shard). Returns the file names written.
std::vector<std::string> write_safetensors_model(const std::string& dir,
                                                 const std::vector<TensorData>& tensors,
                                                 uint64_t max_shard_bytes);

}  // namespace recall
