// DType names, sizes and the float decoders/encoders against known bit patterns.
#include <gtest/gtest.h>

#include <cmath>

#include "recall/util/dtype.h"

using namespace recall;

TEST(DType, NamesRoundTrip) {
  for (DType t : kAllDTypes) {
    auto parsed = parse_dtype(dtype_name(t));
    ASSERT_TRUE(parsed.has_value()) << dtype_name(t);
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_FALSE(parse_dtype("F4").has_value());
  EXPECT_FALSE(parse_dtype("bf16").has_value());  // names are case-sensitive, as in safetensors
}

TEST(DType, Sizes) {
  EXPECT_EQ(dtype_size(DType::BOOL), 1u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::U32), 4u);
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  EXPECT_EQ(dtype_size(DType::F8_E5M2), 1u);
}

TEST(DType, HalfDecode) {
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0xc000), -2.0f);
  EXPECT_EQ(f16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(f16_to_float(0x7c00)));
  EXPECT_TRUE(std::isnan(f16_to_float(0x7e00)));
}

TEST(DType, HalfEncodeRoundTripsEveryValue) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = f16_to_float(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_f16(f), b) << "bits " << b;
  }
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);        // rounds to infinity
  EXPECT_EQ(float_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // tie to even
}

TEST(DType, Bf16RoundTripAndRounding) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bf16_to_float(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_bf16(f), b);
  }
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);  // exactly half an ulp above 1: tie to even
}

TEST(DType, Float8) {
  EXPECT_EQ(f8e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(f8e4m3_to_float(0x7e), 448.0f);  // largest finite E4M3FN
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(0x7f)));
  EXPECT_EQ(f8e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(f8e5m2_to_float(0x3c), 1.0f);
  EXPECT_EQ(f8e5m2_to_float(0x7b), 57344.0f);
  EXPECT_TRUE(std::isinf(f8e5m2_to_float(0x7c)));
}

TEST(DType, TorchNames) {
  EXPECT_EQ(parse_torch_dtype("bfloat16"), DType::BF16);
  EXPECT_EQ(parse_torch_dtype("torch.float16"), DType::F16);
  EXPECT_EQ(parse_torch_dtype("float32"), DType::F32);
  EXPECT_EQ(parse_torch_dtype("float64"), DType::F64);
  EXPECT_EQ(parse_torch_dtype("float8_e4m3fn"), DType::F8_E4M3);
  EXPECT_EQ(parse_torch_dtype("float8_e5m2"), DType::F8_E5M2);
  EXPECT_FALSE(parse_torch_dtype("BF16").has_value());  // the safetensors spelling is parse_dtype's
  EXPECT_FALSE(parse_torch_dtype("int8").has_value());
  EXPECT_FALSE(parse_torch_dtype("").has_value());
}
