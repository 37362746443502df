// The hidden states of a block-major pass's micro-batches between blocks (streaming extraction,
// RegMean++'s merged path), held in memory up to a byte bound and spilled to files beyond it.
// Torch inside the engine only.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace recall::engine {

// By micro-batch index. In the order they are first put, each is held in memory (on the compute
// device) when its bytes fit in what `max_bytes` leaves (0 = no bound), else spilled to a file of
// its own under a fresh directory in `scratch` (default $TMPDIR, else /tmp), removed with the
// store. A micro-batch keeps its place (memory or file) for the whole pass: a block's output has
// its input's shape and dtype.
class HeldStates {
 public:
  HeldStates(uint64_t max_bytes, std::string scratch, int model, int rank)
      : max_bytes_(max_bytes), scratch_(std::move(scratch)), model_(model), rank_(rank) {}
  ~HeldStates();
  HeldStates(const HeldStates&) = delete;
  HeldStates& operator=(const HeldStates&) = delete;

  void put(int64_t i, const at::Tensor& h);
  at::Tensor get(int64_t i, at::Device device) const;

 private:
  struct Slot {
    bool placed = false, spilled = false;
    at::Tensor memory;
    std::string file;
    std::vector<int64_t> shape;
    at::ScalarType dtype = at::kFloat;
  };
  const std::string& directory();

  uint64_t max_bytes_, in_memory_ = 0;
  std::string scratch_, dir_;
  int model_, rank_;
  std::vector<Slot> slots_;
};

}  // namespace recall::engine
