// libFuzzer target: the merge config's YAML decoding (parse_merge_config), with and without a
// --set override taken from the input's first line. Only recall::Error may escape.
#include <cstddef>
#include <cstdint>
#include <string>

#include "recall/config/merge_config.h"
#include "recall/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    recall::parse_merge_config(text, "fuzz.yaml");
  } catch (const recall::Error&) {
  }
  const auto nl = text.find('\n');
  if (nl != std::string::npos && text.find('=') < nl) {
    try {
      recall::parse_merge_config(text.substr(nl + 1), "fuzz.yaml", {text.substr(0, nl)});
    } catch (const recall::Error&) {
    }
  }
  return 0;
}
