// Human-readable formatting shared by the jobs' output: byte counts, shapes, XML text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace recall {

std::string format_bytes(uint64_t bytes);  // "1.06 MB", "141.2 GB" (decimal units)
std::string format_shape(const std::vector<int64_t>& shape);  // "[64, 172]"
// Text for XML/SVG content and quoted attributes: & < > ' " escaped.
std::string xml_escape(const std::string& text);

}  // namespace recall
