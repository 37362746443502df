// Merge kernels: identical models return the input bit for bit (every output dtype, special values
// included), weighted sums within rounding of a double reference, task arithmetic / TIES / DARE /
// SLERP by hand with mergekit's semantics, DARE's drop statistics and determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "recall/merge/methods.h"
#include "recall/merge/registry.h"
#include "recall/merge/typical.h"
#include "recall/merge/weights.h"
#include "recall/util/error.h"

using namespace recall;

namespace {

std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else {
      const uint16_t b = t == DType::BF16 ? float_to_bf16(v[i]) : float_to_f16(v[i]);
      std::memcpy(&out[i * 2], &b, 2);
    }
  }
  return out;
}

std::vector<float> decode(const std::vector<uint8_t>& b, DType t) {
  std::vector<float> v(b.size() / dtype_size(t));
  decode_to_float(t, b.data(), v.size(), v.data());
  return v;
}

// The spacing of dtype t above |x| (one ulp).
double ulp_of(float x, DType t) {
  const float a = std::fabs(x);
  if (t == DType::F32) return std::nextafter(a, INFINITY) - a;
  const uint16_t b = t == DType::BF16 ? float_to_bf16(a) : float_to_f16(a);
  const uint16_t next = static_cast<uint16_t>(b + 1);
  return (t == DType::BF16 ? bf16_to_float(next) : f16_to_float(next)) - a;
}

std::vector<float> random_values(size_t n, uint64_t seed, double scale = 1.0) {
  PortableRng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>((rng.uniform() * 2 - 1) * scale);
  return v;
}

}  // namespace

TEST(MergeMethods, IdenticalModelsReturnTheModelBitForBit) {
  for (DType t : {DType::BF16, DType::F16, DType::F32}) {
    std::vector<float> v = random_values(20000, 5, 3.0);
    // Special values: signed zeros, infinities, NaN, subnormals of every format, extremes.
    const std::vector<float> special = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -3e-39f, 6e-8f,
                                        1e-45f, 65504.0f, 3.0e38f, -1.17549435e-38f};
    std::copy(special.begin(), special.end(), v.begin());
    const std::vector<uint8_t> bytes = encode(v, t);
    for (int m : {1, 2, 3, 5}) {
      std::vector<TensorView> models(m, TensorView{t, bytes.data()});
      PortableRng rng(m);
      std::vector<double> s(m);
      for (double& x : s) x = rng.uniform();
      const std::vector<double> w = softmax_weights(s, 0.3);  // sums to 1
      std::vector<uint8_t> out(bytes.size());
      merge_weighted(models, w, false, v.size(), t, out.data());
      EXPECT_EQ(out, bytes) << dtype_name(t) << " with " << m << " models";
      merge_weighted(models, {std::vector<double>(m, 2.5)}, true, v.size(), t, out.data());
      EXPECT_EQ(out, bytes) << dtype_name(t) << " normalized, " << m << " models";
    }
    // Without the same-bits shortcut the arithmetic alone returns every finite nonzero value. The
    // shortcut needs every input in the output dtype, so model 1 holds the same values in a wider
    // dtype (F32 for 16-bit outputs, F64 for F32; exact widenings): no element can take it.
    const DType wide = t == DType::F32 ? DType::F64 : DType::F32;
    const std::vector<float> in = decode(bytes, t);
    std::vector<uint8_t> widened(in.size() * dtype_size(wide));
    for (size_t i = 0; i < in.size(); ++i) {
      if (wide == DType::F64) {
        const double d = in[i];
        std::memcpy(&widened[i * 8], &d, 8);
      } else {
        std::memcpy(&widened[i * 4], &in[i], 4);
      }
    }
    const std::vector<double> w = softmax_weights({0.91, 0.35, 0.62}, 0.3);  // sums to 1
    std::vector<uint8_t> out(bytes.size());
    merge_weighted({{t, bytes.data()}, {wide, widened.data()}, {t, bytes.data()}}, w, false, v.size(), t, out.data());
    const std::vector<float> got = decode(out, t);
    size_t checked = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(in[i]) || in[i] == 0) continue;
      ASSERT_EQ(got[i], in[i]) << dtype_name(t) << " element " << i;
      ++checked;
    }
    EXPECT_GT(checked, v.size() - special.size());
  }
}

TEST(MergeMethods, WeightedSumWithinOneUlpOfDoubleReference) {
  const size_t n = 5000;
  for (DType t : {DType::BF16, DType::F16, DType::F32}) {
    std::vector<std::vector<uint8_t>> bytes;
    std::vector<std::vector<float>> vals;
    for (int m = 0; m < 3; ++m) {
      bytes.push_back(encode(random_values(n, 100 + m), t));
      vals.push_back(decode(bytes.back(), t));
    }
    const std::vector<double> w = {0.5, 0.3, 0.2};
    std::vector<uint8_t> out(n * dtype_size(t));
    merge_weighted({{t, bytes[0].data()}, {t, bytes[1].data()}, {t, bytes[2].data()}}, w, false, n, t, out.data());
    const std::vector<float> got = decode(out, t);
    size_t exact = 0;
    for (size_t i = 0; i < n; ++i) {
      const double ref = w[0] * vals[0][i] + w[1] * vals[1][i] + w[2] * vals[2][i];
      const float rounded = decode(encode({static_cast<float>(ref)}, t), t)[0];
      ASSERT_LE(std::fabs(got[i] - rounded), ulp_of(rounded, t)) << i;
      exact += got[i] == rounded;
    }
    EXPECT_GT(exact, n * 99 / 100) << dtype_name(t);  // double rounding may flip a rare tie
  }
}

// BF16 in and out takes a fused path; it must give the bytes of the general path, which we reach
// by presenting the same values as F32 inputs (decoded exactly; same float arithmetic and order).
TEST(MergeMethods, FusedBf16PathEqualsGeneralPathBitForBit) {
  const size_t n = 10007;  // not a multiple of the block size
  std::vector<std::vector<uint8_t>> bf, f32;
  for (int m = 0; m < 4; ++m) {
    std::vector<float> v = random_values(n, 300 + m, m == 3 ? 1e-3 : 4.0);
    v[m] = -0.0f;
    v[10 + m] = 1e-40f;  // subnormal inputs
    bf.push_back(encode(v, DType::BF16));
    f32.push_back(encode(decode(bf.back(), DType::BF16), DType::F32));
  }
  for (const std::vector<double>& w : {std::vector<double>{0.4, 0.3, 0.2, 0.1}, {1.5, -0.25, 0.0, 2.0},
                                      {0.0, 0.0, 0.0, 1.0}}) {
    for (bool normalize : {false, true}) {
      std::vector<TensorView> a, b;
      for (int m = 0; m < 4; ++m) a.push_back({DType::BF16, bf[m].data()}), b.push_back({DType::F32, f32[m].data()});
      std::vector<uint8_t> fused(n * 2), general(n * 2);
      merge_weighted(a, w, normalize, n, DType::BF16, fused.data());
      merge_weighted(b, w, normalize, n, DType::BF16, general.data());
      // The general path has no same-bits shortcut for F32 inputs; the fused path applies it only
      // where all four inputs agree, which random inputs never do.
      EXPECT_EQ(fused, general) << "weights " << w[0] << "," << w[1] << " normalize " << normalize;
    }
  }
}

// The fused BF16 loop is specialized for 1..8 models (more take the general path). Against a
// scalar reference written out here: float sum 0 + w0*x0 + w1*x1 ... in model order, / wsum when
// normalizing, round to nearest even, and the input's bits where every model has the same bits
// (when the weights are normalized or sum to 1). Lengths that are not a multiple of any vector
// width, unaligned starts, and a quarter of the positions identical across models (some -0, some
// NaN with a payload, where the shortcut changes the bytes).
TEST(MergeMethods, FusedBf16LoopEqualsScalarReferenceForEveryModelCount) {
  const size_t n = 1037;
  for (size_t models : {1, 2, 3, 4, 5, 6, 7, 8, 9}) {
    std::mt19937 rng(static_cast<unsigned>(models));
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<std::vector<uint16_t>> in(models, std::vector<uint16_t>(n + 1));
    for (size_t j = 0; j <= n; ++j) {
      const bool same = j % 4 == 1;
      // Where the shortcut shows: -0 (0 + w * -0 is +0) and a NaN payload (arithmetic quiets it).
      const uint16_t shared = j % 12 == 1 ? 0x8000 : j % 12 == 5 ? 0x7f81 : float_to_bf16(normal(rng));
      for (size_t m = 0; m < models; ++m) in[m][j] = same ? shared : float_to_bf16(normal(rng));
    }
    for (bool normalize : {false, true}) {
      std::vector<double> w(models);
      for (size_t m = 0; m < models; ++m) w[m] = normalize ? 0.5 + m : 1.0 / static_cast<double>(models);
      float wsum = 0;
      for (double x : w) wsum += static_cast<float>(x);
      std::vector<TensorView> views;
      for (size_t m = 0; m < models; ++m) views.push_back({DType::BF16, in[m].data() + 1});  // odd byte offset 2
      std::vector<uint16_t> got(n);
      merge_weighted(views, w, normalize, n, DType::BF16, got.data());
      size_t mismatches = 0;
      for (size_t j = 0; j < n; ++j) {
        float acc = 0.0f;
        bool same = true;
        for (size_t m = 0; m < models; ++m) {
          acc += static_cast<float>(w[m]) * bf16_to_float(in[m][j + 1]);
          same = same && in[m][j + 1] == in[0][j + 1];
        }
        if (normalize) acc /= wsum;
        const uint16_t want = same ? in[0][j + 1] : float_to_bf16(acc);
        mismatches += got[j] != want;
      }
      EXPECT_EQ(mismatches, 0u) << models << " models, normalize " << normalize;
    }
  }
}

TEST(MergeMethods, LinearNormalizeAndErrors) {
  const std::vector<float> a = {1, 2, 4}, b = {3, 6, 8};
  std::vector<float> out(3);
  merge_weighted({{DType::F32, a.data()}, {DType::F32, b.data()}}, {1.0, 3.0}, true, 3, DType::F32, out.data());
  EXPECT_EQ(out, (std::vector<float>{2.5f, 5.0f, 7.0f}));
  merge_weighted({{DType::F32, a.data()}, {DType::F32, b.data()}}, {1.0, 3.0}, false, 3, DType::F32, out.data());
  EXPECT_EQ(out, (std::vector<float>{10, 20, 28}));
  EXPECT_THROW(merge_weighted({{DType::F32, a.data()}}, {1.0, 1.0}, false, 3, DType::F32, out.data()), Error);
  EXPECT_THROW(merge_weighted({{DType::F32, a.data()}}, {1.0}, false, 3, DType::I32, out.data()), Error);
  EXPECT_THROW(merge_weighted({{DType::I32, a.data()}}, {1.0}, false, 3, DType::F32, out.data()), Error);
  EXPECT_THROW(merge_weighted({{DType::F32, a.data()}, {DType::F32, b.data()}}, {1.0, -1.0}, true, 3, DType::F32,
                              out.data()),
               Error);
  EXPECT_EQ(merge_method("dare_ties").name, "dare_ties");
  EXPECT_THROW(merge_method("frobnicate"), Error);
}

namespace {

// The options the registry's task-vector methods set (recall/merge/registry.cpp), by hand.
TaskVectorOptions task_vector_options(const std::string& method) {
  TaskVectorOptions o;
  if (method == "ties" || method == "dare_ties") o.consensus = true;
  if (method == "ties") o.sparsification = Sparsification::Magnitude, o.normalize = true;
  if (method == "dare_linear" || method == "dare_ties") o.sparsification = Sparsification::Random, o.rescale = true;
  return o;
}

}  // namespace

TEST(MergeMethods, TaskArithmeticByHand) {
  const std::vector<float> base = {1, 1, 1, 1}, m1 = {2, 0, 1, 3}, m2 = {1, 3, 0, 1};
  TaskVectorOptions o = task_vector_options("task_arithmetic");
  o.weights = {0.5, 1.0};
  o.densities = {1, 1};
  o.lambda = 2.0;
  std::vector<float> out(4);
  merge_task_vectors({DType::F32, base.data()}, {{DType::F32, m1.data()}, {DType::F32, m2.data()}}, 4, o, DType::F32,
                     out.data());
  // deltas (1,-1,0,2) and (0,2,-1,0): base + 2 * (0.5 d1 + d2).
  EXPECT_EQ(out, (std::vector<float>{2, 4, -1, 3}));
  o.normalize = true;  // divided by the weight sum 1.5
  merge_task_vectors({DType::F32, base.data()}, {{DType::F32, m1.data()}, {DType::F32, m2.data()}}, 4, o, DType::F32,
                     out.data());
  EXPECT_FLOAT_EQ(out[1], 1 + 2 * 1.5f / 1.5f);
  EXPECT_FLOAT_EQ(out[3], 1 + 2 * 1.0f / 1.5f);
  // Identical models equal to the base return the base bit for bit, in every method.
  const std::vector<uint8_t> bb = encode(random_values(999, 3), DType::BF16);
  for (const char* m : {"task_arithmetic", "ties", "dare_linear", "dare_ties"}) {
    TaskVectorOptions d = task_vector_options(m);
    d.weights = {0.4, 0.6};
    d.densities = {0.5, 0.5};
    std::vector<uint8_t> o2(bb.size());
    merge_task_vectors({DType::BF16, bb.data()}, {{DType::BF16, bb.data()}, {DType::BF16, bb.data()}}, 999, d,
                       DType::BF16, o2.data());
    EXPECT_EQ(o2, bb) << m;
  }
}

TEST(MergeMethods, TiesByHand) {
  // Two task vectors over 5 elements, density 0.6 -> k = 3 kept per model.
  const std::vector<float> base = {0, 0, 0, 0, 0};
  const std::vector<float> m1 = {3, -2, 1, 0.5, -4};   // keeps |.| 4, 3, 2 -> elements 4, 0, 1
  const std::vector<float> m2 = {-1, -5, 2, 2, 0.1f};  // keeps 5, 2, 2 -> elements 1, 2, 3 (tie: lowest)
  TaskVectorOptions o = task_vector_options("ties");
  o.weights = {1.0, 0.5};
  o.densities = {0.6, 0.6};
  std::vector<float> out(5);
  merge_task_vectors({DType::F32, base.data()}, {{DType::F32, m1.data()}, {DType::F32, m2.data()}}, 5, o, DType::F32,
                     out.data());
  // Weighted trimmed deltas: d1 = (3,-2,0,0,-4), d2 = (0,-2.5,1,1,0).
  // Element 0: sum 3 -> +; only d1 agrees: 3 / 1 = 3.
  // Element 1: sum -4.5 -> -; both: (-2 - 2.5) / 1.5 = -3.
  // Element 2: +; d2 only: 1 / 0.5 = 2.  Element 3: same, 2.  Element 4: -4 / 1 = -4.
  EXPECT_EQ(out, (std::vector<float>{3, -3, 2, 2, -4}));
  // Sign election ties (sum 0) elect +; no agreeing model -> divisor 1 and delta 0.
  const std::vector<float> p = {1, 0}, q = {-1, 0};
  TaskVectorOptions t = task_vector_options("ties");
  t.weights = {1, 1};
  t.densities = {1, 1};
  std::vector<float> o2(2);
  merge_task_vectors({DType::F32, base.data()}, {{DType::F32, p.data()}, {DType::F32, q.data()}}, 2, t, DType::F32,
                     o2.data());
  EXPECT_EQ(o2, (std::vector<float>{1, 0}));
  // lambda scales after normalization.
  t.lambda = 3;
  merge_task_vectors({DType::F32, base.data()}, {{DType::F32, p.data()}, {DType::F32, q.data()}}, 2, t, DType::F32,
                     o2.data());
  EXPECT_EQ(o2, (std::vector<float>{3, 0}));
}

TEST(MergeMethods, MagnitudeMask) {
  const std::vector<float> v = {1, -3, 3, 0.5f, -3, 2};
  EXPECT_EQ(magnitude_mask(v, 0.5), (std::vector<char>{0, 1, 1, 0, 1, 0}));
  EXPECT_EQ(magnitude_mask(v, 0.34), (std::vector<char>{0, 1, 1, 0, 0, 0}));  // int(2.04) = 2, tie: lowest
  EXPECT_EQ(magnitude_mask(v, 0.01), (std::vector<char>{0, 1, 0, 0, 0, 0}));  // at least one
  EXPECT_EQ(magnitude_mask(v, 0.0), (std::vector<char>(6, 0)));
  EXPECT_EQ(magnitude_mask(v, 1.0), (std::vector<char>(6, 1)));
}

TEST(MergeMethods, DareStatisticsAndDeterminism) {
  const size_t n = 200000;
  const std::vector<float> base(n, 0.0f);
  const std::vector<float> m1 = random_values(n, 77);
  double l1 = 0;
  for (float x : m1) l1 += std::fabs(x);
  for (double density : {0.1, 0.5, 0.9}) {
    TaskVectorOptions o = task_vector_options("dare_linear");
    o.weights = {1.0};
    o.densities = {density};
    o.seed = dare_tensor_seed(1234, "model.layers.0.mlp.up_proj.weight");
    std::vector<float> out(n), again(n);
    merge_task_vectors({DType::F32, base.data()}, {{DType::F32, m1.data()}}, n, o, DType::F32, out.data());
    merge_task_vectors({DType::F32, base.data()}, {{DType::F32, m1.data()}}, n, o, DType::F32, again.data());
    EXPECT_EQ(out, again);
    size_t kept = 0;
    double scale = 0, out_l1 = 0;
    const uint64_t stream = dare_stream(o.seed, 0);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(out[i] != 0, dare_keep(stream, i, density)) << i;
      if (out[i] != 0) {
        ++kept;
        scale = out[i] / m1[i];
      }
      out_l1 += std::fabs(out[i]);
    }
    const double frac = static_cast<double>(kept) / n, sd = std::sqrt(density * (1 - density) / n);
    EXPECT_NEAR(frac, density, 5 * sd) << "density " << density;
    EXPECT_NEAR(out_l1, l1, 1e-6 * l1);          // L1 rescale (mergekit's `rescale`)
    EXPECT_NEAR(scale, 1 / density, 0.02 / density);  // ~ 1/density in expectation
  }
  // Streams of different tensors, models and seeds differ.
  const uint64_t a = dare_tensor_seed(1, "x"), b = dare_tensor_seed(1, "y"), c = dare_tensor_seed(2, "x");
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(dare_stream(a, 0), dare_stream(a, 1));
}

TEST(MergeMethods, SlerpByHand) {
  const std::vector<float> v0 = {1, 0}, v1 = {0, 1};
  std::vector<float> out(2);
  merge_slerp({DType::F32, v0.data()}, {DType::F32, v1.data()}, 0.5, 2, DType::F32, out.data());
  EXPECT_NEAR(out[0], std::sqrt(0.5), 1e-7);
  EXPECT_NEAR(out[1], std::sqrt(0.5), 1e-7);
  merge_slerp({DType::F32, v0.data()}, {DType::F32, v1.data()}, 0.0, 2, DType::F32, out.data());
  EXPECT_EQ(out, v0);
  merge_slerp({DType::F32, v0.data()}, {DType::F32, v1.data()}, 1.0, 2, DType::F32, out.data());
  EXPECT_NEAR(out[0], 0, 1e-16);
  EXPECT_EQ(out[1], 1);
  // Nearly colinear (|dot| > 0.9995): linear interpolation of the raw vectors.
  const std::vector<float> a = {2, 0.001f}, b = {4, 0};
  merge_slerp({DType::F32, a.data()}, {DType::F32, b.data()}, 0.25, 2, DType::F32, out.data());
  EXPECT_FLOAT_EQ(out[0], 2.5f);
  EXPECT_FLOAT_EQ(out[1], 0.00075f);
  // Different norms: the angle is between directions, the coefficients apply to raw vectors.
  const std::vector<float> c = {3, 0}, d = {0, 1};
  merge_slerp({DType::F32, c.data()}, {DType::F32, d.data()}, 0.5, 2, DType::F32, out.data());
  EXPECT_NEAR(out[0], 3 * std::sqrt(0.5), 1e-6);
  EXPECT_NEAR(out[1], std::sqrt(0.5), 1e-6);
  // Identical bf16 tensors come back bit for bit.
  const std::vector<uint8_t> bb = encode(random_values(4096, 8), DType::BF16);
  std::vector<uint8_t> o(bb.size());
  merge_slerp({DType::BF16, bb.data()}, {DType::BF16, bb.data()}, 0.3, 4096, DType::BF16, o.data());
  EXPECT_EQ(o, bb);
}

TEST(MergeMethods, OutputRoundingMatchesTheDtypeEncoders) {
  // One F32 model with weight 1 (not normalized, so no same-bits shortcut: the dtypes differ):
  // the output is the encoder's rounding of every value, random bit patterns (NaN, inf,
  // subnormals) included.
  std::mt19937_64 bits(99);
  std::vector<float> v(1 << 16);
  for (float& x : v) {
    const uint32_t u = static_cast<uint32_t>(bits());
    std::memcpy(&x, &u, 4);
  }
  for (DType t : {DType::BF16, DType::F16}) {
    std::vector<uint16_t> out(v.size());
    merge_weighted({{DType::F32, v.data()}}, {1.0}, false, v.size(), t, out.data());
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t expect = t == DType::BF16 ? float_to_bf16(v[i]) : float_to_f16(v[i]);
      if (std::isnan(v[i])) {
        const float got = t == DType::BF16 ? bf16_to_float(out[i]) : f16_to_float(out[i]);
        ASSERT_TRUE(std::isnan(got)) << i;
      } else {
        ASSERT_EQ(out[i], expect) << dtype_name(t) << " element " << i << " value " << v[i];
      }
    }
  }
}
