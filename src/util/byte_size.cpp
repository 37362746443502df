// Byte counts: the parser every config key and option uses, and an exact formatter.
#include "recall/util/byte_size.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "recall/util/error.h"

namespace recall {

namespace {

struct Unit {
  const char* name;
  uint64_t multiplier;
};
// Decimal before binary: of two unit spellings of the same length the formatter keeps the earlier.
constexpr Unit kUnits[] = {{"B", 1},
                           {"KB", 1000ull},
                           {"MB", 1000ull * 1000},
                           {"GB", 1000ull * 1000 * 1000},
                           {"TB", 1000ull * 1000 * 1000 * 1000},
                           {"KiB", 1ull << 10},
                           {"MiB", 1ull << 20},
                           {"GiB", 1ull << 30},
                           {"TiB", 1ull << 40}};
constexpr const char* kUnitList = "B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB (powers of 1024)";

std::optional<uint64_t> refuse(std::string* why, const std::string& reason) {
  if (why) *why = reason;
  return std::nullopt;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\t'; }

}  // namespace

std::optional<uint64_t> parse_byte_size(std::string_view text, std::string* why) {
  size_t i = 0, end = text.size();
  while (i < end && is_space(text[i])) ++i;
  while (end > i && is_space(text[end - 1])) --end;
  if (i == end) return refuse(why, "it is empty");
  if (text[i] == '-') return refuse(why, "a byte count cannot be negative");
  if (text[i] == '+') return refuse(why, "a byte count takes no sign");
  const size_t number_begin = i;
  size_t digits = 0;
  bool whole_syntax = true;  // digits only: parsed exactly as an integer
  while (i < end && is_digit(text[i])) ++i, ++digits;
  if (i < end && text[i] == '.') {
    whole_syntax = false;
    for (++i; i < end && is_digit(text[i]); ++i) ++digits;
  }
  if (digits == 0) return refuse(why, "it does not start with a number");
  if (i < end && (text[i] == 'e' || text[i] == 'E')) {
    whole_syntax = false;
    size_t j = i + 1, exponent_digits = 0;
    if (j < end && (text[j] == '+' || text[j] == '-')) ++j;
    while (j < end && is_digit(text[j])) ++j, ++exponent_digits;
    if (exponent_digits == 0) return refuse(why, "its exponent has no digits");
    i = j;
  }
  const std::string number(text.substr(number_begin, i - number_begin));
  while (i < end && is_space(text[i])) ++i;
  const std::string_view unit = text.substr(i, end - i);
  uint64_t multiplier = 1;
  bool known = unit.empty();
  for (const Unit& u : kUnits)
    if (unit == u.name) multiplier = u.multiplier, known = true;
  if (!known) return refuse(why, "unknown unit '" + std::string(unit) + "'; units: " + kUnitList);
  const std::string too_large = "it is more than 2^64 - 1 bytes";

  if (whole_syntax) {  // exact integer arithmetic
    uint64_t v = 0;
    const auto r = std::from_chars(number.data(), number.data() + number.size(), v);
    if (r.ec == std::errc::result_out_of_range) return refuse(why, too_large);
    const unsigned __int128 bytes = static_cast<unsigned __int128>(v) * multiplier;
    if (bytes > UINT64_MAX) return refuse(why, too_large);
    return static_cast<uint64_t>(bytes);
  }
  // A fraction or an exponent: long double holds every integer below 2^64 exactly (x86-64), so
  // "1.5GB" and "1e5" are exact and a decimal fraction of a unit rounds to the nearest byte.
  const long double v = std::strtold(number.c_str(), nullptr);
  if (!std::isfinite(v)) return refuse(why, too_large);
  const long double bytes = v * static_cast<long double>(multiplier);
  const long double rounded = std::roundl(bytes);
  if (!(rounded < 0x1p64L)) return refuse(why, too_large);
  if (multiplier == 1 && rounded != bytes) return refuse(why, "it is not a whole number of bytes");
  return static_cast<uint64_t>(rounded);
}

uint64_t parse_byte_size_or_fail(std::string_view text, const std::string& what) {
  std::string why;
  const std::optional<uint64_t> v = parse_byte_size(text, &why);
  if (!v) fail(what, " must be a byte count such as 5000000000, 5GB, 1.5GB or 512MiB; got '", text, "': ", why);
  return *v;
}

std::string format_byte_size(uint64_t bytes) {
  std::string best = std::to_string(bytes);
  bool plain = true;  // a unit wins a tie with plain digits ("1KB", not "1000")
  for (const Unit& u : kUnits) {
    if (u.multiplier == 1 || bytes < u.multiplier) continue;
    const unsigned __int128 thousandths = static_cast<unsigned __int128>(bytes) * 1000;
    if (thousandths % u.multiplier != 0) continue;  // not exact with three decimals
    const uint64_t m = static_cast<uint64_t>(thousandths / u.multiplier);
    std::string s = std::to_string(m / 1000);
    if (m % 1000 != 0) {
      char frac[8];
      std::snprintf(frac, sizeof frac, ".%03u", static_cast<unsigned>(m % 1000));
      std::string f = frac;
      while (f.back() == '0') f.pop_back();
      s += f;
    }
    s += u.name;
    if (s.size() < best.size() || (plain && s.size() == best.size())) best = s, plain = false;
  }
  return best;
}

}  // namespace recall
