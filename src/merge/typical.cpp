// Typical samples: k-means++ seeding, Lloyd iterations and nearest real samples (see typical.h).
#include "recall/merge/typical.h"

#include <cmath>
#include <limits>

#include "recall/util/error.h"

namespace recall {

double squared_distance(const double* a, const double* b, int64_t h) {
  double s = 0;
  for (int64_t j = 0; j < h; ++j) {
    const double d = a[j] - b[j];
    s += d * d;
  }
  return s;
}

namespace {

void check_input(const std::vector<double>& x, int64_t n, int64_t h, int64_t k) {
  if (n < 1 || h < 1) fail("k-means: need at least one sample of at least one dimension; got N=", n, ", H=", h);
  if (static_cast<uint64_t>(x.size()) != static_cast<uint64_t>(n) * static_cast<uint64_t>(h))
    fail("k-means: embedding matrix has ", x.size(), " values; expected N x H = ", n, " x ", h, " = ", n * h);
  if (k < 1) fail("k-means: the number of clusters must be at least 1; got ", k);
  if (k > n)
    fail("k-means: cannot choose ", k, " typical samples from ", n,
         " samples (clusters K must not exceed the number of samples N)");
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]))
      fail("k-means: embedding of sample ", static_cast<int64_t>(i) / h, " has a non-finite value (", x[i],
           ") at dimension ", static_cast<int64_t>(i) % h);
}

// Nearest centroid of row i; ties to the lowest cluster index.
int64_t nearest(const double* row, const std::vector<double>& c, int64_t k, int64_t h, double* dist) {
  int64_t best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < k; ++j) {
    const double d = squared_distance(row, &c[j * h], h);
    if (d < best_d) {
      best_d = d;
      best = j;
    }
  }
  if (dist) *dist = best_d;
  return best;
}

}  // namespace

std::vector<int64_t> kmeanspp_seeds(const std::vector<double>& x, int64_t n, int64_t h, int64_t k,
                                    PortableRng& rng) {
  check_input(x, n, h, k);
  std::vector<int64_t> seeds;
  std::vector<char> chosen(n, 0);
  int64_t first = static_cast<int64_t>(rng.uniform() * static_cast<double>(n));
  if (first >= n) first = n - 1;
  seeds.push_back(first);
  chosen[first] = 1;
  std::vector<double> d2(n);
  for (int64_t i = 0; i < n; ++i) d2[i] = squared_distance(&x[i * h], &x[first * h], h);
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
      const double d = squared_distance(&x[i * h], &x[pick * h], h);
      if (d < d2[i]) d2[i] = d;
    }
  }
  return seeds;
}

KMeansResult kmeans(const std::vector<double>& x, int64_t n, int64_t h, const KMeansOptions& opt) {
  const int64_t k = opt.clusters;
  check_input(x, n, h, k);
  if (opt.max_iterations < 0) fail("k-means: max_iterations must be >= 0; got ", opt.max_iterations);
  PortableRng rng(opt.seed);
  const std::vector<int64_t> seeds = kmeanspp_seeds(x, n, h, k, rng);

  KMeansResult r;
  r.centroids.assign(static_cast<size_t>(k * h), 0.0);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t d = 0; d < h; ++d) r.centroids[j * h + d] = x[seeds[j] * h + d];
  r.assignment.assign(n, -1);
  std::vector<double> dist(n);

  auto assign_all = [&]() {
    bool changed = false;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t a = nearest(&x[i * h], r.centroids, k, h, &dist[i]);
      if (a != r.assignment[i]) changed = true;
      r.assignment[i] = a;
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
  for (int64_t i = 0; i < n; ++i) r.inertia += squared_distance(&x[i * h], &r.centroids[r.assignment[i] * h], h);

  // The real sample nearest each centroid, distinct, in cluster order.
  std::vector<char> taken(n, 0);
  r.sample_of_cluster.assign(k, -1);
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    double best_d = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      if (taken[i]) continue;
      const double d = squared_distance(&x[i * h], &r.centroids[j * h], h);
      if (d < best_d) {
        best_d = d;
        best = i;
      }
    }
    taken[best] = 1;
    r.sample_of_cluster[j] = best;
  }
  return r;
}

}  // namespace recall
