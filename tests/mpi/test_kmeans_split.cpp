// k-means of the typical samples with its assignment step split among the ranks (every rank
// assigns its rows, an all-gather of the dist layer shares them): the same clustering as one
// process, on 1..4 ranks, with an uneven split and with reseeded empty clusters.
#include <gtest/gtest.h>
#include <mpi.h>

#include "recall/dist/comm.h"
#include "recall/merge/typical.h"

using namespace recall;

namespace {

// `n` rows of `h` floats: sums of 6 fixed directions plus noise, like pooled hidden states.
std::vector<float> rows(int64_t n, int64_t h) {
  PortableRng rng(5);
  std::vector<float> dirs(static_cast<size_t>(6 * h)), x(static_cast<size_t>(n * h));
  for (float& d : dirs) d = static_cast<float>(rng.uniform() * 4 - 2);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < h; ++j) x[i * h + j] = dirs[(i * 5 % 6) * h + j] + static_cast<float>(rng.uniform());
  return x;
}

KMeansOptions split_options(dist::Communicator& comm, std::vector<int64_t>& a, std::vector<double>& d) {
  KMeansOptions o;
  o.parts = comm.size();
  o.part = comm.rank();
  o.share = [&comm, &a, &d, o](int64_t* assignment, double* dist, int64_t n) {
    std::vector<size_t> counts;
    for (int p = 0; p < o.parts; ++p) {
      const auto [b, e] = kmeans_rows(n, o.parts, p);
      counts.push_back(static_cast<size_t>(e - b));
    }
    const auto [first, end] = kmeans_rows(n, o.parts, o.part);
    a.assign(assignment + first, assignment + end);
    d.assign(dist + first, dist + end);
    comm.all_gather_v(a.data(), assignment, counts, DType::I64);
    comm.all_gather_v(d.data(), dist, counts, DType::F64);
  };
  return o;
}

}  // namespace

TEST(KMeansSplit, SameClusteringAsOneProcess) {
  dist::CommOptions rounds;
  rounds.max_elements_per_call = 7;  // the all-gathers in several rounds too
  auto comm = dist::make_mpi_communicator(MPI_COMM_WORLD, rounds);
  std::vector<int64_t> a;
  std::vector<double> d;
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{301, 9}, {40, 12}, {5, 5}}) {
    const int64_t h = 7;
    const std::vector<float> x = rows(n, h);
    KMeansOptions one;
    one.clusters = k;
    one.seed = 4;
    KMeansOptions split = split_options(*comm, a, d);
    split.clusters = k;
    split.seed = 4;
    const KMeansResult want = kmeans(x.data(), n, h, one), got = kmeans(x.data(), n, h, split);
    EXPECT_EQ(got.assignment, want.assignment) << "N " << n << " K " << k << " on " << comm->size() << " ranks";
    EXPECT_EQ(got.centroids, want.centroids);
    EXPECT_EQ(got.sample_of_cluster, want.sample_of_cluster);
    EXPECT_EQ(got.iterations, want.iterations);
    EXPECT_EQ(got.converged, want.converged);
    EXPECT_EQ(got.inertia, want.inertia);
  }
}
