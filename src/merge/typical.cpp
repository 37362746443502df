// Typical samples: k-means++ seeding, Lloyd iterations and nearest real samples (see typical.h).
#include "recall/merge/typical.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "recall/util/error.h"

namespace recall {

namespace {

// Squared distance with every term in double: float inputs are widened exactly, so a float matrix
// clusters exactly as the same values widened to double would (and holds half the bytes).
template <typename A, typename B>
double sqdist(const A* a, const B* b, int64_t h) {
  double s = 0;
  for (int64_t j = 0; j < h; ++j) {
    const double d = static_cast<double>(a[j]) - static_cast<double>(b[j]);
    s += d * d;
  }
  return s;
}

}  // namespace

double squared_distance(const double* a, const double* b, int64_t h) { return sqdist(a, b, h); }

namespace {

void check_shape(int64_t n, int64_t h, int64_t k) {
  if (n < 1 || h < 1) fail("k-means: need at least one sample of at least one dimension; got N=", n, ", H=", h);
  if (k < 1) fail("k-means: the number of clusters must be at least 1; got ", k);
  if (k > n)
    fail("k-means: cannot choose ", k, " typical samples from ", n,
         " samples (clusters K must not exceed the number of samples N)");
}

template <typename T>
void check_values(const T* x, int64_t n, int64_t h) {
  for (int64_t i = 0; i < n * h; ++i)
    if (!std::isfinite(x[i]))
      fail("k-means: embedding of sample ", i / h, " has a non-finite value (", x[i], ") at dimension ", i % h);
}

void check_size(const std::vector<double>& x, int64_t n, int64_t h) {
  if (n >= 1 && h >= 1 && static_cast<uint64_t>(x.size()) != static_cast<uint64_t>(n) * static_cast<uint64_t>(h))
    fail("k-means: embedding matrix has ", x.size(), " values; expected N x H = ", n, " x ", h, " = ", n * h);
}

// Nearest centroid of row i; ties to the lowest cluster index. `ct` holds the centroids
// transposed ([h][k]) so that four consecutive centroids' coordinates d are adjacent.
template <typename T>
int64_t nearest(const T* row, const std::vector<double>& c, const std::vector<double>& ct, int64_t k, int64_t h,
                double* dist) {
  int64_t best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  auto consider = [&](int64_t j, double d) {
    if (d < best_d) {
      best_d = d;
      best = j;
    }
  };
  // Four centroids at a time: four independent sums, each still in dimension order (the same
  // value as sqdist), which the compiler keeps in vector registers: 1.4-1.7x less CPU here
  // (build/bin/bench_kmeans 50000 128 32: 14-17 s -> 10-11 s, the same 68 iterations).
  int64_t j = 0;
  for (; j + 4 <= k; j += 4) {
    double s[4] = {0, 0, 0, 0};
    for (int64_t d = 0; d < h; ++d) {
      const double x = static_cast<double>(row[d]);
      const double* cd = &ct[d * k + j];
      for (int q = 0; q < 4; ++q) {
        const double e = x - cd[q];
        s[q] += e * e;
      }
    }
    for (int q = 0; q < 4; ++q) consider(j + q, s[q]);
  }
  for (; j < k; ++j) consider(j, sqdist(row, &c[j * h], h));
  if (dist) *dist = best_d;
  return best;
}

template <typename T>
std::vector<int64_t> seeds_of(const T* x, int64_t n, int64_t h, int64_t k, PortableRng& rng) {
  std::vector<int64_t> seeds;
  std::vector<char> chosen(n, 0);
  int64_t first = static_cast<int64_t>(rng.uniform() * static_cast<double>(n));
  if (first >= n) first = n - 1;
  seeds.push_back(first);
  chosen[first] = 1;
  std::vector<double> d2(n);
  for (int64_t i = 0; i < n; ++i) d2[i] = sqdist(&x[i * h], &x[first * h], h);
  while (static_cast<int64_t>(seeds.size()) < k) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += d2[i];
    const double u = rng.uniform();  // drawn even when unused, so the stream is fixed by K
    int64_t pick = -1;
    if (total > 0) {
      const double target = u * total;
      double run = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (d2[i] <= 0) continue;
        run += d2[i];
        if (run > target) {
          pick = i;
          break;
        }
      }
      if (pick < 0)  // rounding: the running sum never exceeded target; take the last positive
        for (int64_t i = n - 1; i >= 0; --i)
          if (d2[i] > 0) {
            pick = i;
            break;
          }
    }
    if (pick < 0 || chosen[pick])
      for (int64_t i = 0; i < n; ++i)
        if (!chosen[i]) {
          pick = i;
          break;
        }
    seeds.push_back(pick);
    chosen[pick] = 1;
    for (int64_t i = 0; i < n; ++i) {
      const double d = sqdist(&x[i * h], &x[pick * h], h);
      if (d < d2[i]) d2[i] = d;
    }
  }
  return seeds;
}

// The real sample nearest each centroid, distinct, in cluster order (ties: lowest sample index).
template <typename T>
std::vector<int64_t> nearest_distinct(const T* x, int64_t n, int64_t h, const std::vector<double>& centroids,
                                      int64_t k) {
  std::vector<char> taken(n, 0);
  std::vector<int64_t> out(k, -1);
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    double best_d = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      if (taken[i]) continue;
      const double d = sqdist(&x[i * h], &centroids[j * h], h);
      if (d < best_d) {
        best_d = d;
        best = i;
      }
    }
    taken[best] = 1;
    out[j] = best;
  }
  return out;
}

}  // namespace

std::pair<int64_t, int64_t> kmeans_rows(int64_t n, int parts, int part) {
  return {n * part / parts, n * (part + 1) / parts};
}

namespace {

template <typename T>
KMeansResult cluster(const T* x, int64_t n, int64_t h, const KMeansOptions& opt) {
  const int64_t k = opt.clusters;
  check_shape(n, h, k);
  check_values(x, n, h);
  if (opt.max_iterations < 0) fail("k-means: max_iterations must be >= 0; got ", opt.max_iterations);
  if (opt.parts < 1 || opt.part < 0 || opt.part >= opt.parts || (opt.parts > 1 && !opt.share))
    fail("k-means: part ", opt.part, " of ", opt.parts, opt.parts > 1 && !opt.share ? " without a share function" : "");
  PortableRng rng(opt.seed);
  const std::vector<int64_t> seeds = seeds_of(x, n, h, k, rng);

  KMeansResult r;
  r.centroids.assign(static_cast<size_t>(k * h), 0.0);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t d = 0; d < h; ++d) r.centroids[j * h + d] = x[seeds[j] * h + d];
  r.assignment.assign(n, -1);
  std::vector<double> dist(n);

  std::vector<double> ct(static_cast<size_t>(k * h));
  std::vector<int64_t> before;
  const auto [first, end] = kmeans_rows(n, opt.parts, opt.part);
  auto assign_all = [&]() {
    for (int64_t j = 0; j < k; ++j)
      for (int64_t d = 0; d < h; ++d) ct[d * k + j] = r.centroids[j * h + d];
    if (opt.parts > 1) before = r.assignment;
    bool changed = false;
    for (int64_t i = first; i < end; ++i) {
      const int64_t a = nearest(&x[i * h], r.centroids, ct, k, h, &dist[i]);
      if (a != r.assignment[i]) changed = true;
      r.assignment[i] = a;
    }
    if (opt.parts > 1) {
      opt.share(r.assignment.data(), dist.data(), n);
      changed = r.assignment != before;
    }
    return changed;
  };
  assign_all();
  for (int64_t it = 0; it < opt.max_iterations; ++it) {
    // Empty clusters first: each takes the sample farthest from its centroid (ties: lowest index)
    // among clusters with more than one member, so no other cluster empties.
    std::vector<int64_t> count(k, 0);
    for (int64_t i = 0; i < n; ++i) ++count[r.assignment[i]];
    for (int64_t j = 0; j < k; ++j) {
      if (count[j] > 0) continue;
      int64_t far = -1;
      double far_d = -1;
      for (int64_t i = 0; i < n; ++i)
        if (count[r.assignment[i]] > 1 && dist[i] > far_d) {
          far_d = dist[i];
          far = i;
        }
      if (far < 0) fail("k-means: internal error: cluster ", j, " is empty and no cluster can give a sample");
      --count[r.assignment[far]];
      r.assignment[far] = j;
      count[j] = 1;
      dist[far] = 0;
    }
    // Update step, after any reseed: every centroid is the mean of its members (the cluster that
    // gave a sample away too), summed in sample order. Convergence below is then reported only
    // with centroids that are the means of their clusters (issue 18).
    std::vector<double> sum(static_cast<size_t>(k * h), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < h; ++d) sum[r.assignment[i] * h + d] += x[i * h + d];
    for (int64_t j = 0; j < k; ++j)
      for (int64_t d = 0; d < h; ++d) r.centroids[j * h + d] = sum[j * h + d] / static_cast<double>(count[j]);
    ++r.iterations;
    if (!assign_all()) {
      r.converged = true;
      break;
    }
  }
  r.inertia = 0;
  for (int64_t i = 0; i < n; ++i) r.inertia += sqdist(&x[i * h], &r.centroids[r.assignment[i] * h], h);

  r.sample_of_cluster = nearest_distinct(x, n, h, r.centroids, k);
  return r;
}

}  // namespace

std::vector<int64_t> kmeanspp_seeds(const std::vector<double>& x, int64_t n, int64_t h, int64_t k,
                                    PortableRng& rng) {
  check_shape(n, h, k);
  check_size(x, n, h);
  check_values(x.data(), n, h);
  return seeds_of(x.data(), n, h, k, rng);
}

KMeansResult kmeans(const std::vector<double>& x, int64_t n, int64_t h, const KMeansOptions& opt) {
  check_shape(n, h, opt.clusters);
  check_size(x, n, h);
  return cluster(x.data(), n, h, opt);
}

uint64_t kmeans_work_bytes(int64_t n, int64_t h, int64_t k) {
  // assignment (8) + its copy when split among workers (8) + dist (8) + k-means++ D^2 (8) +
  // chosen/taken flags (2) a sample, with 8 to spare; centroids, their transpose and the sums
  // (8 + 8 + 8) a cluster and dimension; seeds and counts a cluster.
  const auto N = static_cast<uint64_t>(std::max<int64_t>(n, 0)), H = static_cast<uint64_t>(std::max<int64_t>(h, 0)),
             K = static_cast<uint64_t>(std::max<int64_t>(k, 0));
  return N * 42 + K * H * 24 + K * 24;
}

KMeansResult kmeans(const float* x, int64_t n, int64_t h, const KMeansOptions& opt) { return cluster(x, n, h, opt); }

KMeansResult kmeans_subsampled(const float* x, int64_t n, int64_t h, const KMeansOptions& opt, int64_t subset,
                               std::vector<int64_t>* subset_rows) {
  if (subset <= 0 || n <= subset) {
    if (subset_rows) subset_rows->clear();
    return kmeans(x, n, h, opt);
  }
  check_shape(n, h, opt.clusters);
  check_shape(subset, h, opt.clusters);
  check_values(x, n, h);
  // Algorithm S: row i is taken with probability (still needed) / (rows left), one draw a row.
  PortableRng rng(opt.seed ^ kSubsetSeedMix);
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(subset));
  for (int64_t i = 0; i < n && static_cast<int64_t>(rows.size()) < subset; ++i) {
    const double u = rng.uniform();
    if (static_cast<double>(n - i) * u < static_cast<double>(subset - static_cast<int64_t>(rows.size())))
      rows.push_back(i);
  }
  std::vector<float> part(static_cast<size_t>(subset * h));
  for (int64_t j = 0; j < subset; ++j) std::copy(x + rows[j] * h, x + (rows[j] + 1) * h, part.begin() + j * h);
  KMeansResult r = cluster(part.data(), subset, h, opt);
  std::vector<float>().swap(part);
  r.sample_of_cluster = nearest_distinct(x, n, h, r.centroids, opt.clusters);
  if (subset_rows) *subset_rows = std::move(rows);
  return r;
}

uint64_t kmeans_subsampled_work_bytes(int64_t n, int64_t h, int64_t k, int64_t subset) {
  if (subset <= 0 || n <= subset) return kmeans_work_bytes(n, h, k);
  const auto S = static_cast<uint64_t>(subset), H = static_cast<uint64_t>(h);
  // The copy and the row index, the subset's k-means, and the final pass's flags over all n.
  return S * H * 4 + S * 8 + kmeans_work_bytes(subset, h, k) + static_cast<uint64_t>(n);
}

}  // namespace recall
