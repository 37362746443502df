// Memory of this process from /proc/self/status, and a sampler of its peaks (see memory.h).
#include "recall/util/memory.h"

#include <chrono>
#include <cstdio>
#include <cstring>

namespace recall {

MemoryUsage current_memory_usage() {
  MemoryUsage u;
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return u;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long kb = 0;
    if (std::sscanf(line, "RssAnon: %llu kB", &kb) == 1) u.rss_anon = kb * 1024;
    else if (std::sscanf(line, "RssFile: %llu kB", &kb) == 1) u.rss_file = kb * 1024;
    else if (std::sscanf(line, "RssShmem: %llu kB", &kb) == 1) u.rss_shmem = kb * 1024;
    else if (std::sscanf(line, "VmHWM: %llu kB", &kb) == 1) u.vm_hwm = kb * 1024;
  }
  std::fclose(f);
  return u;
}

MemoryPeaks::MemoryPeaks(int period_ms) : period_ms_(period_ms) {
  sample();
  thread_ = std::thread([this] {
    while (!stop_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(period_ms_));
      sample();
    }
  });
}

MemoryPeaks::~MemoryPeaks() { stop(); }

void MemoryPeaks::stop() {
  if (thread_.joinable()) {
    stop_.store(true);
    thread_.join();
    sample();
  }
}

void MemoryPeaks::sample() {
  const MemoryUsage u = current_memory_usage();
  if (u.rss_anon > anon_.load()) anon_.store(u.rss_anon);
  if (u.rss_file > file_.load()) file_.store(u.rss_file);
}

}  // namespace recall
