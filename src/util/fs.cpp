// File-system helpers: whole-file reads, atomic writes and checked POSIX I/O.
#include "recall/util/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "recall/util/error.h"

namespace recall {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '", path, "': ", std::strerror(errno));
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) fail("cannot read '", path, "'");
  return os.str();
}

void write_file_atomic(const std::string& path, const std::string& content, unsigned mode) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) fail("cannot create '", tmp, "': ", std::strerror(errno));
  try {
    pwrite_exact(fd, content.data(), content.size(), 0, tmp);
    if (::fsync(fd) != 0) fail("cannot sync '", tmp, "': ", std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot rename '", tmp, "' to '", path, "': ", std::strerror(err));
  }
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint64_t file_size_of(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail("cannot stat '", path, "': ", std::strerror(errno));
  return static_cast<uint64_t>(st.st_size);
}

std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

namespace {

// Repeats `call` (pread or pwrite) until n bytes moved; EINTR retried, errors named with the file.
template <typename Buffer, typename Call>
void transfer_exact(int fd, Buffer* p, uint64_t n, uint64_t offset, const std::string& path, Call call,
                    const char* verb) {
  while (n > 0) {
    // Linux transfers at most 0x7ffff000 bytes per call.
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1ull << 30));
    const ssize_t moved = call(fd, p, chunk, static_cast<off_t>(offset));
    if (moved < 0) {
      if (errno == EINTR) continue;
      fail("cannot ", verb, " '", path, "' at byte ", offset, ": ", std::strerror(errno));
    }
    if (moved == 0) fail("'", path, "' is truncated: expected ", n, " more bytes at byte ", offset);
    p += moved;
    n -= static_cast<uint64_t>(moved);
    offset += static_cast<uint64_t>(moved);
  }
}

}  // namespace

void pread_exact(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& path) {
  transfer_exact(fd, static_cast<char*>(dst), n, offset, path, ::pread, "read");
}

void pwrite_exact(int fd, const void* src, uint64_t n, uint64_t offset, const std::string& path) {
  transfer_exact(fd, static_cast<const char*>(src), n, offset, path, ::pwrite, "write");
}

void make_directories(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create directory '", dir, "': ", ec.message());
}

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;  // nothing there
  auto remove_one = [](const char* p, const struct stat*, int, struct FTW*) -> int { return ::remove(p) ? -1 : 0; };
  if (::nftw(path.c_str(), remove_one, 64, FTW_DEPTH | FTW_PHYS) != 0)
    fail("cannot remove '", path, "': ", std::strerror(errno));
}

void rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    fail("cannot rename '", from, "' to '", to, "': ", std::strerror(errno));
}

std::string resolved_path(const std::string& path) {
  std::string p = path;
  if (p.empty() || p[0] != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof cwd)) p = join_path(cwd, p);
  }
  // Resolve the longest existing prefix; append the rest.
  std::string head = p, tail;
  while (!head.empty()) {
    char buf[PATH_MAX];
    if (::realpath(head.c_str(), buf)) {
      std::string r = buf;
      return tail.empty() ? r : join_path(r, tail);
    }
    const auto slash = head.find_last_of('/');
    if (slash == std::string::npos || slash == 0) break;
    tail = tail.empty() ? head.substr(slash + 1) : head.substr(slash + 1) + "/" + tail;
    head = head.substr(0, slash);
  }
  return p;
}

int64_t modification_time_ns(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

void copy_file(const std::string& from, const std::string& to) {
  struct stat st;
  if (::stat(from.c_str(), &st) != 0) fail("cannot read '", from, "': ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail("cannot copy '", from, "': not a regular file");
  write_file_atomic(to, read_text_file(from), st.st_mode & 0775);
}

void start_writeback(int fd, uint64_t offset, uint64_t n) {
  ::sync_file_range(fd, static_cast<off64_t>(offset), static_cast<off64_t>(n), SYNC_FILE_RANGE_WRITE);
}

uint64_t free_bytes(const std::string& path) {
  std::string p = resolved_path(path);
  while (!p.empty() && !path_exists(p)) {
    const size_t slash = p.find_last_of('/');
    p = slash == 0 ? "/" : (slash == std::string::npos ? "" : p.substr(0, slash));
  }
  struct statvfs st{};
  if (p.empty() || ::statvfs(p.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

namespace {
thread_local uint64_t tree_sum = 0;
int add_blocks(const char*, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_F) tree_sum += static_cast<uint64_t>(st->st_blocks) * 512;
  return 0;
}
}  // namespace

uint64_t tree_bytes(const std::string& path) {
  tree_sum = 0;
  if (path_exists(path)) ::nftw(path.c_str(), add_blocks, 64, FTW_PHYS);
  return tree_sum;
}

bool reserve_space(int fd, uint64_t offset, uint64_t n, const std::string& path) {
  if (n == 0) return true;
  int rc;
  do rc = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(n));
  while (rc != 0 && errno == EINTR);
  if (rc == 0) return true;
  if (errno == EOPNOTSUPP) return false;
  const int err = errno;
  fail("cannot reserve disk space for '", path, "' (bytes ", offset, " to ", offset + n, "): ", std::strerror(err));
}

void release_space(int fd, uint64_t offset, uint64_t n) {
  if (n > 0) ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(n));
}

void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '", path, "' to sync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail("cannot sync '", path, "' to disk: ", std::strerror(err));
}

}  // namespace recall
