// Human-readable formatting shared by the jobs' output: byte counts, shapes, timestamps, XML text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace recall {

std::string format_bytes(uint64_t bytes);         // "1.06 MB", "141.20 GB" (decimal units)
std::string format_bytes_binary(uint64_t bytes);  // "1.00 MiB", "64.00 GiB" (binary units)
// A byte setting as its user likely wrote it: "64.00 GiB (68.72 GB)" for a whole number of binary
// units, else format_bytes.
std::string format_size_setting(uint64_t bytes);
std::string format_shape(const std::vector<int64_t>& shape);  // "[64, 172]"
std::string utc_now();  // "2026-12-01T14:58:11Z"
// A decimal number's shortest text that reads back as the same double ("0.10000000000000001" ->
// "0.1", "1.0000000000000001e-05" -> "1e-05"); integers and anything that is not a number are
// returned as they are.
std::string shortest_number(const std::string& text);
// A double's shortest text that reads back as the same double (0.7, 1e-05).
std::string shortest_number(double v);
// Text for XML/SVG content and quoted attributes: & < > ' " escaped.
std::string xml_escape(const std::string& text);

}  // namespace recall
