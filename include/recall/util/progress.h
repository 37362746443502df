// Progress of a long loop as plain log lines with a rate and an ETA ("12000/200000 samples (6.0%),
// 2400 samples/s, 16800 tokens/s, ETA 78 s"): due at most every `interval_s` and at the end. No
// terminal tricks: Slurm writes stdout to a file.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace recall {

class ProgressMeter {
 public:
  // `total` items of `unit` ("samples"); tokens are counted beside them when given.
  ProgressMeter(int64_t total, std::string unit, double interval_s = 5.0);
  // Adds `items` (and `tokens`) done; true when a line is due: `interval_s` since the start or the
  // last due line, or everything done (once).
  bool advance(int64_t items, int64_t tokens = 0);
  // The progress so far, as one line (without a prefix).
  std::string line() const;
  int64_t done() const { return done_; }

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_, done_ = 0, tokens_ = 0;
  std::string unit_;
  double interval_s_;
  Clock::time_point start_, last_;
  bool finished_ = false;
};

}  // namespace recall
