// libFuzzer target for the safetensors header parser and reader. The input is read two ways:
//  1. as a file: the first 8 bytes are the header length N, then the header, then the data;
//     parse_safetensors_header gets the header and the size of what follows, and
//     SafetensorsFile::open / Checkpoint::open read the same bytes from an in-memory file
//     (memfd), decoding every tensor they accept;
//  2. with the first 8 bytes as an arbitrary buffer size (exercises huge offsets and sizes).
// recall::Error is the only acceptable failure; anything else (crash, sanitizer report, another
// exception type) stops the fuzzer.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "recall/io/checkpoint.h"
#include "recall/io/safetensors.h"
#include "recall/util/error.h"

namespace {

int memory_file() {
  static int fd = [] {
    int f = ::memfd_create("fuzz-safetensors", 0);
    if (f < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    return f;
  }();
  return fd;
}

void check_header(const recall::SafetensorsHeader& h, uint64_t buffer_size) {
  // The parser's promises: tensors tile [0, buffer_size) in order, sizes match shapes.
  uint64_t cursor = 0;
  for (const recall::TensorInfo& t : h.tensors) {
    if (t.begin != cursor || t.end < t.begin || t.end > buffer_size) std::abort();
    if (t.numel() * recall::dtype_size(t.dtype) != t.nbytes()) std::abort();
    cursor = t.end;
  }
  if (cursor != buffer_size) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  const std::string_view rest(reinterpret_cast<const char*>(data) + 8, size - 8);

  // 1a. The header as the file would split it.
  if (n <= rest.size()) {
    try {
      check_header(recall::parse_safetensors_header(rest.substr(0, n), rest.size() - n, "fuzz"),
                   rest.size() - n);
    } catch (const recall::Error&) {
    }
  }
  // 2. The whole rest as header, the length field as the buffer size.
  try {
    check_header(recall::parse_safetensors_header(rest, n, "fuzz"), n);
  } catch (const recall::Error&) {
  }

  // 1b. The reader over the same bytes as a file.
  const int fd = memory_file();
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    const recall::Checkpoint ckpt = recall::Checkpoint::open(path);
    const auto& file = *ckpt.files().front();
    for (const auto& [name, e] : ckpt.entries()) {
      const std::vector<float> values = ckpt.read_float(name);
      if (values.size() != e.info->numel()) std::abort();
      std::vector<uint8_t> copy(e.info->nbytes());
      file.read(*e.info, 0, copy.size(), copy.data());
      if (!copy.empty() && std::memcmp(copy.data(), file.data(*e.info), copy.size()) != 0) std::abort();
    }
  } catch (const recall::Error&) {
  }
  return 0;
}
