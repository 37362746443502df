// Progress lines with a rate and an ETA (see progress.h).
#include "recall/util/progress.h"

#include <algorithm>
#include <cstdio>

namespace recall {

ProgressMeter::ProgressMeter(int64_t total, std::string unit, double interval_s)
    : total_(total), unit_(std::move(unit)), interval_s_(interval_s), start_(Clock::now()), last_(start_) {}

bool ProgressMeter::advance(int64_t items, int64_t tokens) {
  done_ += items;
  tokens_ += tokens;
  if (finished_) return false;
  const auto now = Clock::now();
  if (done_ >= total_) {
    finished_ = true;
    return true;
  }
  if (std::chrono::duration<double>(now - last_).count() < interval_s_) return false;
  last_ = now;
  return true;
}

std::string ProgressMeter::line() const {
  const double t = std::max(1e-9, std::chrono::duration<double>(Clock::now() - start_).count());
  const double rate = static_cast<double>(done_) / t;
  const double pct = total_ > 0 ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 100.0;
  char buf[256];
  int n = std::snprintf(buf, sizeof buf, "%lld/%lld %s (%.1f%%), %.1f %s/s", static_cast<long long>(done_),
                        static_cast<long long>(total_), unit_.c_str(), pct, rate, unit_.c_str());
  std::string s(buf, static_cast<size_t>(std::max(0, n)));
  if (tokens_ > 0) {
    std::snprintf(buf, sizeof buf, ", %.0f tokens/s", static_cast<double>(tokens_) / t);
    s += buf;
  }
  if (done_ >= total_) {
    std::snprintf(buf, sizeof buf, ", done in %.1f s", t);
  } else if (done_ > 0) {
    std::snprintf(buf, sizeof buf, ", ETA %.0f s", static_cast<double>(total_ - done_) / rate);
  } else {
    std::snprintf(buf, sizeof buf, ", ETA unknown");
  }
  return s + buf;
}

}  // namespace recall
