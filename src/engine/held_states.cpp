// Hidden states held between blocks, spilled beyond a bound (see held_states.h).
#include "recall/engine/held_states.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "recall/engine/cell_pooling.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace recall::engine {

namespace {

std::atomic<int64_t> g_spilled_bytes{0};

// An open file descriptor, closed on scope exit; fails (naming the spill file) when open failed.
struct FileHandle {
  int fd;
  FileHandle(int f, const std::string& path) : fd(f) {
    if (fd < 0) fail("cannot open the spill file '", path, "': ", std::strerror(errno));
  }
  ~FileHandle() { ::close(fd); }
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;
};

}  // namespace

int64_t spilled_bytes() { return g_spilled_bytes.load(); }

HeldStates::~HeldStates() {
  if (dir_.empty()) return;
  try {
    remove_tree(dir_);
  } catch (...) {  // a leftover scratch directory is not worth a second exception
  }
}

void HeldStates::put(int64_t i, const at::Tensor& h) {
  if (static_cast<size_t>(i) >= slots_.size()) slots_.resize(static_cast<size_t>(i) + 1);
  Slot& s = slots_[static_cast<size_t>(i)];
  if (!s.placed) {
    const auto bytes = static_cast<uint64_t>(h.nbytes());
    s.spilled = max_bytes_ > 0 && in_memory_ + bytes > max_bytes_;
    if (!s.spilled) in_memory_ += bytes;
    s.placed = true;
  }
  if (!s.spilled) {
    s.memory = h;
    return;
  }
  s.shape = h.sizes().vec();
  s.dtype = h.scalar_type();
  const at::Tensor host = h.to(at::kCPU).contiguous();
  if (s.file.empty()) s.file = directory() + "/mb_" + std::to_string(i);
  const FileHandle f(::open(s.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600), s.file);
  pwrite_exact(f.fd, host.data_ptr(), host.nbytes(), 0, s.file);
  g_spilled_bytes += static_cast<int64_t>(host.nbytes());
}

at::Tensor HeldStates::get(int64_t i, at::Device device) const {
  const Slot& s = slots_.at(static_cast<size_t>(i));
  if (!s.spilled) return s.memory;
  at::Tensor host = at::empty(s.shape, at::TensorOptions().dtype(s.dtype));
  const FileHandle f(::open(s.file.c_str(), O_RDONLY), s.file);
  pread_exact(f.fd, host.data_ptr(), host.nbytes(), 0, s.file);
  return host.to(device);
}

const std::string& HeldStates::directory() {
  if (!dir_.empty()) return dir_;
  std::string base = scratch_;
  if (base.empty()) base = std::getenv("TMPDIR") && *std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  make_directories(base);
  std::string pattern = base + "/recall-spill-m" + std::to_string(model_) + "-r" + std::to_string(rank_) + "-XXXXXX";
  if (!::mkdtemp(pattern.data()))
    fail("cannot create a spill directory in '", base, "' (parallel.scratch_dir): ", std::strerror(errno));
  dir_ = pattern;
  return dir_;
}

}  // namespace recall::engine
