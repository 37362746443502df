// Parsing of byte sizes (see recall/util/byte_size.h).
#include "recall/util/byte_size.h"

#include <cmath>
#include <string>
#include <utility>

namespace recall {

std::optional<uint64_t> parse_byte_size(std::string_view text) {
  const std::string s(text);
  size_t pos = 0;
  double v;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    return std::nullopt;
  }
  std::string unit = s.substr(pos);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  static const std::pair<const char*, double> units[] = {
      {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
      {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  for (const auto& [name, mult] : units)
    if (unit == name) {
      const double bytes = std::round(v * mult);
      if (!(bytes >= 0) || !(bytes < 18446744073709551616.0)) return std::nullopt;  // 2^64
      return static_cast<uint64_t>(bytes);
    }
  return std::nullopt;
}

}  // namespace recall
