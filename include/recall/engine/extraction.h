// What the pipeline and the engine exchange for representation extraction (torch-free, so both
// sides and the engine's entry-point table can include it): the options of a pass and the pooled
// hidden states the engine returns for the cells a rank owns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recall/merge/pooling.h"
#include "recall/util/device.h"

namespace recall::engine {

struct ExtractOptions {
  Device device = Device::Cpu;
  std::string compute_dtype = "float32";
  int64_t micro_batch = 8;
  int64_t stream_samples = 0;  // > 0: blocks loaded one at a time for groups of this many samples
  Pooling pooling = Pooling::Mean;  // token states -> one vector per sample
};

// The pooled representations of one hidden state of one model: [samples x hidden] float32.
struct PooledHiddenState {
  int model = 0;
  int64_t hidden_state = 0;  // 0 = embedding output, l + 1 = block l's output
  std::vector<float> values;
};

}  // namespace recall::engine
