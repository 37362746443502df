// This process's memory, as a cgroup (Slurm's --mem) sees it: resident anonymous memory (heap,
// stacks, anonymous mappings: what the process cannot give back without freeing) and resident
// file-backed memory (pages of memory-mapped inputs, which the kernel reclaims under pressure).
// Linux reports current values only (/proc/self/status RssAnon, RssFile), so peaks are sampled.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace recall {

struct MemoryUsage {
  uint64_t rss_anon = 0;  // bytes
  uint64_t rss_file = 0;
  uint64_t rss_shmem = 0;
  uint64_t vm_hwm = 0;    // peak total resident set (anonymous + file + shared), from the kernel
};

// The current values from /proc/self/status (zeros where the kernel does not report them).
MemoryUsage current_memory_usage();

// Samples current_memory_usage() on a thread of its own every `period_ms` until destroyed or
// stop(), keeping the largest RssAnon and RssFile seen. A peak shorter than the period can be
// missed; the merge's and the extraction's buffers live far longer.
class MemoryPeaks {
 public:
  explicit MemoryPeaks(int period_ms = 10);
  ~MemoryPeaks();
  MemoryPeaks(const MemoryPeaks&) = delete;
  MemoryPeaks& operator=(const MemoryPeaks&) = delete;

  void stop();
  uint64_t anon() const { return anon_.load(); }
  uint64_t file() const { return file_.load(); }
  uint64_t hwm() const { return current_memory_usage().vm_hwm; }

 private:
  void sample();
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> anon_{0}, file_{0};
  int period_ms_;
  std::thread thread_;
};

}  // namespace recall
