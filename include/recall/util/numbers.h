// Whole-string number parsing for command-line values and text inputs: the whole text must be
// the number (no trailing junk, no empty string), unlike std::stoll / std::stod.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace recall {

std::optional<int64_t> parse_int64(std::string_view text);
std::optional<double> parse_double(std::string_view text);  // finite or not, as strtod reads it

}  // namespace recall
