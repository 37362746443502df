// RegMean and its LAPACK layer: the solution against a long-double Gaussian elimination written
// here (several models, alpha 0 / 0.5 / 0.9 / 1, ridge 0 and > 0, Gram scales), outputs rounded
// like the reference, the identity-Gram property, bits independent of the Gram block size and of
// a split of the output rows, a rank-deficient sum failing with its leading minor, rcond of
// matrices whose condition number is known.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "testing_errors.h"
#include "recall/merge/linalg.h"
#include "recall/merge/regmean.h"
#include "recall/util/dtype.h"
#include "recall/util/error.h"
#include "recall/util/rng.h"

using namespace recall;

namespace {

using Matrix = std::vector<double>;  // row-major

// X^T X for X with `tokens` random rows of `in` values (columns in `dead` are zero).
Matrix random_gram(uint64_t in, uint64_t tokens, PortableRng& rng, const std::vector<uint64_t>& dead = {}) {
  Matrix x(tokens * in);
  for (uint64_t t = 0; t < tokens; ++t)
    for (uint64_t j = 0; j < in; ++j)
      x[t * in + j] = std::find(dead.begin(), dead.end(), j) != dead.end() ? 0.0 : rng.uniform() * 2 - 1 + (j % 3) * 0.3;
  Matrix g(in * in, 0.0);
  for (uint64_t i = 0; i < in; ++i)
    for (uint64_t j = 0; j < in; ++j) {
      double s = 0;
      for (uint64_t t = 0; t < tokens; ++t) s += x[t * in + i] * x[t * in + j];
      g[i * in + j] = s;
    }
  return g;
}

struct Problem {
  uint64_t out = 0, in = 0;
  std::vector<Matrix> grams;
  std::vector<std::vector<float>> weights;  // [out, in] per model, F32
  std::vector<double> scales;
};

Problem random_problem(size_t models, uint64_t out, uint64_t in, uint64_t seed, bool with_scales) {
  PortableRng rng(seed);
  Problem p;
  p.out = out;
  p.in = in;
  for (size_t m = 0; m < models; ++m) {
    const uint64_t tokens = in + 3 + m;
    p.grams.push_back(random_gram(in, tokens, rng));
    std::vector<float> w(out * in);
    for (float& v : w) v = static_cast<float>(rng.uniform() * 2 - 1);
    p.weights.push_back(w);
    if (with_scales) p.scales.push_back(1.0 / static_cast<double>(tokens));
  }
  return p;
}

// Two models, 2 output rows of 0.5, whose Gram matrices of `tokens` random rows share a dead input
// channel `dead` (its row and column of A are zero).
Problem dead_channel_problem(uint64_t in, uint64_t tokens, uint64_t dead, uint64_t seed) {
  PortableRng rng(seed);
  Problem p;
  p.out = 2;
  p.in = in;
  for (int m = 0; m < 2; ++m) {
    p.grams.push_back(random_gram(p.in, tokens, rng, {dead}));
    p.weights.push_back(std::vector<float>(p.out * p.in, 0.5f));
  }
  return p;
}

RegMeanInputs inputs_of(const Problem& p, double alpha, double ridge, uint64_t block_rows = 0) {
  RegMeanInputs in;
  for (const auto& w : p.weights) in.weights.push_back(TensorView{DType::F32, w.data()});
  in.gram_rows = [&p](size_t m, uint64_t r0, uint64_t n, double* dst) {
    std::memcpy(dst, p.grams[m].data() + r0 * p.in, n * p.in * sizeof(double));
  };
  in.gram_scale = p.scales;
  in.out = p.out;
  in.in = p.in;
  in.alpha = alpha;
  in.ridge = ridge;
  in.block_rows = block_rows;
  return in;
}

// W* [out, in] by the formulas of regmean.h in long double: A and B built elementwise, then
// Gaussian elimination with partial pivoting on [A | B].
std::vector<long double> reference(const Problem& p, double alpha, double ridge) {
  const uint64_t n = p.in, r = p.out;
  std::vector<long double> a(n * n, 0.0L), b(n * r, 0.0L);  // b: [in, out]
  for (size_t m = 0; m < p.grams.size(); ++m) {
    const long double s = p.scales.empty() ? 1.0L : static_cast<long double>(p.scales[m]);
    for (uint64_t i = 0; i < n; ++i)
      for (uint64_t j = 0; j < n; ++j) {
        const long double g = s * p.grams[m][i * n + j] * (i == j ? 1.0L : static_cast<long double>(alpha));
        a[i * n + j] += g;
        for (uint64_t o = 0; o < r; ++o) b[i * r + o] += g * p.weights[m][o * n + j];
      }
  }
  long double diag = 0;
  for (uint64_t i = 0; i < n; ++i) diag += a[i * n + i];
  for (uint64_t i = 0; i < n; ++i) a[i * n + i] += static_cast<long double>(ridge) * diag / n;
  for (uint64_t c = 0; c < n; ++c) {
    uint64_t piv = c;
    for (uint64_t i = c + 1; i < n; ++i)
      if (std::fabs(a[i * n + c]) > std::fabs(a[piv * n + c])) piv = i;
    for (uint64_t j = 0; j < n; ++j) std::swap(a[c * n + j], a[piv * n + j]);
    for (uint64_t o = 0; o < r; ++o) std::swap(b[c * r + o], b[piv * r + o]);
    for (uint64_t i = c + 1; i < n; ++i) {
      const long double f = a[i * n + c] / a[c * n + c];
      for (uint64_t j = c; j < n; ++j) a[i * n + j] -= f * a[c * n + j];
      for (uint64_t o = 0; o < r; ++o) b[i * r + o] -= f * b[c * r + o];
    }
  }
  std::vector<long double> w(r * n);  // W* = X^T
  for (uint64_t c = n; c-- > 0;)
    for (uint64_t o = 0; o < r; ++o) {
      long double s = b[c * r + o];
      for (uint64_t j = c + 1; j < n; ++j) s -= a[c * n + j] * w[o * n + j];
      w[o * n + c] = s / a[c * n + c];
    }
  return w;
}

long double max_abs(const std::vector<long double>& v) {
  long double m = 0;
  for (long double x : v) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace

TEST(RegMean, MatchesLongDoubleEliminationForEveryAlphaAndRidge) {
  uint64_t seed = 1;
  for (size_t models : {2, 3, 5})
    for (double alpha : {0.0, 0.5, 0.9, 1.0})
      for (double ridge : {0.0, 0.05}) {
        ++seed;
        const Problem p = random_problem(models, 6, 9, seed, seed % 2 == 0);  // half with Gram scales
        const std::vector<long double> ref = reference(p, alpha, ridge);
        std::vector<double> x(p.out * p.in);
        const RegMeanResult res = regmean_solve(inputs_of(p, alpha, ridge), x.data());
        const long double scale = max_abs(ref);
        for (size_t k = 0; k < x.size(); ++k)
          ASSERT_LE(std::fabs(x[k] - ref[k]), 1e-10L * scale)
              << models << " models, alpha " << alpha << ", ridge " << ridge << ", element " << k;
        EXPECT_GT(res.rcond, 0);
        EXPECT_LE(res.rcond, 1);
        if (ridge == 0) {
          EXPECT_EQ(res.ridge_added, 0);
        } else {
          EXPECT_GT(res.ridge_added, 0);
        }
        // Rounded outputs: the reference rounded the same way (double -> float -> 16 bits).
        for (DType t : {DType::F32, DType::BF16, DType::F16}) {
          std::vector<uint8_t> out(x.size() * dtype_size(t));
          merge_regmean(inputs_of(p, alpha, ridge), t, out.data());
          for (size_t k = 0; k < x.size(); ++k) {
            const float f = static_cast<float>(static_cast<double>(ref[k]));
            if (t == DType::F32) {
              float got;
              std::memcpy(&got, &out[k * 4], 4);
              ASSERT_EQ(got, f) << "element " << k;
            } else {
              uint16_t got;
              std::memcpy(&got, &out[k * 2], 2);
              ASSERT_EQ(got, t == DType::BF16 ? float_to_bf16(f) : float_to_f16(f)) << dtype_name(t) << " element " << k;
            }
          }
        }
      }
}

TEST(RegMean, WidthAboveLapacksBlockSize) {
  // in = 150: dpotrf factors in blocks of 64 (ilaenv) rather than unblocked; Grams read 16 rows at a time.
  const Problem p = random_problem(2, 3, 150, 99, true);
  const std::vector<long double> ref = reference(p, 0.9, 0);
  std::vector<double> x(p.out * p.in);
  regmean_solve(inputs_of(p, 0.9, 0, 16), x.data());
  const long double scale = max_abs(ref);
  for (size_t k = 0; k < x.size(); ++k) ASSERT_LE(std::fabs(x[k] - ref[k]), 1e-10L * scale) << "element " << k;
}

TEST(RegMean, AlphaZeroWithIdentityGramsIsThePlainAverage) {
  const uint64_t out = 4, in = 6;
  for (size_t models : {1, 2, 3, 4}) {
    PortableRng rng(models);
    std::vector<std::vector<float>> w(models, std::vector<float>(out * in));
    for (auto& v : w)
      for (float& x : v) x = static_cast<float>(rng.uniform() * 4 - 2);
    RegMeanInputs inp;
    for (const auto& v : w) inp.weights.push_back(TensorView{DType::F32, v.data()});
    inp.gram_rows = [in](size_t, uint64_t r0, uint64_t n, double* dst) {
      for (uint64_t i = 0; i < n; ++i)
        for (uint64_t j = 0; j < in; ++j) dst[i * in + j] = r0 + i == j ? 1.0 : 0.5;  // off-diagonals vanish at alpha 0
    };
    inp.out = out;
    inp.in = in;
    inp.alpha = 0;
    std::vector<double> x(out * in);
    regmean_solve(inp, x.data());
    for (uint64_t k = 0; k < out * in; ++k) {
      double mean = 0;
      for (size_t m = 0; m < models; ++m) mean += w[m][k];
      mean /= static_cast<double>(models);
      EXPECT_NEAR(x[k], mean, 1e-15 * 4) << models << " models, element " << k;
    }
  }
}

// The same inputs solve to the same bits (what makes a merge rank-invariant: a tensor is solved
// whole by one rank, with the same block size whatever the world size). Other Gram block sizes
// and output-row splits agree to rounding: reference BLAS sums each element in one order and gives
// the same bits, OpenBLAS (Debian's alternative, setup.sh) blocks its products by size, so only
// to ~1e-15 relative.
TEST(RegMean, SameInputsSameBitsAndBlockSizeOrRowSplitOnlyRound) {
  const Problem p = random_problem(3, 7, 11, 42, true);
  std::vector<double> whole(p.out * p.in), again(p.out * p.in);
  regmean_solve(inputs_of(p, 0.9, 0.01, p.in), whole.data());
  regmean_solve(inputs_of(p, 0.9, 0.01, p.in), again.data());
  EXPECT_EQ(0, std::memcmp(again.data(), whole.data(), again.size() * sizeof(double)));
  double scale = 0;
  for (double v : whole) scale = std::max(scale, std::abs(v));
  auto near_whole = [&](const std::vector<double>& x, const std::string& what) {
    for (size_t k = 0; k < x.size(); ++k) EXPECT_NEAR(x[k], whole[k], 1e-12 * scale) << what << ", element " << k;
  };
  for (uint64_t rows : {1, 2, 3, 5, 10}) {
    std::vector<double> x(p.out * p.in);
    regmean_solve(inputs_of(p, 0.9, 0.01, rows), x.data());
    near_whole(x, "block of " + std::to_string(rows) + " rows");
  }
  EXPECT_EQ(regmean_block_rows(p.in, 0), p.in);  // 64 MiB holds all 11 rows
  EXPECT_EQ(regmean_block_rows(8192, 0), 1024u);
  // Output rows [0, split) and [split, 7) merged apart.
  for (uint64_t split : {1, 3, 6}) {
    std::vector<double> x(p.out * p.in);
    for (auto [r0, r1] : {std::pair<uint64_t, uint64_t>{0, split}, {split, p.out}}) {
      RegMeanInputs in = inputs_of(p, 0.9, 0.01, 4);
      for (size_t m = 0; m < in.weights.size(); ++m) in.weights[m].data = p.weights[m].data() + r0 * p.in;
      in.out = r1 - r0;
      regmean_solve(in, x.data() + r0 * p.in);
    }
    near_whole(x, "rows split at " + std::to_string(split));
  }
}

// The bits do not depend on how many threads the BLAS runs (it follows each rank's CPU binding,
// so it changes with the world size): with OpenBLAS, solved on 1 and on 4 threads. A width large
// enough for OpenBLAS to thread its factorization and products. Skipped with reference BLAS,
// which has no threads.
TEST(RegMean, SameBitsWhateverTheBlasThreadCount) {
  if (linalg::blas_library() != "OpenBLAS") GTEST_SKIP() << "not OpenBLAS: reference BLAS runs one thread";
  const int saved = linalg::blas_threads();
  const Problem p = random_problem(3, 300, 400, 9, true);
  std::vector<double> one(p.out * p.in), four(p.out * p.in);
  linalg::set_blas_threads(1);
  regmean_solve(inputs_of(p, 0.9, 0.0, 0), one.data());
  linalg::set_blas_threads(4);
  regmean_solve(inputs_of(p, 0.9, 0.0, 0), four.data());
  linalg::set_blas_threads(saved);
  EXPECT_EQ(0, std::memcmp(one.data(), four.data(), one.size() * sizeof(double)));
}

// Widths and row counts over several tiles and panels (in 520 = 256 + 256 + 8, out 270 = 256 + 14):
// the tiled factorization, the panel products and solves against long-double elimination, and the
// same bits on 1, 2, 3 and 7 threads (the tiles and panels are the same whatever the count).
TEST(RegMean, TiledSolveMatchesLongDoubleAndItsBitsIgnoreTheThreadCount) {
  ASSERT_EQ(linalg::kTile, 256u);
  ASSERT_EQ(linalg::kPanel, 256u);
  const Problem p = random_problem(2, 270, 520, 5, true);
  const std::vector<long double> ref = reference(p, 0.9, 0);
  std::vector<double> one(p.out * p.in);
  RegMeanInputs in = inputs_of(p, 0.9, 0, 0);
  regmean_solve(in, one.data());
  const long double scale = max_abs(ref);
  for (size_t k = 0; k < one.size(); ++k) ASSERT_LE(std::fabs(one[k] - ref[k]), 1e-9L * scale) << "element " << k;
  for (int threads : {2, 3, 7}) {
    std::vector<double> x(p.out * p.in);
    in.threads = threads;
    regmean_solve(in, x.data());
    EXPECT_EQ(0, std::memcmp(one.data(), x.data(), x.size() * sizeof(double))) << threads << " threads";
  }
}

TEST(RegMean, ALeadingMinorThatFailsInALaterTileIsNamed) {
  const Problem p = dead_channel_problem(300, 305, 270, 3);
  std::vector<double> x(p.out * p.in);
  RegMeanInputs in = inputs_of(p, 1.0, 0);
  in.threads = 2;
  const std::string msg = error_message([&] { regmean_solve(in, x.data()); });
  EXPECT_NE(msg.find("leading minor of order 271 "), std::string::npos) << msg;
}

TEST(RegMean, RankDeficientSumFailsWithItsLeadingMinorAndARidgeSolvesIt) {
  // Input channel 3 is dead in every model: row and column 3 of A are zero.
  const Problem p = dead_channel_problem(6, 20, 3, 7);
  std::vector<double> x(p.out * p.in);
  const std::string msg = error_message([&] { regmean_solve(inputs_of(p, 0.9, 0), x.data()); });
  EXPECT_NE(msg.find("RegMean (sum of 2 models' Gram matrices, 6 inputs)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("leading minor of order 4 is not positive definite"), std::string::npos) << msg;
  EXPECT_NE(msg.find("with 0 added to the diagonal"), std::string::npos) << msg;
  EXPECT_NE(msg.find("HINT"), std::string::npos) << msg;
  const RegMeanResult res = regmean_solve(inputs_of(p, 0.9, 1e-3), x.data());
  EXPECT_GT(res.ridge_added, 0);
  const std::vector<long double> ref = reference(p, 0.9, 1e-3);
  for (size_t k = 0; k < x.size(); ++k) EXPECT_NEAR(x[k], static_cast<double>(ref[k]), 1e-9) << k;
}

TEST(RegMean, RejectsBadOptionsAndNonFiniteGrams) {
  Problem p = random_problem(2, 2, 3, 3, false);
  std::vector<double> x(p.out * p.in);
  EXPECT_NE(error_message([&] { regmean_solve(inputs_of(p, 1.5, 0), x.data()); }).find("alpha = 1.5"), std::string::npos);
  EXPECT_NE(error_message([&] { regmean_solve(inputs_of(p, 0.5, -1), x.data()); }).find("ridge = -1"), std::string::npos);
  p.grams[1][1 * p.in + 2] = NAN;
  const std::string msg = error_message([&] { regmean_solve(inputs_of(p, 0.5, 0), x.data()); });
  EXPECT_NE(msg.find("model 1's Gram matrix has nan at [1, 2]"), std::string::npos) << msg;
  EXPECT_GE(regmean_work_bytes(8192, 28672, 3), uint64_t{8} * (28672ull * 28672 + 2ull * 8192 * 28672));
}

TEST(Linalg, ReciprocalConditionOfKnownMatrices) {
  // diag(1, 2, 4, 100): ||A||_1 = 100, ||A^-1||_1 = 1.
  std::vector<double> d = {1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 4, 0, 0, 0, 0, 100};
  EXPECT_DOUBLE_EQ(linalg::symmetric_norm1(d.data(), 4), 100);
  double anorm = linalg::cholesky_factor(d.data(), 4);
  EXPECT_NEAR(linalg::cholesky_rcond(d.data(), 4, anorm), 0.01, 1e-15);
  // [[2, 1], [1, 2]]: ||A||_1 = 3, A^-1 = [[2, -1], [-1, 2]] / 3, ||A^-1||_1 = 1.
  std::vector<double> a = {2, 1, 1, 2};
  anorm = linalg::cholesky_factor(a.data(), 2);
  EXPECT_DOUBLE_EQ(anorm, 3);
  EXPECT_NEAR(linalg::cholesky_rcond(a.data(), 2, anorm), 1.0 / 3, 1e-15);
  std::vector<double> b = {3, 3, 1, -1};  // two right-hand sides: x = (1, 1) and (1, -1)
  linalg::cholesky_solve(a.data(), 2, b.data(), 2);
  EXPECT_NEAR(b[0], 1, 1e-15);
  EXPECT_NEAR(b[1], 1, 1e-15);
  EXPECT_NEAR(b[2], 1, 1e-15);
  EXPECT_NEAR(b[3], -1, 1e-15);
  // The ridge is added before factoring and counted in the norm.
  std::vector<double> z = {0, 0, 0, 0};
  EXPECT_NE(error_message([&] { linalg::cholesky_factor(z.data(), 2); }).find("leading minor of order 1"), std::string::npos);
  z = {0, 0, 0, 0};
  anorm = linalg::cholesky_factor(z.data(), 2, 0.5);
  EXPECT_DOUBLE_EQ(anorm, 0.5);
  EXPECT_NEAR(linalg::cholesky_rcond(z.data(), 2, anorm), 1, 1e-15);
}

TEST(Linalg, SizesBeyondLapacksIntFailClearly) {
  const uint64_t big = uint64_t{1} << 31;
  const std::string msg = error_message([&] { linalg::cholesky_factor(nullptr, big); });
  EXPECT_NE(msg.find("dpotrf n = 2147483648 exceeds LAPACK's 32-bit int"), std::string::npos) << msg;
  EXPECT_NE(error_message([&] { linalg::cholesky_solve(nullptr, 4, nullptr, big); }).find("dpotrs nrhs = 2147483648"),
            std::string::npos);
}
