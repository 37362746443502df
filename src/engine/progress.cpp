// Progress reporting on stderr (live bar on a terminal, plain lines otherwise).
#include "recall/engine/progress.h"

#include <unistd.h>

#include <cstdio>

namespace recall::engine {

Progress::Progress(std::string label, int64_t total, std::string unit, int64_t min_total)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  enabled_ = total >= min_total;
  tty_ = isatty(STDERR_FILENO);
  start_ = last_ = std::chrono::steady_clock::now();
}

void Progress::advance(int64_t n) {
  done_ += n;
  if (enabled_) report(false);
}

void Progress::finish() {
  if (enabled_ && !finished_) report(true);
  finished_ = true;
}

void Progress::report(bool final) {
  using namespace std::chrono;
  const auto now = steady_clock::now();
  const double elapsed = duration<double>(now - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(done_) / total_ : 1.0;
  const double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  const double eta = rate > 0 ? (total_ - done_) / rate : 0.0;
  if (tty_) {
    if (!final && duration<double>(now - last_).count() < 0.2) return;
    const int width = 30, filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%s [%s%s] %lld/%lld %s, %.1f %s/s, ETA %.0fs ", label_.c_str(),
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(), rate,
                 unit_.c_str(), eta);
    if (final) std::fprintf(stderr, "\n");
  } else {
    const int64_t decile = static_cast<int64_t>(frac * 10);
    if (!final && decile == last_decile_ && duration<double>(now - last_).count() < 30) return;
    last_decile_ = decile;
    std::fprintf(stderr, "%s: %lld/%lld %s (%.0f%%), %.1f %s/s, elapsed %.0fs, ETA %.0fs\n",
                 label_.c_str(), static_cast<long long>(done_), static_cast<long long>(total_),
                 unit_.c_str(), 100 * frac, rate, unit_.c_str(), elapsed, eta);
  }
  last_ = now;
}

}  // namespace recall::engine
