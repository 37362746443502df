// RegMean (Jin et al., ICLR 2023, "Dataless Knowledge Fusion by Merging Weights of Language
// Models"): the linear weight that best reproduces every model's outputs on its own inputs,
// W* = argmin_W sum_i ||X_i W^T - X_i W_i^T||^2, solved in closed form from the Gram matrices
// G_i = X_i^T X_i of the layer's inputs.
//
// As fusion-bench 0.2.x computes it (fusion_bench/method/regmean/regmean.py:
// reduce_non_diagonal_elements and merging_with_regmean_weights; regmean_plusplus.py shares the
// formula and only changes where the inputs come from), for one nn.Linear weight W_i [out, in]:
//   G_i      = X_i^T X_i / tokens_i   (its hooks keep the running mean over every token of the
//                                       samples, batch x sequence, not the sum: gram_scale below)
//   G~_i     = alpha G_i + (1 - alpha) diag(G_i)   (off-diagonals times alpha, the diagonal kept:
//                                       fusion-bench's `reduce_non_diagonal_ratio`, default 0.1 in
//                                       config/method/regmean/regmean.yaml, 0.6 in clip_regmean.yaml
//                                       and gpt2_regmean.yaml; the paper's alpha; recall's default
//                                       0.9 is issue 20's, not checked against the paper here)
//   W*       = (sum_i G~_i)^-1 (sum_i G~_i W_i^T), transposed back to [out, in]
// and every other tensor (biases, norms, embeddings, anything without Gram matrices) is the plain
// mean over models (torch.stack(...).mean(0)): merge_weighted with equal weights, normalized.
// Differences, on purpose: fusion-bench inverts A with torch.inverse and multiplies, here A is
// factored by Cholesky and solved (dpotrf/dpotrs; the same solution, more accurate); an optional
// ridge (relative to A's mean diagonal, default 0 = none, like fusion-bench) makes a rank-deficient
// A solvable; the solve runs in float64 whatever the weights' dtype. The Grams are taken as
// symmetric (X^T X): B uses whole rows, the factorization one triangle of A.
//
// Memory: A (in^2 doubles) + the solution (out x in doubles) + one block of Gram rows + one model's
// weight in double at a time; the Grams stay wherever gram_rows reads them from. A row range of a
// tensor may be merged on its own (out = the rows, weights pointing at them): the rows of W* are
// independent given A, and with reference BLAS their values do not depend on the split.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "recall/merge/methods.h"  // TensorView
#include "recall/util/dtype.h"

namespace recall {

inline constexpr uint64_t kRegMeanBlockBytes = uint64_t{64} << 20;  // Gram rows read at a time: 64 MiB

struct RegMeanInputs {
  std::vector<TensorView> weights;  // per model, the [out, in] rows being merged, any float dtype
  // Writes rows [r0, r0 + n) of model m's Gram matrix X_m^T X_m (float64, [in, in], row-major)
  // to dst (n x in): the Grams stay in files and are read a block of rows at a time.
  std::function<void(size_t m, uint64_t r0, uint64_t n, double* dst)> gram_rows;
  // Per model, multiplies its Gram rows: 1 / tokens_m gives fusion-bench's token mean (the
  // statistics pass writes sums, engine/extraction.h); empty = 1 for every model.
  std::vector<double> gram_scale;
  uint64_t out = 0, in = 0;
  double alpha = 0.9;        // off-diagonal scale of every Gram, in [0, 1] (1 = plain RegMean)
  double ridge = 0;          // >= 0; ridge * mean(diag A) is added to A's diagonal
  uint64_t block_rows = 0;   // Gram rows per read; 0 = kRegMeanBlockBytes worth (tests force 1, 2, ...)
  int threads = 1;           // for the products, the factorization and the solve; the bits do not depend on it
};

struct RegMeanResult {
  double rcond = 0;        // LAPACK's reciprocal 1-norm condition estimate of A (+ ridge), dpocon
  double ridge_added = 0;  // the absolute value added to A's diagonal
};

// The Gram rows read at a time for a width `in` and a requested block (0 = automatic).
uint64_t regmean_block_rows(uint64_t in, uint64_t block_rows = 0);

// W* in float64 into x (out x in, row-major), unrounded: the solution itself, for tests and for
// callers that round elsewhere. Throws when A (+ ridge) is not positive definite (the leading
// minor that fails, and a hint), on a non-finite Gram value, on bad options.
RegMeanResult regmean_solve(const RegMeanInputs& inputs, double* x);

// W* rounded to out_dtype (BF16, F16, F32; float64 -> float -> 16-bit, round to nearest even).
RegMeanResult merge_regmean(const RegMeanInputs& inputs, DType out_dtype, void* out);

// What each thread beyond the first may add: the BLAS's packing buffers of one tile or panel call
// (OpenBLAS touches ~1 MB of its per-thread buffer for a 256-column panel) and the thread's stack.
constexpr uint64_t kRegMeanThreadBytes = 4ull << 20;

// An upper bound of the bytes merge_regmean allocates (A, the solution, one model's weight in
// double, one Gram block, LAPACK's work arrays, kRegMeanThreadBytes per extra thread): for the
// memory plan.
uint64_t regmean_work_bytes(uint64_t out, uint64_t in, size_t models, uint64_t block_rows = 0, int threads = 1);

}  // namespace recall
