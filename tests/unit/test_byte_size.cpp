// The byte-size grammar (recall/util/byte_size.h): plain numbers, decimal and binary units,
// fractions and exponents; negatives, junk, non-whole bytes and overflow refused with a reason;
// and the formatter's output parses back to the same value (exhaustively over units, randomly
// over the 64-bit range).
#include <gtest/gtest.h>

#include <random>

#include "recall/util/byte_size.h"
#include "recall/util/error.h"

using recall::format_byte_size;
using recall::parse_byte_size;

namespace {

uint64_t parsed(const std::string& s) {
  std::string why;
  const auto v = parse_byte_size(s, &why);
  EXPECT_TRUE(v) << "'" << s << "' refused: " << why;
  return v.value_or(12345);
}

std::string refused(const std::string& s) {
  std::string why;
  const auto v = parse_byte_size(s, &why);
  EXPECT_FALSE(v) << "'" << s << "' accepted as " << v.value_or(0);
  return why;
}

}  // namespace

TEST(ByteSize, PlainAndUnits) {
  EXPECT_EQ(parsed("0"), 0u);
  EXPECT_EQ(parsed("1000"), 1000u);
  EXPECT_EQ(parsed("007"), 7u);
  EXPECT_EQ(parsed("5B"), 5u);
  EXPECT_EQ(parsed("1KB"), 1000u);
  EXPECT_EQ(parsed("1MB"), 1000000u);
  EXPECT_EQ(parsed("5GB"), 5000000000u);
  EXPECT_EQ(parsed("2TB"), 2000000000000u);
  EXPECT_EQ(parsed("200KiB"), 204800u);
  EXPECT_EQ(parsed("512MiB"), 536870912u);
  EXPECT_EQ(parsed("64GiB"), 68719476736u);
  EXPECT_EQ(parsed("1TiB"), 1099511627776u);
  EXPECT_EQ(parsed("5 GB"), 5000000000u);
  EXPECT_EQ(parsed("  5GB  "), 5000000000u);
  EXPECT_EQ(parsed("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(parsed("16777215TiB"), 16777215ull << 40);
}

TEST(ByteSize, FractionsAndExponents) {
  EXPECT_EQ(parsed("1.5GB"), 1500000000u);
  EXPECT_EQ(parsed("1e5"), 100000u);
  EXPECT_EQ(parsed("1E5"), 100000u);
  EXPECT_EQ(parsed("2.5e+3"), 2500u);
  EXPECT_EQ(parsed("5e-1KB"), 500u);
  EXPECT_EQ(parsed(".5KiB"), 512u);
  EXPECT_EQ(parsed("1.5KiB"), 1536u);
  EXPECT_EQ(parsed("0.1GB"), 100000000u);
  EXPECT_EQ(parsed("1.1GiB"), 1181116006u);  // 1181116006.4 rounds to the nearest byte
  EXPECT_EQ(parsed("1.2e1"), 12u);
  EXPECT_EQ(parsed("1.8446744073709551615e19"), UINT64_MAX);
}

TEST(ByteSize, RefusedWithAReason) {
  EXPECT_NE(refused("-5").find("negative"), std::string::npos);
  EXPECT_NE(refused("-0").find("negative"), std::string::npos);
  EXPECT_NE(refused("+5").find("sign"), std::string::npos);
  EXPECT_NE(refused("foo").find("does not start with a number"), std::string::npos);
  EXPECT_NE(refused("").find("empty"), std::string::npos);
  EXPECT_NE(refused("5gb").find("unknown unit 'gb'"), std::string::npos);
  EXPECT_NE(refused("5 G").find("unknown unit 'G'"), std::string::npos);
  EXPECT_NE(refused("5GBs").find("unknown unit"), std::string::npos);
  EXPECT_NE(refused("1.5.3GB").find("unknown unit '.3GB'"), std::string::npos);
  EXPECT_NE(refused("0x10").find("unknown unit 'x10'"), std::string::npos);
  EXPECT_NE(refused("inf").find("does not start with a number"), std::string::npos);
  EXPECT_NE(refused("nan").find("does not start with a number"), std::string::npos);
  EXPECT_NE(refused("1e").find("exponent"), std::string::npos);
  EXPECT_NE(refused("1.5").find("not a whole number of bytes"), std::string::npos);
  EXPECT_NE(refused("1e-1B").find("not a whole number of bytes"), std::string::npos);
  EXPECT_NE(refused("18446744073709551616").find("more than 2^64 - 1"), std::string::npos);
  EXPECT_NE(refused("16777216TiB").find("more than 2^64 - 1"), std::string::npos);
  EXPECT_NE(refused("1.9e19").find("more than 2^64 - 1"), std::string::npos);
  EXPECT_NE(refused("1e400").find("more than 2^64 - 1"), std::string::npos);
  EXPECT_NE(refused("5 5").find("unknown unit '5'"), std::string::npos);
}

TEST(ByteSize, OrFailNamesTheSettingAndTheValue) {
  try {
    recall::parse_byte_size_or_fail("lots", "--shard-bytes");
    FAIL() << "no error";
  } catch (const recall::Error& e) {
    EXPECT_STREQ(e.what(),
                 "--shard-bytes must be a byte count such as 5000000000, 5GB, 1.5GB or 512MiB; got 'lots': it does "
                 "not start with a number");
  }
  EXPECT_EQ(recall::parse_byte_size_or_fail("1MB", "x"), 1000000u);
}

TEST(ByteSize, FormatIsShortAndExact) {
  EXPECT_EQ(format_byte_size(0), "0");
  EXPECT_EQ(format_byte_size(123), "123");
  EXPECT_EQ(format_byte_size(1000), "1KB");
  EXPECT_EQ(format_byte_size(1024), "1KiB");
  EXPECT_EQ(format_byte_size(1536), "1536");
  EXPECT_EQ(format_byte_size(5000000000ull), "5GB");
  EXPECT_EQ(format_byte_size(1500000000ull), "1.5GB");
  EXPECT_EQ(format_byte_size(64ull << 20), "64MiB");
  EXPECT_EQ(format_byte_size(68719476736ull), "64GiB");
  EXPECT_EQ(format_byte_size(UINT64_MAX), "18446744073709551615");
}

TEST(ByteSize, FormatParsesBack) {
  std::vector<uint64_t> values = {0, 1, 999, 1000, 1001, 1023, 1024, 1025, UINT64_MAX, UINT64_MAX - 1};
  for (uint64_t unit : {1000ull, 1000000ull, 1000000000ull, 1000000000000ull, 1ull << 10, 1ull << 20, 1ull << 30,
                        1ull << 40})
    for (uint64_t k = 1; k <= 3000; k += 7) values.push_back(k * unit / 1000), values.push_back(k * unit);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) values.push_back(rng() >> (rng() % 64));
  for (uint64_t v : values) {
    const std::string s = format_byte_size(v);
    const auto back = parse_byte_size(s);
    ASSERT_TRUE(back) << v << " -> '" << s << "'";
    ASSERT_EQ(*back, v) << "'" << s << "'";
  }
}
