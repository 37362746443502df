// The Hugging Face export written while merging. The shard layout is fixed from the tensor specs
// before any tensor is merged: rank 0 creates every shard at its full size with its header (the
// data regions are holes until written) and the index; then every rank writes its rows of each
// merged tensor straight into place, from the same buffer it gives to merged.h5. The export
// therefore costs no second read of the merged bytes and its disk writes overlap the merge.
// Checksums are taken afterwards from the bytes as written (one rank per tensor).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "recall/io/safetensors.h"
#include "recall/pipeline/checksums.h"

namespace recall {

class HfShardWriter {
 public:
  // `specs` in HF canonical order (the order of the merge's slots); shards of at most shard_bytes.
  HfShardWriter(std::string dir, std::vector<TensorSpec> specs, uint64_t shard_bytes);
  ~HfShardWriter();
  HfShardWriter(const HfShardWriter&) = delete;
  HfShardWriter& operator=(const HfShardWriter&) = delete;

  const std::vector<std::string>& files() const { return files_; }
  const std::vector<TensorSpec>& specs() const { return specs_; }

  // Rank 0 only: creates (or truncates) every shard with its header at full size, and the index.
  void create() const;
  // True when every shard exists with its expected size and header (a resumed job's files).
  bool intact() const;
  // Every rank, after create(): opens the shards for reading and writing.
  void open();
  // Writes n bytes at byte `offset` of tensor `tensor` (an index into specs()).
  void write(size_t tensor, uint64_t offset, const void* data, uint64_t n);
  // fsync of every shard (this rank's writes reach the disk).
  void sync();
  // XXH3-64 of tensor `tensor`'s bytes as written (read back, normally from the page cache).
  uint64_t checksum(size_t tensor) const;
  void close();

 private:
  std::string dir_;
  std::vector<TensorSpec> specs_;
  std::vector<std::vector<size_t>> shards_;
  std::vector<std::string> files_;
  std::vector<std::string> headers_;   // per shard
  std::vector<size_t> shard_of_;       // per tensor
  std::vector<uint64_t> offset_of_;    // per tensor: absolute file offset of its data
  std::vector<int> fds_;
};

// Collective over comm: the XXH3-64 of every tensor of the export, by name, on every rank. `known`
// holds the checksums this rank computed as it wrote (tensor index -> checksum; see MergeStats);
// every other tensor t is hashed by rank t % world from the bytes in its file.
std::map<std::string, uint64_t> hf_checksums(MPI_Comm comm, const HfShardWriter& shards,
                                             const std::map<size_t, uint64_t>& known = {},
                                             const ChecksumProgress& progress = {});

}  // namespace recall
