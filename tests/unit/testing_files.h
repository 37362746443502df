// Test helpers for the checkpoint tests: a temporary directory removed at the end of each test,
// raw file writing, hand-built safetensors files (header text + data bytes), and an assertion
// that a call throws recall::Error whose message contains every expected fragment.
#pragma once

#include <gtest/gtest.h>
#include <dirent.h>
#include <ftw.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "recall/util/error.h"

namespace recall::testing {

// Uses POSIX calls, not std::filesystem: libtorch.so (torch 2.11 wheel) exports its own copies of
// std::filesystem functions built against a newer libstdc++, and std::filesystem::remove_all
// calls a null pointer in any binary that links it.
class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/recall-test-XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~TempDir() {
    ::nftw(path_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); },
           16, FTW_DEPTH | FTW_PHYS);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Names of the directory's entries, sorted.
  std::vector<std::string> list() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(path_.c_str())) {
      while (const dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          out.push_back(e->d_name);
      ::closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// u64 little-endian header length, the header text, then `data` (the data buffer).
inline std::string safetensors_bytes(const std::string& header, const std::string& data,
                                     uint64_t declared_len = UINT64_MAX) {
  const uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// Asserts that fn() throws recall::Error and that its message contains every fragment.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
  } catch (const recall::Error& e) {
    const std::string msg = e.what();
    for (const std::string& f : fragments)
      EXPECT_NE(msg.find(f), std::string::npos)
          << "error message lacks \"" << f << "\"\n  message: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-recall exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "no error was raised (expected one mentioning \""
                << (fragments.empty() ? std::string() : fragments.front()) << "\")";
}

}  // namespace recall::testing
