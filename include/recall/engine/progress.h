// Progress of long engine work on stderr: a live bar on a terminal, plain lines (every 10% or
// 30 s) in batch logs. Silent for small totals.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace recall::engine {

class Progress {
 public:
  // Reports only when total >= min_total.
  Progress(std::string label, int64_t total, std::string unit, int64_t min_total = 64);
  void advance(int64_t n = 1);
  void finish();

 private:
  void report(bool final);
  std::string label_, unit_;
  int64_t total_ = 0, done_ = 0, last_decile_ = 0;
  bool enabled_ = false, tty_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace recall::engine
