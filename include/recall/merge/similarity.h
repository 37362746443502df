// Similarity of each model's representations to the reference model's at one block
// (DESIGN.md §3.3): the RBF kernel similarity RECALL uses, with the median-heuristic bandwidth or a
// fixed gamma, and linear / RBF CKA (Kornblith et al. 2019) for ablations. All in double precision
// on small K x H row-major matrices.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recall/util/enum_names.h"

namespace recall {

// A K x H row-major matrix of representations (one row per typical sample).
struct RepMatrix {
  int64_t rows = 0;  // K
  int64_t cols = 0;  // H
  std::vector<double> values;
};

enum class SimilarityKind {
  Rbf,         // mean_x exp(-||r_i(x) - r_ref(x)||^2 / (2 sigma^2)), RECALL's default
  LinearCka,   // linear CKA of r_i and r_ref (ablation)
  RbfCka,      // RBF CKA with bandwidth threshold * median distance (ablation)
};

inline constexpr EnumName<SimilarityKind> kSimilarityKinds[] = {
    {"rbf", SimilarityKind::Rbf}, {"linear_cka", SimilarityKind::LinearCka}, {"rbf_cka", SimilarityKind::RbfCka}};

// What each model's similarity is measured against (the paper can be read either way; issue 18).
enum class SimilarityMode {
  ToReference,   // s_i = k(r_i, r_ref): every model against the reference (DESIGN.md §3.3, default)
  PairwiseMean,  // s_i = mean over j != i of k(r_i, r_j): the full pairwise matrix averaged per model
};
inline constexpr EnumName<SimilarityMode> kSimilarityModes[] = {{"to_reference", SimilarityMode::ToReference},
                                                                {"pairwise_mean", SimilarityMode::PairwiseMean}};

// The config's `kernel` section and `recall.similarity` (recall/config/merge_config.h documents
// and checks each field; these initializers are the defaults).
struct SimilarityOptions {
  SimilarityMode mode = SimilarityMode::ToReference;
  SimilarityKind kind = SimilarityKind::Rbf;
  double bandwidth_factor = 1.0;  // rbf: sigma^2 = factor * median squared pairwise distance
  double gamma = 0.0;             // rbf: > 0 uses exp(-gamma d^2) instead of the median heuristic
  double cka_threshold = 0.5;     // rbf_cka: sigma = threshold * sqrt(median squared distance)
  bool cka_debiased = false;      // linear_cka / rbf_cka: the unbiased HSIC estimator
};

struct BlockSimilarity {
  std::vector<double> similarity;  // per model, in model order; the reference's is 1 for rbf
  double sigma2 = 0;               // rbf: the bandwidth used (0 with a fixed gamma, or for CKA)
};

// Median of the squared pairwise distances among all rows of all matrices (the full
// (M*K) x (M*K) matrix, diagonal zeros included; the mean of the two middle values for an even
// count, as numpy.median).
double median_squared_distance(const std::vector<RepMatrix>& reps);

// Similarity of every model at one block: to reps[reference] (opt.mode ToReference), or
// pairwise_mean_similarity (PairwiseMean; `reference` is then unused). Errors: empty input, shape
// mismatch, reference out of range, non-finite values, bad options.
BlockSimilarity block_similarity(const std::vector<RepMatrix>& reps, int64_t reference,
                                 const SimilarityOptions& opt);

// The M x M matrix (row-major) of S_ij = k(r_i, r_j) for opt.kind, with what the pairs share
// computed once over the block: for rbf the bandwidth of block_similarity (sigma^2 = factor x the
// median squared distance among all M*K rows, or a fixed gamma), written to *sigma2 when given;
// for CKA each model's Gram matrix. Symmetric; S_ii = 1 for rbf.
std::vector<double> pairwise_similarity_matrix(const std::vector<RepMatrix>& reps, const SimilarityOptions& opt,
                                               double* sigma2 = nullptr);

// The pairwise reading of RECALL's similarity:
//   s_i = 1/(M-1) * sum_{j != i} S_ij,   S_ij = (1/K) sum_x exp(-||r_i(x) - r_j(x)||^2 / (2 sigma^2))
// for rbf (S_ij = CKA(r_i, r_j) for the CKA kinds), each sum in index order. The diagonal is left
// out: S_ii is 1 for every model under rbf, so including it would only map s_i to
// 1/M + (M-1)/M s_i, a constant (cancelled by the softmax) plus a compression of the spread by
// (M-1)/M, i.e. a temperature that silently changes with the number of models. With M = 1 the
// only value is S_00. `sigma2` as in block_similarity.
BlockSimilarity pairwise_mean_similarity(const std::vector<RepMatrix>& reps, const SimilarityOptions& opt);

// Gram matrices and CKA (Kornblith et al. 2019, reference implementation semantics).
std::vector<double> gram_linear(const RepMatrix& x);                    // X X^T, K x K
std::vector<double> gram_rbf(const RepMatrix& x, double threshold);     // exp(-d^2 / (2 t^2 median d^2))
// CKA of two K x K Gram matrices (centered inside; `debiased` = unbiased HSIC).
double cka(const std::vector<double>& gram_x, const std::vector<double>& gram_y, int64_t n, bool debiased);

}  // namespace recall
