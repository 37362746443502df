// Whole-string number parsing (see numbers.h).
#include "recall/util/numbers.h"

#include <string>

namespace recall {

std::optional<int64_t> parse_int64(std::string_view text) {
  const std::string s(text);
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(s, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (s.empty() || used != s.size()) return std::nullopt;
  return static_cast<int64_t>(x);
}

std::optional<double> parse_double(std::string_view text) {
  const std::string s(text);
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(s, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (s.empty() || used != s.size()) return std::nullopt;
  return x;
}

}  // namespace recall
