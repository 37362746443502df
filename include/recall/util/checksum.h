// Integrity checksums: XXH3-64 (xxHash, a fast, well-known hash from a packaged library) of a
// tensor's bytes, printed as 16 lowercase hex digits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace recall {

uint64_t xxh3_64(const void* data, size_t n);
std::string checksum_hex(uint64_t h);

// Streaming form for data that arrives in pieces.
class Xxh3Stream {
 public:
  Xxh3Stream();
  ~Xxh3Stream();
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;
  void update(const void* data, size_t n);
  uint64_t digest() const;

 private:
  void* state_;
};

}  // namespace recall
