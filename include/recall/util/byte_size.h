// Byte counts as people write them ("5GB", "512MiB", "1.5GB", "1e5", "1000"): the one parser of
// every byte size recall reads (config keys such as output.shard_bytes, command-line options such
// as `recall export --shard-bytes`), and an exact formatter whose output parses back to the value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace recall {

// Grammar: [spaces] NUMBER [spaces] [UNIT] [spaces]
//   NUMBER: digits with an optional fraction and exponent, no sign (5, 1.5, .5, 1e5, 2.5e+3)
//   UNIT:   B (1), KB MB GB TB (powers of 1000), KiB MiB GiB TiB (powers of 1024); case matters
// The value is rounded to the nearest byte; without a unit (or with B) it must be whole already.
// Refused: a sign (so negatives), any other character or unit, hex, inf/nan, values over
// 2^64 - 1: nullopt, and when `why` is given it says what is wrong.
std::optional<uint64_t> parse_byte_size(std::string_view text, std::string* why = nullptr);

// The same, throwing an Error: "<what> must be a byte count such as 5000000000, 5GB or 512MiB
// (units: ...); got 'foo': <why>".
uint64_t parse_byte_size_or_fail(std::string_view text, const std::string& what);

// The shortest exact spelling that parse_byte_size reads back as `bytes`: a whole number of bytes,
// or a unit with at most three decimals ("5GB", "64MiB", "1.5KiB", "123", "0").
std::string format_byte_size(uint64_t bytes);

}  // namespace recall
