// Typical samples (DESIGN.md §3.1): k-means++ seeding with a fixed, portable RNG, Lloyd
// iterations, and the real sample nearest each centroid. Pure functions on an N x H row-major
// matrix of sample embeddings (mask-aware token means, computed by the caller).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "recall/util/rng.h"

namespace recall {

struct KMeansOptions {
  int64_t clusters = 32;        // K
  uint64_t seed = 0;            // k-means++ seed
  int64_t max_iterations = 100; // Lloyd iterations; stops earlier when no assignment changes
  // The assignment step split among `parts` workers (ranks) that all run the same clustering: this
  // one assigns rows kmeans_rows(n, parts, part) of each pass, then `share` (an all-gather) fills
  // in every other part's assignment and distance, so every worker continues with all of them.
  // A row's nearest centroid does not depend on who computes it: the result is that of one worker.
  int parts = 1, part = 0;
  std::function<void(int64_t* assignment, double* dist, int64_t n)> share;
};

// Rows [first, end) of part `part` of `parts`: n * part / parts up to n * (part + 1) / parts.
std::pair<int64_t, int64_t> kmeans_rows(int64_t n, int parts, int part);

struct KMeansResult {
  std::vector<double> centroids;      // K x H, row-major
  std::vector<int64_t> assignment;    // N: cluster of each sample
  std::vector<int64_t> sample_of_cluster;  // K: the real sample nearest each centroid (distinct)
  int64_t iterations = 0;             // Lloyd iterations run
  bool converged = false;             // stopped because no assignment changed
  double inertia = 0;                 // sum of squared distances to the assigned centroid
};

// Squared Euclidean distance of two H-vectors, summed in index order.
double squared_distance(const double* a, const double* b, int64_t h);

// k-means++ seeding: K distinct sample indices. The first is floor(u * N); each next one is drawn
// with probability proportional to D(x)^2, the squared distance to the nearest chosen seed (the
// first index whose running sum of D^2 exceeds u * sum D^2). When every remaining D^2 is 0 (fewer
// distinct points than K), the lowest unchosen index is taken.
std::vector<int64_t> kmeanspp_seeds(const std::vector<double>& x, int64_t n, int64_t h,
                                    int64_t k, PortableRng& rng);

// Full clustering of x (n x h). Errors: K < 1, K > N, size mismatch, non-finite values.
// Lloyd: assign each sample to the nearest centroid (ties: lowest cluster index); an empty cluster
// is re-seeded with the sample farthest from its own centroid (ties: lowest index), taken out of
// its old cluster; then every centroid becomes the mean of its members. `converged` thus implies
// centroids = member means and every sample at its nearest centroid. Then, in cluster order, each
// centroid takes the nearest sample not yet taken (ties: lowest sample index), so the K samples
// are distinct.
KMeansResult kmeans(const std::vector<double>& x, int64_t n, int64_t h, const KMeansOptions& opt);
// The same on a float matrix (the pooled representations), with the same arithmetic on the
// values widened to double: equal to kmeans() of the widened copy, without its N x H x 8 bytes.
// Besides x it holds about 34 bytes a sample (assignments, distances, flags) and 16 K x H bytes
// (centroids and their sums): kmeans_work_bytes().
KMeansResult kmeans(const float* x, int64_t n, int64_t h, const KMeansOptions& opt);
uint64_t kmeans_work_bytes(int64_t n, int64_t h, int64_t k);

// k-means of at most `subset` rows of x: with n <= subset (or subset <= 0), kmeans(x, n, h, opt).
// Otherwise `subset` rows are drawn uniformly without replacement, in row order, by selection
// sampling (Knuth's Algorithm S) with PortableRng(opt.seed ^ kSubsetSeedMix), copied out and
// clustered; then, in cluster order, each centroid takes the nearest row of all n not yet taken
// (ties: lowest index), so the K samples come from the whole data. `assignment` and `inertia`
// are those of the subset; rows[] of the subset are in `subset_rows`.
inline constexpr uint64_t kSubsetSeedMix = 0x9e3779b97f4a7c15ull;
KMeansResult kmeans_subsampled(const float* x, int64_t n, int64_t h, const KMeansOptions& opt, int64_t subset,
                               std::vector<int64_t>* subset_rows = nullptr);
// Bytes kmeans_subsampled holds besides x: the subset's copy (subset x h x 4) and index, and
// kmeans_work_bytes of the rows it clusters.
uint64_t kmeans_subsampled_work_bytes(int64_t n, int64_t h, int64_t k, int64_t subset);

}  // namespace recall
