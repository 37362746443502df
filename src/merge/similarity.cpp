// Block similarity of model representations to the reference: RBF kernel (median heuristic or
// fixed gamma), linear CKA and RBF CKA (see similarity.h).
#include "recall/merge/similarity.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "recall/merge/typical.h"
#include "recall/util/error.h"

namespace recall {

namespace {

void check_matrix(const RepMatrix& m, const char* what, int64_t index) {
  if (m.rows < 1 || m.cols < 1)
    fail("similarity: ", what, " ", index, " has shape [", m.rows, ", ", m.cols, "]; expected at least [1, 1]");
  if (static_cast<uint64_t>(m.values.size()) != static_cast<uint64_t>(m.rows) * static_cast<uint64_t>(m.cols))
    fail("similarity: ", what, " ", index, " has ", m.values.size(), " values; expected ", m.rows, " x ", m.cols);
  for (double v : m.values)
    if (!std::isfinite(v)) fail("similarity: ", what, " ", index, " has a non-finite value (", v, ")");
}

double median_of(std::vector<double> v) {
  const size_t n = v.size();
  const size_t mid = n / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  const double hi = v[mid];
  if (n % 2 == 1) return hi;
  const double lo = *std::max_element(v.begin(), v.begin() + mid);
  return lo + (hi - lo) / 2;  // numpy: mean of the two middle values
}

// Squared distances between all rows, (n x n), via differences (exact zeros on the diagonal).
std::vector<double> squared_distances(const std::vector<const double*>& rows, int64_t h) {
  const size_t n = rows.size();
  std::vector<double> d(n * n, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) d[i * n + j] = d[j * n + i] = squared_distance(rows[i], rows[j], h);
  return d;
}

std::vector<const double*> row_pointers(const RepMatrix& m) {
  std::vector<const double*> r;
  for (int64_t i = 0; i < m.rows; ++i) r.push_back(&m.values[i * m.cols]);
  return r;
}

}  // namespace

double median_squared_distance(const std::vector<RepMatrix>& reps) {
  if (reps.empty()) fail("similarity: no representations given");
  std::vector<const double*> rows;
  for (size_t m = 0; m < reps.size(); ++m) {
    check_matrix(reps[m], "model", static_cast<int64_t>(m));
    if (reps[m].cols != reps[0].cols)
      fail("similarity: model ", m, " has hidden size ", reps[m].cols, "; model 0 has ", reps[0].cols);
    auto r = row_pointers(reps[m]);
    rows.insert(rows.end(), r.begin(), r.end());
  }
  return median_of(squared_distances(rows, reps[0].cols));
}

std::vector<double> gram_linear(const RepMatrix& x) {
  check_matrix(x, "matrix", 0);
  const int64_t n = x.rows, h = x.cols;
  std::vector<double> g(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t d = 0; d < h; ++d) s += x.values[i * h + d] * x.values[j * h + d];
      g[i * n + j] = g[j * n + i] = s;
    }
  return g;
}

std::vector<double> gram_rbf(const RepMatrix& x, double threshold) {
  check_matrix(x, "matrix", 0);
  if (!(threshold > 0) || !std::isfinite(threshold))
    fail("similarity: RBF CKA threshold must be a positive finite number; got ", threshold);
  std::vector<double> d = squared_distances(row_pointers(x), x.cols);
  const double med = median_of(d);
  const double denom = 2 * threshold * threshold * med;
  for (double& v : d) v = v == 0 ? 1.0 : (denom > 0 ? std::exp(-v / denom) : 0.0);
  return d;
}

double cka(const std::vector<double>& gram_x, const std::vector<double>& gram_y, int64_t n, bool debiased) {
  if (n < 1 || gram_x.size() != static_cast<size_t>(n * n) || gram_y.size() != gram_x.size())
    fail("CKA: Gram matrices must both be ", n, " x ", n, "; got ", gram_x.size(), " and ", gram_y.size(), " values");
  if (debiased && n < 4) fail("CKA: the debiased estimator needs at least 4 samples; got ", n);
  // center_gram of Kornblith et al.'s reference code.
  auto center = [&](std::vector<double> g) {
    std::vector<double> means(n, 0.0);
    if (debiased) {
      for (int64_t i = 0; i < n; ++i) g[i * n + i] = 0;
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += g[i * n + j];
        means[j] = s / static_cast<double>(n - 2);
      }
      double total = 0;
      for (double m : means) total += m;
      for (double& m : means) m -= total / (2.0 * static_cast<double>(n - 1));
    } else {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += g[i * n + j];
        means[j] = s / static_cast<double>(n);
      }
      double total = 0;
      for (double m : means) total += m;
      for (double& m : means) m -= total / static_cast<double>(n) / 2.0;
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) g[i * n + j] -= means[i] + means[j];
    if (debiased)
      for (int64_t i = 0; i < n; ++i) g[i * n + i] = 0;
    return g;
  };
  const std::vector<double> cx = center(gram_x), cy = center(gram_y);
  double hsic = 0, nx = 0, ny = 0;
  for (size_t i = 0; i < cx.size(); ++i) {
    hsic += cx[i] * cy[i];
    nx += cx[i] * cx[i];
    ny += cy[i] * cy[i];
  }
  const double denom = std::sqrt(nx) * std::sqrt(ny);
  if (denom == 0) return 0;  // a constant representation carries no information
  return hsic / denom;
}

namespace {

void check_reps(const std::vector<RepMatrix>& reps) {
  if (reps.empty()) fail("similarity: no models given");
  for (size_t m = 0; m < reps.size(); ++m) {
    check_matrix(reps[m], "model", static_cast<int64_t>(m));
    if (reps[m].rows != reps[0].rows || reps[m].cols != reps[0].cols)
      fail("similarity: model ", m, " has representations of shape [", reps[m].rows, ", ", reps[m].cols,
           "]; model 0 has [", reps[0].rows, ", ", reps[0].cols, "]");
  }
}

// The similarity of one pair of models under `opt`, with what every pair of a block shares (the
// RBF bandwidth over all models' rows, or each model's CKA Gram matrix) computed once.
class PairKernel {
 public:
  PairKernel(const std::vector<RepMatrix>& reps, const SimilarityOptions& opt) : reps_(reps), opt_(opt) {
    check_reps(reps);
    if (opt.kind == SimilarityKind::Rbf) {
      if (opt.gamma < 0 || !std::isfinite(opt.gamma)) fail("similarity: gamma must be >= 0 and finite; got ", opt.gamma);
      if (opt.gamma > 0) {
        scale_ = opt.gamma;
        return;
      }
      if (!(opt.bandwidth_factor > 0))
        fail("similarity: the median-heuristic factor must be > 0 (or +inf for uniform); got ", opt.bandwidth_factor);
      const double median = median_squared_distance(reps);
      // factor = +inf is the sigma -> infinity limit: every similarity 1, even when median = 0.
      sigma2_ = std::isinf(opt.bandwidth_factor) ? opt.bandwidth_factor : opt.bandwidth_factor * median;
      scale_ = std::isinf(sigma2_) ? 0.0 : sigma2_ > 0 ? 1.0 / (2.0 * sigma2_) : std::numeric_limits<double>::infinity();
    } else {
      grams_.resize(reps.size());
    }
  }

  double sigma2() const { return sigma2_; }

  double operator()(size_t a, size_t b) {
    const RepMatrix &ra = reps_[a], &rb = reps_[b];
    const int64_t k = ra.rows, h = ra.cols;
    if (opt_.kind == SimilarityKind::Rbf) {  // mean_x exp(-||r_a(x) - r_b(x)||^2 * scale)
      double s = 0;
      for (int64_t x = 0; x < k; ++x) {
        const double d2 = squared_distance(&ra.values[x * h], &rb.values[x * h], h);
        // d2 == 0 is exactly similar even when sigma^2 == 0 (or infinite) would make 0 * inf.
        s += d2 == 0 ? 1.0 : std::exp(-d2 * scale_);
      }
      return s / static_cast<double>(k);
    }
    return cka(gram(a), gram(b), k, opt_.cka_debiased);
  }

 private:
  const std::vector<double>& gram(size_t m) {
    if (grams_[m].empty())
      grams_[m] = opt_.kind == SimilarityKind::LinearCka ? gram_linear(reps_[m]) : gram_rbf(reps_[m], opt_.cka_threshold);
    return grams_[m];
  }
  const std::vector<RepMatrix>& reps_;
  const SimilarityOptions& opt_;
  double scale_ = 0, sigma2_ = 0;
  std::vector<std::vector<double>> grams_;
};

}  // namespace

BlockSimilarity block_similarity(const std::vector<RepMatrix>& reps, int64_t reference,
                                 const SimilarityOptions& opt) {
  if (opt.mode == SimilarityMode::PairwiseMean) return pairwise_mean_similarity(reps, opt);
  if (reps.empty()) fail("similarity: no models given");
  if (reference < 0 || reference >= static_cast<int64_t>(reps.size()))
    fail("similarity: reference model index ", reference, " is out of range [0, ", reps.size(), ")");
  PairKernel pair(reps, opt);
  BlockSimilarity out;
  out.sigma2 = pair.sigma2();
  for (size_t m = 0; m < reps.size(); ++m) out.similarity.push_back(pair(m, static_cast<size_t>(reference)));
  return out;
}

std::vector<double> pairwise_similarity_matrix(const std::vector<RepMatrix>& reps, const SimilarityOptions& opt,
                                               double* sigma2) {
  PairKernel pair(reps, opt);
  const size_t M = reps.size();
  std::vector<double> s(M * M);
  for (size_t i = 0; i < M; ++i) {
    s[i * M + i] = pair(i, i);
    for (size_t j = i + 1; j < M; ++j) s[i * M + j] = s[j * M + i] = pair(i, j);
  }
  if (sigma2) *sigma2 = pair.sigma2();
  return s;
}

BlockSimilarity pairwise_mean_similarity(const std::vector<RepMatrix>& reps, const SimilarityOptions& opt) {
  BlockSimilarity out;
  const std::vector<double> s = pairwise_similarity_matrix(reps, opt, &out.sigma2);
  const size_t M = reps.size();
  for (size_t i = 0; i < M; ++i) {
    if (M == 1) {
      out.similarity.push_back(s[0]);  // no other model: the self-similarity (1 for rbf)
      continue;
    }
    double sum = 0;
    for (size_t j = 0; j < M; ++j)
      if (j != i) sum += s[i * M + j];
    out.similarity.push_back(sum / static_cast<double>(M - 1));
  }
  return out;
}

}  // namespace recall
