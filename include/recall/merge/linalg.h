// Dense symmetric positive-definite linear algebra for RegMean (recall/merge/regmean.h): Cholesky
// factor with a ridge, solve for many right-hand sides, reciprocal condition number, and the one
// matrix product RegMean accumulates, through LAPACK/BLAS's Fortran symbols (dpotrf, dpotrs,
// dpocon, dlansy, dgemm, dtrsm, dsyrk; no LAPACKE).
//
// Matrices are column-major (Fortran) with leading dimension = rows; a symmetric matrix stored in
// full is the same array row- or column-major. Sizes are 64-bit here; LAPACK takes 32-bit ints, so
// every dimension is checked to fit and fails with its value otherwise.
//
// Threads: the factorization, the solve and the product take a thread count. The work is cut into
// tiles of kTile x kTile (factorization) and panels of kPanel right-hand-side columns whatever the
// count; each tile and panel is one BLAS/LAPACK call of a fixed shape on one thread, so results are
// bitwise the same for any thread count (and so for any CPU binding or rank count).
//
// Speed and determinism: Debian's liblapack-dev/libblas-dev are the reference implementations:
// single-threaded, and their results depend on the inputs only. Installing libopenblas0 makes
// Debian's alternatives route libblas.so.3/liblapack.so.3 to OpenBLAS (no rebuild), 20x faster on
// this VM; OpenBLAS's own threads are kept at one (its bits followed their count), and its kernels
// follow the CPU (blas_kernels), so a solve's bits are those of the CPU kind that ran it.
#pragma once

#include <cstdint>
#include <string>

namespace recall::linalg {

constexpr uint64_t kTile = 256;   // the factorization's tile order
constexpr uint64_t kPanel = 256;  // right-hand-side (product) columns per call

// The 1-norm (= infinity norm) of the n x n symmetric matrix a, from its lower triangle (dlansy).
// Take it before factoring: cholesky_rcond needs the norm of the matrix, not of its factor.
double symmetric_norm1(const double* a, uint64_t n);

// Adds `ridge` to the diagonal of the n x n symmetric matrix a, then factors it in place as
// a + ridge I = L L^T (dpotrf, lower): the lower triangle holds L, the strict upper triangle is
// untouched. Returns the 1-norm of a + ridge I taken before factoring (for cholesky_rcond).
// Throws when a + ridge I is not positive definite, naming the order of the first leading minor
// that is not, the ridge, and a hint.
// The factorization is tiled (right-looking: potrf of the diagonal tile, trsm of the tiles below
// it, syrk/gemm of the trailing tiles on `threads` threads).
double cholesky_factor(double* a, uint64_t n, double ridge = 0, int threads = 1);

// Solves A X = B in place for B (n x nrhs, column-major, leading dimension n; equivalently nrhs
// rows of n values row-major), with `factor` from cholesky_factor (dpotrs).
void cholesky_solve(const double* factor, uint64_t n, double* b, uint64_t nrhs, int threads = 1);

// LAPACK's estimate of 1 / (||A||_1 ||A^-1||_1) from the factor and anorm = symmetric_norm1(A)
// (dpocon): near 1 well conditioned, near 1e-16 singular to double precision.
double cholesky_rcond(const double* factor, uint64_t n, double anorm);

// C += A^T B (dgemm "T", "N"): A is k x m (lda >= k), B is k x n (ldb >= k), C is m x n (ldc >= m).
void add_transposed_product(uint64_t m, uint64_t n, uint64_t k, const double* a, uint64_t lda, const double* b,
                            uint64_t ldb, double* c, uint64_t ldc, int threads = 1);

// LAPACK is loaded privately on first use (see linalg.cpp). Which BLAS is under it: "OpenBLAS"
// when it has OpenBLAS's thread control, else "reference BLAS" (or another without it).
std::string blas_library();
// OpenBLAS's kernels (its core name: "SkylakeX", "Haswell", ...; "" for other libraries). OpenBLAS
// picks them from the CPU's family and model and falls back to its oldest ("Prescott") on a CPU it
// does not know; unless OPENBLAS_CORETYPE is set, recall names them from the CPU's instructions
// (AVX-512: SkylakeX, AVX2 + FMA: Haswell) before loading the library.
std::string blas_kernels();
// OpenBLAS's own thread count (1 for others) and setting it, for tests and benchmarks: every BLAS
// call here runs on one thread whatever it is (the threads above are recall's, each calling a
// one-thread BLAS).
int blas_threads();
void set_blas_threads(int threads);

}  // namespace recall::linalg
