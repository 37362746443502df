// Typical samples: the portable RNG, k-means++ determinism, cluster recovery, distinct nearest
// samples, duplicate points and the K > N error.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

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
    for (int64_t i = 0; i < 30; ++i)
      if (r.assignment[i] == j)
        EXPECT_LE(squared_distance(&x[s * 4], &r.centroids[j * 4], 4),
                  squared_distance(&x[i * 4], &r.centroids[j * 4], 4));
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
