// libFuzzer target for parse_safetensors_index (model.safetensors.index.json). recall::Error is
// the only acceptable failure; every accepted shard name must be a plain file name.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "recall/io/checkpoint.h"
#include "recall/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto map = recall::parse_safetensors_index(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/model.safetensors.index.json");
    if (map.empty()) std::abort();
    for (const auto& [tensor, file] : map)
      if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
        std::abort();
  } catch (const recall::Error&) {
  }
  return 0;
}
