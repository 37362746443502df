// RegMean: A = sum_i G~_i and B = sum_i G~_i W_i^T accumulated from blocks of Gram rows, then
// A X = B by Cholesky; see regmean.h.
#include "recall/merge/regmean.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernel_io.h"
#include "recall/merge/linalg.h"
#include "recall/util/error.h"

namespace recall {

namespace {

void check_inputs(const RegMeanInputs& in) {
  if (in.weights.empty()) fail("RegMean: no models to merge");
  for (size_t m = 0; m < in.weights.size(); ++m) kernel::check_view(in.weights[m], "model", m);
  if (!in.gram_rows) fail("RegMean: no reader of Gram rows (gram_rows) was given");
  if (in.in == 0) fail("RegMean: the input width is 0");
  if (!(in.alpha >= 0 && in.alpha <= 1)) fail("RegMean: alpha = ", in.alpha, "; expected a value in [0, 1]");
  if (!(in.ridge >= 0 && std::isfinite(in.ridge))) fail("RegMean: ridge = ", in.ridge, "; expected a finite value >= 0");
  if (!in.gram_scale.empty() && in.gram_scale.size() != in.weights.size())
    fail("RegMean: ", in.gram_scale.size(), " Gram scales for ", in.weights.size(), " models");
  for (size_t m = 0; m < in.gram_scale.size(); ++m)
    if (!(in.gram_scale[m] > 0 && std::isfinite(in.gram_scale[m])))
      fail("RegMean: model ", m, "'s Gram scale is ", in.gram_scale[m], "; expected a finite value > 0");
}

// Rows [r0, r0 + n) of model m's G~ into blk: read, scaled, off-diagonals times alpha.
void read_reduced_rows(const RegMeanInputs& in, size_t m, uint64_t r0, uint64_t n, double* blk) {
  in.gram_rows(m, r0, n, blk);
  const double scale = in.gram_scale.empty() ? 1.0 : in.gram_scale[m];
  for (uint64_t i = 0; i < n; ++i) {
    double* row = blk + i * in.in;
    for (uint64_t j = 0; j < in.in; ++j) {
      if (!std::isfinite(row[j]))
        fail("RegMean: model ", m, "'s Gram matrix has ", row[j], " at [", r0 + i, ", ", j, "]");
      const double g = row[j] * scale;
      row[j] = j == r0 + i ? g : g * in.alpha;
    }
  }
}

}  // namespace

uint64_t regmean_block_rows(uint64_t in, uint64_t block_rows) {
  if (in == 0) return 0;
  const uint64_t rows = block_rows ? block_rows : kRegMeanBlockBytes / (sizeof(double) * in);
  return std::clamp<uint64_t>(rows, 1, in);
}

// Layout: A is in x in (symmetric, full); the solution x is B = sum_i G~_i W_i^T held column-major
// in x out, which is row-major [out, in]: dpotrs overwrites it with A^-1 B = W*^T column-major,
// i.e. W* row-major, with no transposition. Model i's block of rows [r0, r0 + n) of G~_i adds to
// rows [r0, r0 + n) of A and of B: B[r0.., :] += G~_i[r0.., :] W_i^T (dgemm). Every sum runs in
// model order, then row order; a block split changes no sum (with reference BLAS each element of
// a product is one dot product over `in` in index order), so the bits do not depend on block_rows.
RegMeanResult regmean_solve(const RegMeanInputs& in, double* x) {
  check_inputs(in);
  const uint64_t n_in = in.in, n_out = in.out;
  const uint64_t rows = regmean_block_rows(n_in, in.block_rows);
  std::vector<double> a(n_in * n_in, 0.0), blk(rows * n_in), w(n_out * n_in);
  std::fill(x, x + n_out * n_in, 0.0);
  for (size_t m = 0; m < in.weights.size(); ++m) {
    kernel::load<double>(in.weights[m], 0, n_out * n_in, w.data());
    for (uint64_t r0 = 0; r0 < n_in; r0 += rows) {
      const uint64_t n = std::min(rows, n_in - r0);
      read_reduced_rows(in, m, r0, n, blk.data());
      double* a_rows = a.data() + r0 * n_in;
      for (uint64_t k = 0; k < n * n_in; ++k) a_rows[k] += blk[k];
      // blk column-major is in x n (= G~ rows transposed), w column-major is in x out (= W^T).
      linalg::add_transposed_product(n, n_out, n_in, blk.data(), n_in, w.data(), n_in, x + r0, n_in, in.threads);
    }
  }
  RegMeanResult result;
  double diag = 0;
  for (uint64_t i = 0; i < n_in; ++i) diag += a[i * n_in + i];
  result.ridge_added = in.ridge * (diag / static_cast<double>(n_in));
  const double anorm = with_context("RegMean (sum of " + std::to_string(in.weights.size()) + " models' Gram matrices, " +
                                        std::to_string(n_in) + " inputs)",
                                    [&] { return linalg::cholesky_factor(a.data(), n_in, result.ridge_added, in.threads); });
  result.rcond = linalg::cholesky_rcond(a.data(), n_in, anorm);
  linalg::cholesky_solve(a.data(), n_in, x, n_out, in.threads);
  return result;
}

RegMeanResult merge_regmean(const RegMeanInputs& inputs, DType out_dtype, void* out) {
  check_merge_output_dtype(out_dtype);
  std::vector<double> x(inputs.out * inputs.in);
  const RegMeanResult result = regmean_solve(inputs, x.data());
  kernel::store<double>(x.data(), 0, x.size(), out_dtype, out);
  return result;
}

uint64_t regmean_work_bytes(uint64_t out, uint64_t in, size_t models, uint64_t block_rows, int threads) {
  const uint64_t d = sizeof(double);
  const uint64_t a = in * in * d, solution = out * in * d, weight = out * in * d;
  const uint64_t block = regmean_block_rows(in, block_rows) * in * d;
  const uint64_t lapack = in * (4 * d + sizeof(int));  // dlansy's n and dpocon's 3n doubles, n ints
  const uint64_t staging = kernel::kChunk * 2 * d;     // load/store convert kChunk values at a time
  // `models` does not enter: one model's weight is held at a time.
  const uint64_t extra_threads = threads > 1 ? static_cast<uint64_t>(threads - 1) : 0;
  return a + solution + weight + block + lapack + staging + extra_threads * kRegMeanThreadBytes;
}

}  // namespace recall
