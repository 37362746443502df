// Human-readable formatting of byte counts, shapes, timestamps and XML text.
#include "recall/util/format.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace recall {

namespace {

std::string scaled(uint64_t bytes, double base, const char* const* units) {
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= base && u < 5) v /= base, ++u;
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

}  // namespace

std::string format_bytes(uint64_t bytes) {
  static const char* const units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  return scaled(bytes, 1000.0, units);
}

std::string format_bytes_binary(uint64_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  return scaled(bytes, 1024.0, units);
}

std::string format_size_setting(uint64_t bytes) {
  // A whole number of binary units was most likely written in them (64GiB): show both.
  if (bytes >= 1024 && bytes % 1024 == 0 && format_bytes_binary(bytes).find(".00 ") != std::string::npos)
    return format_bytes_binary(bytes) + " (" + format_bytes(bytes) + ")";
  return format_bytes(bytes);
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string shortest_number(const std::string& text) {
  if (text.find_first_of(".eE") == std::string::npos) return text;  // integers, words
  double v = 0;
  const char* end = text.data() + text.size();
  const auto parsed = std::from_chars(text.data(), end, v);
  if (parsed.ec != std::errc() || parsed.ptr != end || !std::isfinite(v)) return text;
  return shortest_number(v);
}

std::string shortest_number(double v) {
  char buf[64];
  const auto written = std::to_chars(buf, buf + sizeof buf, v);  // shortest round trip
  return std::string(buf, written.ptr);
}

std::string utc_now() {
  char b[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

std::string xml_escape(const std::string& text) {
  std::string o;
  for (char c : text) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '\'') o += "&apos;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

}  // namespace recall
