// Human-readable formatting shared by the jobs' output: byte counts, shapes, timestamps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace recall {

std::string format_bytes(uint64_t bytes);  // "1.06 MB", "141.2 GB" (decimal units)
std::string format_shape(const std::vector<int64_t>& shape);  // "[64, 172]"
std::string utc_now();  // "2026-12-01T14:58:11Z"

}  // namespace recall
