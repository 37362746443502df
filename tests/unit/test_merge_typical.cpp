// Typical samples: the portable RNG, k-means++ determinism, cluster recovery, distinct nearest
// samples, duplicate points and the K > N error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "recall/merge/typical.h"
#include "recall/util/error.h"

using namespace recall;

namespace {

// Three well-separated blobs of 10 points each in 4 dimensions, interleaved in sample order.
std::vector<double> blobs(int64_t per_blob, PortableRng& rng) {
  const double centers[3][4] = {{0, 0, 0, 0}, {50, 50, 0, 0}, {0, -50, 50, 10}};
  std::vector<double> x;
  for (int64_t i = 0; i < 3 * per_blob; ++i)
    for (int d = 0; d < 4; ++d) x.push_back(centers[i % 3][d] + rng.uniform() - 0.5);
  return x;
}

}  // namespace

TEST(MergeTypical, PortableRngIsMt19937_64) {
  // The C++ standard fixes the 10000th output of a default-constructed mt19937_64.
  PortableRng rng(5489u);
  uint64_t v = 0;
  for (int i = 0; i < 10000; ++i) v = rng.next_u64();
  EXPECT_EQ(v, 9981545732273789042ULL);
  PortableRng u(1);
  for (int i = 0; i < 1000; ++i) {
    const double x = u.uniform();
    ASSERT_GE(x, 0.0);
    ASSERT_LT(x, 1.0);
  }
}

TEST(MergeTypical, RecoversSeparatedClusters) {
  PortableRng data_rng(7);
  const std::vector<double> x = blobs(10, data_rng);
  KMeansOptions opt;
  opt.clusters = 3;
  opt.seed = 123;
  const KMeansResult r = kmeans(x, 30, 4, opt);
  EXPECT_TRUE(r.converged);
  ASSERT_EQ(r.sample_of_cluster.size(), 3u);
  std::set<int64_t> blob_of_sample;
  for (int64_t s : r.sample_of_cluster) blob_of_sample.insert(s % 3);
  EXPECT_EQ(blob_of_sample.size(), 3u) << "each typical sample should come from a different blob";
  // Every sample of a blob shares its cluster.
  for (int64_t i = 3; i < 30; ++i) EXPECT_EQ(r.assignment[i], r.assignment[i % 3]) << "sample " << i;
  // The typical sample of a cluster is the member nearest its centroid.
  for (int64_t j = 0; j < 3; ++j) {
    const int64_t s = r.sample_of_cluster[j];
    EXPECT_EQ(r.assignment[s], j);
    for (int64_t i = 0; i < 30; ++i) {
      if (r.assignment[i] == j) {
        EXPECT_LE(squared_distance(&x[s * 4], &r.centroids[j * 4], 4),
                  squared_distance(&x[i * 4], &r.centroids[j * 4], 4));
      }
    }
  }
}

TEST(MergeTypical, DeterministicForASeed) {
  PortableRng data_rng(11);
  std::vector<double> x(200 * 8);
  for (double& v : x) v = data_rng.uniform();
  KMeansOptions opt;
  opt.clusters = 16;
  opt.seed = 42;
  const KMeansResult a = kmeans(x, 200, 8, opt), b = kmeans(x, 200, 8, opt);
  EXPECT_EQ(a.sample_of_cluster, b.sample_of_cluster);
  EXPECT_EQ(a.assignment, b.assignment);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.iterations, b.iterations);
  // Another seed changes the k-means++ seeds.
  PortableRng r1(42), r2(43);
  EXPECT_NE(kmeanspp_seeds(x, 200, 8, 16, r1), kmeanspp_seeds(x, 200, 8, 16, r2));
  // Distinct samples.
  std::set<int64_t> distinct(a.sample_of_cluster.begin(), a.sample_of_cluster.end());
  EXPECT_EQ(distinct.size(), 16u);
  // Lloyd never increases the inertia of the seeding.
  KMeansOptions zero = opt;
  zero.max_iterations = 0;
  EXPECT_LE(a.inertia, kmeans(x, 200, 8, zero).inertia);
}

TEST(MergeTypical, KEqualsNTakesEverySample) {
  std::vector<double> x = {0, 0, 1, 1, 5, 5, 9, 9};
  KMeansOptions opt;
  opt.clusters = 4;
  const KMeansResult r = kmeans(x, 4, 2, opt);
  std::vector<int64_t> s = r.sample_of_cluster;
  std::sort(s.begin(), s.end());
  EXPECT_EQ(s, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(r.inertia, 0.0);
}

TEST(MergeTypical, IdenticalPointsGiveLowestDistinctIndices) {
  std::vector<double> x(6 * 3, 2.5);
  KMeansOptions opt;
  opt.clusters = 3;
  opt.seed = 9;
  const KMeansResult r = kmeans(x, 6, 3, opt);
  std::vector<int64_t> s = r.sample_of_cluster;
  std::sort(s.begin(), s.end());
  EXPECT_EQ(s, (std::vector<int64_t>{0, 1, 2}));  // all ties: lowest indices, distinct
}

TEST(MergeTypical, Errors) {
  std::vector<double> x(5 * 2, 1.0);
  KMeansOptions opt;
  opt.clusters = 6;
  try {
    kmeans(x, 5, 2, opt);
    FAIL() << "K > N accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot choose 6 typical samples from 5 samples"), std::string::npos)
        << e.what();
  }
  opt.clusters = 0;
  EXPECT_THROW(kmeans(x, 5, 2, opt), Error);
  opt.clusters = 2;
  EXPECT_THROW(kmeans(x, 4, 2, opt), Error);  // size mismatch
  x[3] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(kmeans(x, 5, 2, opt), Error);
}

namespace {

// At convergence: every centroid is the mean of its members (summed in sample order, as Lloyd's
// update does) and every sample is assigned to its nearest centroid (ties: lowest cluster index).
// Returns the first violation, or "" when there is none.
std::string check_converged_state(const std::vector<double>& x, int64_t n, int64_t h, const KMeansResult& r) {
  const int64_t k = static_cast<int64_t>(r.centroids.size()) / h;
  for (int64_t j = 0; j < k; ++j) {
    std::vector<double> sum(h, 0.0);
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i)
      if (r.assignment[i] == j) {
        ++count;
        for (int64_t d = 0; d < h; ++d) sum[d] += x[i * h + d];
      }
    if (count == 0) return "cluster " + std::to_string(j) + " is empty";
    for (int64_t d = 0; d < h; ++d)
      if (r.centroids[j * h + d] != sum[d] / static_cast<double>(count))
        return "centroid " + std::to_string(j) + " dimension " + std::to_string(d) + " is " +
               std::to_string(r.centroids[j * h + d]) + ", the mean of its " + std::to_string(count) +
               " members is " + std::to_string(sum[d] / static_cast<double>(count));
  }
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = 0;
    double best_d = squared_distance(&x[i * h], &r.centroids[0], h);
    for (int64_t j = 1; j < k; ++j) {
      const double d = squared_distance(&x[i * h], &r.centroids[j * h], h);
      if (d < best_d) best_d = d, best = j;
    }
    if (r.assignment[i] != best)
      return "sample " + std::to_string(i) + " is in cluster " + std::to_string(r.assignment[i]) +
             " but nearest to cluster " + std::to_string(best);
  }
  return "";
}

}  // namespace

// Issue 18: an empty cluster took a sample from cluster 0 = {(5,3), (4,3)}; cluster 0 kept its old
// centroid (4.5, 3), the next assignment changed nothing, and k-means reported convergence with a
// centroid that is not the mean of its one member (5, 3).
TEST(MergeTypical, ReseedRecomputesCentroidsBeforeConvergence) {
  const std::vector<double> x = {5, 3, 1, 4, 2, 4, 4, 3, 3, 1, 3, 0};
  KMeansOptions opt;
  opt.clusters = 4;
  opt.seed = 11751080703236102118ULL;
  const KMeansResult r = kmeans(x, 6, 2, opt);
  ASSERT_TRUE(r.converged);
  EXPECT_EQ(check_converged_state(x, 6, 2, r), "");
  // The sample (5,3) is alone in its cluster, whose centroid is therefore (5,3) itself.
  const int64_t c = r.assignment[0];
  EXPECT_EQ(std::count(r.assignment.begin(), r.assignment.end(), c), 1);
  EXPECT_EQ(r.centroids[c * 2], 5.0);
  EXPECT_EQ(r.centroids[c * 2 + 1], 3.0);
}

// The same property over many random data sets, sizes and seeds. Empty clusters in Lloyd (hence
// reseeds) are rare after a k-means++ start, so part A runs every K in [2, N) on 100000 small sets
// of distinct points on a 5 x 5 grid (400165 runs; before the fix 10 of them converged with a
// stale centroid). Part B: larger sets, up to 4 dimensions, duplicates allowed.
TEST(MergeTypical, ConvergedCentroidsAreMeansAndAssignmentsNearest) {
  PortableRng gen(2024);
  int64_t runs = 0, converged = 0;
  auto run = [&](const std::vector<double>& x, int64_t n, int64_t h, int64_t k, const char* part) {
    KMeansOptions opt;
    opt.clusters = k;
    opt.seed = gen.next_u64();
    const KMeansResult r = kmeans(x, n, h, opt);
    ++runs;
    if (!r.converged) return true;
    ++converged;
    const std::string bad = check_converged_state(x, n, h, r);
    EXPECT_EQ(bad, "") << part << ": N " << n << " H " << h << " K " << k << " seed " << opt.seed;
    return bad.empty();
  };
  for (int trial = 0; trial < 100000; ++trial) {  // part A
    const int64_t n = 4 + static_cast<int64_t>(gen.uniform() * 5), h = 2;
    std::vector<double> x;
    std::set<std::pair<double, double>> seen;
    while (static_cast<int64_t>(seen.size()) < n) {
      const double a = std::floor(gen.uniform() * 5), b = std::floor(gen.uniform() * 5);
      if (seen.insert({a, b}).second) x.insert(x.end(), {a, b});
    }
    for (int64_t k = 2; k < n; ++k)
      if (!run(x, n, h, k, "part A")) return;
  }
  EXPECT_EQ(converged, runs);  // distinct points: Lloyd always converges within 100 iterations here
  for (int trial = 0; trial < 5000; ++trial) {  // part B
    const int64_t n = 2 + static_cast<int64_t>(gen.uniform() * 40);
    const int64_t h = 1 + static_cast<int64_t>(gen.uniform() * 4);
    const int64_t k = 1 + static_cast<int64_t>(gen.uniform() * static_cast<double>(n));
    const double grid = trial % 2 == 0 ? 6 : 1000;  // coarse grid: duplicates and distance ties
    std::vector<double> x(n * h);
    for (double& v : x) v = std::floor(gen.uniform() * grid);
    if (!run(x, n, h, k, "part B")) return;
  }
  // Runs with fewer distinct points than K never converge (duplicate centroids keep trading a
  // sample); the property is checked on the rest, which are most.
  EXPECT_GT(converged, runs * 95 / 100) << converged << " of " << runs << " runs converged";
}

TEST(MergeTypical, FloatInputClustersExactlyAsItsDoubleWidening) {
  // The pipeline clusters the pooled float matrix in place (N x H x 4 bytes, no double copy): the
  // same seeds, assignments, centroids, inertia and samples as the widened matrix.
  PortableRng rng(7);
  const int64_t n = 600, h = 5;
  std::vector<float> xf(static_cast<size_t>(n * h));
  for (int64_t i = 0; i < n * h; ++i) xf[i] = static_cast<float>((i % 3) * 4.0 + rng.uniform() * 3.0 - 1.5);
  const std::vector<double> xd(xf.begin(), xf.end());
  KMeansOptions o;
  o.clusters = 9;
  o.seed = 3;
  const KMeansResult a = kmeans(xf.data(), n, h, o), b = kmeans(xd, n, h, o);
  EXPECT_EQ(a.sample_of_cluster, b.sample_of_cluster);
  EXPECT_EQ(a.assignment, b.assignment);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.iterations, b.iterations);
  EXPECT_EQ(a.inertia, b.inertia);
  // Far from the origin (10^4 + noise of 0.01, where floats are 0.001 apart) a distance computed
  // in float would move samples across cluster boundaries; widened to double it does not.
  std::vector<float> far(static_cast<size_t>(n * h));
  for (float& v : far) v = static_cast<float>(1e4 + 0.01 * rng.uniform());
  const std::vector<double> far_d(far.begin(), far.end());
  const KMeansResult c = kmeans(far.data(), n, h, o), d = kmeans(far_d, n, h, o);
  EXPECT_EQ(c.assignment, d.assignment);
  EXPECT_EQ(c.sample_of_cluster, d.sample_of_cluster);
  EXPECT_EQ(c.inertia, d.inertia);
  xf[17] = std::nanf("");
  EXPECT_THROW(kmeans(xf.data(), n, h, o), Error);
  EXPECT_GE(kmeans_work_bytes(n, h, 9), static_cast<uint64_t>(n) * 26 + 9 * 5 * 16);
}

TEST(MergeTypical, SubsampledKMeansAboveTheLimitOnly) {
  PortableRng rng(11);
  const int64_t n = 3000, h = 4;
  std::vector<float> x(static_cast<size_t>(n * h));
  for (int64_t i = 0; i < n * h; ++i) x[i] = static_cast<float>((i / h) % 5 * 10 + rng.uniform());
  KMeansOptions o;
  o.clusters = 5;
  o.seed = 2;
  // At or below the limit (and with 0 = no limit): exactly kmeans() of every row.
  const KMeansResult full = kmeans(x.data(), n, h, o);
  for (int64_t limit : {int64_t{0}, n, n + 1}) {
    std::vector<int64_t> rows = {1};
    const KMeansResult same = kmeans_subsampled(x.data(), n, h, o, limit, &rows);
    EXPECT_EQ(same.sample_of_cluster, full.sample_of_cluster) << limit;
    EXPECT_EQ(same.centroids, full.centroids) << limit;
    EXPECT_TRUE(rows.empty());
  }
  // Above it: `limit` distinct rows in order over the whole file, the same for a seed.
  std::vector<int64_t> rows, again;
  const KMeansResult sub = kmeans_subsampled(x.data(), n, h, o, 400, &rows);
  const KMeansResult sub2 = kmeans_subsampled(x.data(), n, h, o, 400, &again);
  ASSERT_EQ(rows.size(), 400u);
  EXPECT_EQ(rows, again);
  EXPECT_EQ(sub.sample_of_cluster, sub2.sample_of_cluster);
  EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end()));
  EXPECT_EQ(std::adjacent_find(rows.begin(), rows.end()), rows.end());
  EXPECT_LT(rows.front(), n / 10);
  EXPECT_GT(rows.back(), n - n / 10);
  EXPECT_EQ(sub.assignment.size(), 400u);
  // Each centroid takes its nearest row among all n (not only the subset), distinct, in cluster
  // order; here one per blob, as the full clustering finds.
  std::set<int64_t> taken;
  for (int64_t j = 0; j < o.clusters; ++j) {
    const int64_t s = sub.sample_of_cluster[j];
    std::vector<double> row(x.begin() + s * h, x.begin() + (s + 1) * h);
    const double ds = squared_distance(row.data(), &sub.centroids[j * h], h);
    for (int64_t i = 0; i < n; ++i) {
      if (taken.count(i)) continue;
      std::vector<double> ri(x.begin() + i * h, x.begin() + (i + 1) * h);
      ASSERT_LE(ds, squared_distance(ri.data(), &sub.centroids[j * h], h)) << "cluster " << j << " row " << i;
    }
    taken.insert(s);
  }
  std::set<int64_t> blobs_full, blobs_sub;
  for (int64_t j = 0; j < o.clusters; ++j) {
    blobs_full.insert(full.sample_of_cluster[j] % 5);
    blobs_sub.insert(sub.sample_of_cluster[j] % 5);
  }
  EXPECT_EQ(blobs_sub, blobs_full);
  EXPECT_GT(kmeans_subsampled_work_bytes(n, h, 5, 400), 400u * h * 4);
  EXPECT_EQ(kmeans_subsampled_work_bytes(n, h, 5, 0), kmeans_work_bytes(n, h, 5));
}
