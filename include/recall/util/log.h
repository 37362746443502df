// The job log: lines on stdout from rank 0, each stamped with the seconds since the job started
// ("[recall   12.34s] ..."), flushed at once (Slurm output files are read while the job runs).
#pragma once

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

namespace recall {

class Log {
 public:
  Log(int rank, bool quiet) : on_(rank == 0 && !quiet), quiet_(quiet), t0_(std::chrono::steady_clock::now()) {}
  bool enabled() const { return on_; }
  // The same log (same start time, same quiet flag) printing on this rank iff `printer`: for lines
  // only another rank than 0 knows, such as the progress of the cells it owns.
  Log printing_here(bool printer) const {
    Log l = *this;
    l.on_ = printer && !quiet_;
    return l;
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }
  template <typename... Parts>
  void operator()(Parts&&... parts) const {
    if (!on_) return;
    std::ostringstream os;
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "[recall %8.2fs] ", seconds());
    os << stamp;
    (os << ... << parts);
    std::cout << os.str() << std::endl;
  }

 private:
  bool on_;
  bool quiet_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace recall
