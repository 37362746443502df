// Fisher merging and AIM: each against its formula recomputed here (the floor, the normalization
// by global Fisher norms, the per-channel relaxation), the degenerate cases, and merging a tensor
// in pieces giving the same bits as merging it whole.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "testing_errors.h"
#include "recall/merge/aim.h"
#include "recall/merge/fisher.h"
#include "recall/util/dtype.h"
#include "recall/util/error.h"
#include "recall/util/rng.h"

using namespace recall;

namespace {

std::vector<float> random_floats(size_t n, PortableRng& rng, double lo, double hi) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(lo + rng.uniform() * (hi - lo));
  return v;
}

std::vector<uint8_t> as_bytes(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> b(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&b[i * 4], &v[i], 4);
    } else {
      const uint16_t h = t == DType::BF16 ? float_to_bf16(v[i]) : float_to_f16(v[i]);
      std::memcpy(&b[i * 2], &h, 2);
    }
  }
  return b;
}

std::vector<float> as_floats(const std::vector<uint8_t>& b, DType t) {
  std::vector<float> v(b.size() / dtype_size(t));
  decode_to_float(t, b.data(), v.size(), v.data());
  return v;
}

// One unit in the last place of `t` at |x|.
double ulp(float x, DType t) {
  const float a = std::fabs(x);
  if (t == DType::F32) return std::nextafter(a, INFINITY) - a;
  const uint16_t h = t == DType::BF16 ? float_to_bf16(a) : float_to_f16(a);
  const uint16_t next = static_cast<uint16_t>(h + 1);
  return (t == DType::BF16 ? bf16_to_float(next) : f16_to_float(next)) - a;
}

}  // namespace

TEST(FisherMerge, ScalesFollowFusionBenchNormalization) {
  // c_i = lambda_i (1 / (n_i + eps)) / sum_j 1 / (n_j + eps); lambda defaults to 1/M.
  const std::vector<double> norms = {2.0, 0.5, 0.0};
  const double eps = 1e-6;
  const double inv[3] = {1 / (2.0 + eps), 1 / (0.5 + eps), 1 / (0.0 + eps)};
  const double sum = inv[0] + inv[1] + inv[2];
  std::vector<double> c = fisher_model_scales(3, {}, norms, eps);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(c[i], inv[i] / sum / 3, 1e-15) << i;
  const double lambda[3] = {0.2, 0.3, 0.5};
  c = fisher_model_scales(3, {lambda[0], lambda[1], lambda[2]}, norms, eps);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(c[i], lambda[i] * inv[i] / sum, 1e-15) << i;
  c = fisher_model_scales(4, {}, {});
  for (double v : c) EXPECT_EQ(v, 0.25);
  EXPECT_NE(error_message([] { fisher_model_scales(2, {1.0}, {}); }).find("1 scaling coefficients for 2 models"),
            std::string::npos);
  EXPECT_NE(error_message([] { fisher_model_scales(2, {}, {1.0, -1.0}); }).find("model 1's Fisher norm is -1"),
            std::string::npos);
}

TEST(FisherMerge, MatchesTheFormulaWithFloorAndNormalization) {
  const size_t n = 1000, models = 3;
  PortableRng rng(11);
  std::vector<std::vector<float>> theta, fisher;
  for (size_t i = 0; i < models; ++i) {
    theta.push_back(random_floats(n, rng, -2, 2));
    fisher.push_back(random_floats(n, rng, 0, 1e-3 * (i + 1)));
  }
  // Elements 0..9: every Fisher is zero, so only the floor weighs (theta* = sum c_i theta_i / sum c_i);
  // elements 10..19: only model 2 has a nonzero Fisher, far above the floor.
  for (size_t e = 0; e < 20; ++e)
    for (size_t i = 0; i < models; ++i) fisher[i][e] = e >= 10 && i == 2 ? 1.0f : 0.0f;
  const double eps = kFisherMinimalWeight;
  std::vector<double> norms(models);
  for (size_t i = 0; i < models; ++i) {
    double s = 0;
    for (float f : fisher[i]) s += static_cast<double>(f) * f;
    norms[i] = std::sqrt(s);
  }
  const std::vector<double> c = fisher_model_scales(models, {}, norms, eps);
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    std::vector<std::vector<uint8_t>> bytes;
    std::vector<TensorView> views;
    std::vector<const float*> f;
    for (size_t i = 0; i < models; ++i) bytes.push_back(as_bytes(theta[i], t));
    for (size_t i = 0; i < models; ++i) {
      views.push_back({t, bytes[i].data()});
      f.push_back(fisher[i].data());
    }
    std::vector<uint8_t> out(n * dtype_size(t));
    merge_fisher(views, f, c, eps, n, t, out.data());
    const std::vector<float> got = as_floats(out, t);
    std::vector<std::vector<float>> x;  // the models' values as the kernel sees them
    for (size_t i = 0; i < models; ++i) x.push_back(as_floats(bytes[i], t));
    for (size_t e = 0; e < n; ++e) {
      long double num = 0, den = 0;
      for (size_t i = 0; i < models; ++i) {
        const long double w = static_cast<long double>(c[i]) * (static_cast<long double>(fisher[i][e]) + eps);
        num += w * x[i][e];
        den += w;
      }
      const float ref = static_cast<float>(static_cast<double>(num / den));
      // F32 accumulates in double: the float rounding of the exact value, give or take one ulp at a
      // tie; BF16/F16 accumulate in float: a few float roundings, then one 16-bit rounding.
      ASSERT_LE(std::fabs(got[e] - ref), ulp(ref, t))
          << dtype_name(t) << " element " << e << ": got " << got[e] << ", expected " << ref;
    }
  }
}

TEST(FisherMerge, PiecesGiveTheSameBitsAsTheWhole) {
  const size_t n = 20000, models = 2;  // more than one 8192-element chunk
  PortableRng rng(5);
  std::vector<std::vector<float>> theta, fisher;
  for (size_t i = 0; i < models; ++i) {
    theta.push_back(random_floats(n, rng, -1, 1));
    fisher.push_back(random_floats(n, rng, 0, 1));
  }
  const std::vector<double> c = fisher_model_scales(models, {0.7, 0.3}, {3.0, 1.0});
  for (DType t : {DType::F32, DType::BF16}) {
    std::vector<std::vector<uint8_t>> bytes;
    for (size_t i = 0; i < models; ++i) bytes.push_back(as_bytes(theta[i], t));
    const size_t es = dtype_size(t);
    auto merge_piece = [&](size_t first, size_t count, uint8_t* out) {
      std::vector<TensorView> views;
      std::vector<const float*> f;
      for (size_t i = 0; i < models; ++i) {
        views.push_back({t, bytes[i].data() + first * es});
        f.push_back(fisher[i].data() + first);
      }
      merge_fisher(views, f, c, kFisherMinimalWeight, count, t, out + first * es);
    };
    std::vector<uint8_t> whole(n * es), pieces(n * es);
    merge_piece(0, n, whole.data());
    merge_piece(0, 8191 + 13, pieces.data());
    merge_piece(8191 + 13, n - 8191 - 13, pieces.data());
    EXPECT_EQ(whole, pieces) << dtype_name(t);
  }
}

TEST(Aim, ChannelImportanceIsTheMeanOverItsLargest) {
  const std::vector<double> imp = aim_channel_importance({2, 8, 4, 0}, 4);  // means 0.5, 2, 1, 0
  EXPECT_EQ(imp, (std::vector<double>{0.25, 1, 0.5, 0}));
  EXPECT_EQ(aim_channel_importance({2, 8}, 0), (std::vector<double>{0, 0}));
  EXPECT_EQ(aim_channel_importance({0, 0, 0}, 10), (std::vector<double>{0, 0, 0}));
  EXPECT_NE(error_message([] { aim_channel_importance({1, NAN}, 3); }).find("input channel 1 is nan"), std::string::npos);
}

TEST(Aim, RelaxesEachInputChannelsDeltaByItsImportance) {
  const uint64_t rows = 5, in = 7;
  PortableRng rng(3);
  const std::vector<float> base = random_floats(rows * in, rng, -1, 1);
  const std::vector<float> merged = random_floats(rows * in, rng, -1, 1);
  std::vector<double> abs_sum(in);
  for (double& v : abs_sum) v = rng.uniform() * 100;
  const std::vector<double> imp = aim_channel_importance(abs_sum, 50);
  for (double omega : {0.0, 0.4, 1.0}) {
    std::vector<float> out = merged;
    apply_aim({DType::F32, base.data()}, DType::F32, out.data(), imp, omega, in, 0, rows * in);
    for (uint64_t e = 0; e < rows * in; ++e) {
      const uint64_t j = e % in;
      const double mean_j = abs_sum[j] / 50;
      double largest = 0;
      for (double s : abs_sum) largest = std::max(largest, s / 50);
      const double factor = 1 - (mean_j / largest) * (1 - omega);
      const double ref = base[e] + (static_cast<double>(merged[e]) - base[e]) * factor;
      ASSERT_LE(std::fabs(out[e] - ref), ulp(static_cast<float>(ref), DType::F32)) << "omega " << omega << ", element " << e;
      if (omega == 1) {
        ASSERT_EQ(out[e], merged[e]) << "omega 1 leaves the merge as it was";
      }
      if (omega == 0 && mean_j == largest) {
        ASSERT_EQ(out[e], base[e]) << "the top channel keeps the base at omega 0";
      }
    }
  }
  // BF16: float arithmetic, one rounding to BF16 at the end.
  const std::vector<uint8_t> base16 = as_bytes(base, DType::BF16);
  std::vector<uint8_t> out16 = as_bytes(merged, DType::BF16);
  const std::vector<float> b = as_floats(base16, DType::BF16), m = as_floats(out16, DType::BF16);
  apply_aim({DType::BF16, base16.data()}, DType::BF16, out16.data(), imp, 0.4, in, 0, rows * in);
  const std::vector<float> got = as_floats(out16, DType::BF16);
  for (uint64_t e = 0; e < rows * in; ++e) {
    const double ref = b[e] + (static_cast<double>(m[e]) - b[e]) * (1 - imp[e % in] * 0.6);
    EXPECT_LE(std::fabs(got[e] - ref), ulp(static_cast<float>(ref), DType::BF16)) << e;
  }
  std::vector<float> out = merged;
  EXPECT_NE(error_message([&] { apply_aim({DType::F32, base.data()}, DType::F32, out.data(), imp, 1.2, in, 0, 1); })
                .find("omega = 1.2"),
            std::string::npos);
  EXPECT_NE(error_message([&] { apply_aim({DType::F32, base.data()}, DType::F32, out.data(), imp, 0.5, in + 1, 0, 1); })
                .find("7 channel importances for rows of 8 elements"),
            std::string::npos);
}

TEST(Aim, PiecesStartingMidRowGiveTheSameBitsAsTheWhole) {
  const uint64_t rows = 3000, in = 7;  // 21000 elements: three chunks
  PortableRng rng(9);
  const std::vector<float> base = random_floats(rows * in, rng, -1, 1);
  const std::vector<float> merged = random_floats(rows * in, rng, -1, 1);
  std::vector<double> abs_sum(in);
  for (double& v : abs_sum) v = rng.uniform();
  const std::vector<double> imp = aim_channel_importance(abs_sum, 1);
  for (DType t : {DType::F32, DType::BF16}) {
    const size_t es = dtype_size(t);
    const std::vector<uint8_t> b = as_bytes(base, t);
    std::vector<uint8_t> whole = as_bytes(merged, t), pieces = whole;
    apply_aim({t, b.data()}, t, whole.data(), imp, 0.3, in, 0, rows * in);
    for (auto [first, last] : {std::pair<uint64_t, uint64_t>{0, 5}, {5, 8200}, {8200, 8203}, {8203, rows * in}})
      apply_aim({t, b.data() + first * es}, t, pieces.data() + first * es, imp, 0.3, in, first, last - first);
    EXPECT_EQ(whole, pieces) << dtype_name(t);
  }
}
