// The merge accumulation kernel without MPI: values against a long-double reference, the wider
// accumulator (visible on bf16 inputs), round-to-nearest-even outputs, thread-count invariance,
// row ranges, and the error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <cstring>

#include "testing_errors.h"
#include "recall/dist/exchange.h"
#include "recall/util/error.h"

using namespace recall;
using namespace recall::dist;

TEST(DistExchange, RowRangesTileTheRows) {
  for (int64_t rows : {0, 1, 7, 100}) {
    for (int parts = 1; parts <= 6; ++parts) {
      int64_t next = 0;
      for (int p = 0; p < parts; ++p) {
        const RowRange r = row_range(rows, parts, p);
        EXPECT_EQ(r.first, next);
        EXPECT_LE(r.count(), rows / parts + 1);
        EXPECT_GE(r.count(), rows / parts);
        next = r.end;
      }
      EXPECT_EQ(next, rows);
    }
  }
  EXPECT_EQ(error_message([] { row_range(10, 3, 3); }), "row_range: part 3 of 3 parts; expected 0 <= part < parts");
}

TEST(DistExchange, F32InputsAccumulateInDouble) {
  // 1 + 1e-8 is not representable in float; a float accumulator would lose the small terms.
  const float a[4] = {1.0f, 2.0f, 3.0f, 1e8f};
  const float b[4] = {1e-8f, -2.0f, 0.5f, 1.0f};
  const float c[4] = {-1.0f, 4.0f, 0.25f, -1e8f};
  const void* in[3] = {a, b, c};
  const double w[3] = {1.0, 1.0, 1.0};
  double out[4];
  weighted_sum_rows(in, 3, DType::F32, w, 2, 2, DType::F64, out);
  EXPECT_EQ(out[0], (1.0 + static_cast<double>(1e-8f)) - 1.0);
  EXPECT_EQ(out[1], 4.0);
  EXPECT_EQ(out[2], 3.75);
  EXPECT_EQ(out[3], 1.0);  // (1e8 + 1) - 1e8 exactly in double; 0 in float
}

TEST(DistExchange, Bf16MatchesReferenceAndRoundsToNearestEven) {
  const int models = 4;
  const size_t rows = 9, cols = 33;
  std::vector<std::vector<uint16_t>> data(models, std::vector<uint16_t>(rows * cols));
  uint32_t x = 12345;
  for (auto& d : data)
    for (auto& v : d) {
      x = x * 1664525u + 1013904223u;
      v = float_to_bf16((static_cast<float>(x >> 8) / 16777216.0f - 0.5f) * 8.0f);
    }
  const double w[models] = {0.1, 0.2, 0.3, 0.4};
  const void* in[models] = {data[0].data(), data[1].data(), data[2].data(), data[3].data()};
  std::vector<uint16_t> out(rows * cols);
  weighted_sum_rows(in, models, DType::BF16, w, rows, cols, DType::BF16, out.data());
  double max_rel = 0;
  for (size_t i = 0; i < rows * cols; ++i) {
    // Same arithmetic as specified: float accumulator, fixed order, then RNE to bf16.
    float acc = 0;
    for (int m = 0; m < models; ++m) acc = acc + static_cast<float>(w[m]) * bf16_to_float(data[m][i]);
    ASSERT_EQ(out[i], float_to_bf16(acc)) << "element " << i;
    long double exact = 0;
    for (int m = 0; m < models; ++m) exact += static_cast<long double>(w[m]) * bf16_to_float(data[m][i]);
    if (exact != 0) max_rel = std::max(max_rel, static_cast<double>(std::fabs((bf16_to_float(out[i]) - exact) / exact)));
  }
  // bf16 has 8 significant bits: half an ulp is 2^-8 relative; cancellation can add a little.
  std::printf("bf16 weighted sum of 4 models: max relative error vs long double %.3g\n", max_rel);
  EXPECT_LT(max_rel, 0.05);
  // A tie: 1 + 2^-8 is exactly halfway between two bf16 values; RNE goes to the even one (1.0).
  const float one = 1.0f, tiny = std::ldexp(1.0f, -8);
  const void* tie_in[2] = {&one, &tiny};
  const double ones[2] = {1.0, 1.0};
  uint16_t tie_out = 0;
  weighted_sum_rows(tie_in, 2, DType::F32, ones, 1, 1, DType::BF16, &tie_out);
  EXPECT_EQ(tie_out, 0x3F80);  // 1.0
}

TEST(DistExchange, ResultDoesNotDependOnThreadCount) {
  const size_t rows = 300, cols = 513;
  std::vector<uint16_t> a(rows * cols), b(rows * cols);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = float_to_f16(std::sin(0.001f * i));
    b[i] = float_to_f16(std::cos(0.003f * i) * 3.0f);
  }
  const void* in[2] = {a.data(), b.data()};
  const double w[2] = {0.37, 0.63};
  std::vector<uint16_t> one(rows * cols), many(rows * cols);
  weighted_sum_rows(in, 2, DType::F16, w, rows, cols, DType::F16, one.data(), 1);
  weighted_sum_rows(in, 2, DType::F16, w, rows, cols, DType::F16, many.data(), 7);
  EXPECT_EQ(one, many);
}

TEST(DistExchange, Errors) {
  const float a = 1;
  const void* in[1] = {&a};
  const double w[1] = {1};
  float out;
  EXPECT_EQ(error_message([&] { weighted_sum_rows(in, 1, DType::I32, w, 1, 1, DType::F32, &out); }),
            "weighted sum: input dtype I32 is not a float type");
  EXPECT_EQ(error_message([&] { weighted_sum_rows(in, 1, DType::F32, w, 1, 1, DType::U8, &out); }),
            "weighted sum: output dtype U8; expected F16, BF16, F32 or F64");
  EXPECT_EQ(error_message([&] { weighted_sum_rows(in, 0, DType::F32, w, 1, 1, DType::F32, &out); }),
            "weighted sum: 0 models; expected at least 1");
}
