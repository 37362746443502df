// The portable random numbers recall draws (k-means++ seeding, tests): std::mt19937_64, whose
// output sequence the C++ standard fixes, with a uniform double of our own definition.
#pragma once

#include <cstdint>
#include <random>

namespace recall {

// The uniform double in [0, 1) is the top 53 bits of one 64-bit output times 2^-53
// (std::uniform_real_distribution is implementation-defined, so its draws differ between
// standard libraries).
class PortableRng {
 public:
  explicit PortableRng(uint64_t seed) : engine_(seed) {}
  uint64_t next_u64() { return engine_(); }
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  std::mt19937_64 engine_;
};

}  // namespace recall
