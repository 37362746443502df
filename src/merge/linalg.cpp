// Symmetric positive-definite solves through LAPACK/BLAS's Fortran symbols; see linalg.h.
#include "recall/merge/linalg.h"

#include <dlfcn.h>

#include <climits>
#include <cstddef>
#include <vector>

#include "recall/util/error.h"

// gfortran's calling convention: every argument by pointer, each CHARACTER argument followed at
// the end by its length as a hidden size_t (GCC >= 8). Passing the lengths matters: LAPACK built
// by a recent gfortran may read them (the tail-call miscompilation R and SciPy hit without them).
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dpotrs_(const char* uplo, const int* n, const int* nrhs, const double* a, const int* lda, double* b,
             const int* ldb, int* info, size_t uplo_len);
void dpocon_(const char* uplo, const int* n, const double* a, const int* lda, const double* anorm, double* rcond,
             double* work, int* iwork, int* info, size_t uplo_len);
double dlansy_(const char* norm, const char* uplo, const int* n, const double* a, const int* lda, double* work,
               size_t norm_len, size_t uplo_len);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc, size_t transa_len, size_t transb_len);
}

namespace recall::linalg {

namespace {

// A dimension for LAPACK, which takes 32-bit ints.
int lapack_int(uint64_t v, const char* routine, const char* what) {
  if (v > static_cast<uint64_t>(INT_MAX))
    fail("linalg: ", routine, " ", what, " = ", v, " exceeds LAPACK's 32-bit int (at most ", INT_MAX, ")");
  return static_cast<int>(v);
}

// info < 0 from LAPACK means we passed an illegal argument: a bug here, reported as such.
void check_info(int info, const char* routine) {
  if (info < 0) fail("linalg: ", routine, " rejected argument ", -info, " (a bug in recall's call)");
}

int at_least_one(int v) { return v > 0 ? v : 1; }  // LAPACK requires leading dimensions >= 1

// OpenBLAS's results depend on its thread count (its parallel potrf takes another path, and its
// threaded dgemm changed bits too at in = 400, RegMean.SameBitsWhateverTheBlasThreadCount), and
// the thread count follows the rank's CPU binding, which mpirun changes with the world size: a
// merge would differ between 2 and 4 ranks. So every call here runs on one thread; a RegMean
// merge uses more cores through more ranks (each solves whole tensors). Found at run time:
// Debian's alternatives decide which BLAS the process loads; reference BLAS has no threads.
class OneBlasThread {
 public:
  OneBlasThread() {
    static const auto get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    static const auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (!get || !set) return;
    set_ = set;
    saved_ = get();
    if (saved_ != 1) set(1);
  }
  ~OneBlasThread() {
    if (set_ && saved_ != 1) set_(saved_);
  }
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

 private:
  void (*set_)(int) = nullptr;
  int saved_ = 1;
};

}  // namespace

double symmetric_norm1(const double* a, uint64_t n) {
  const int ni = lapack_int(n, "dlansy", "n");
  if (ni == 0) return 0;
  const int lda = at_least_one(ni);
  std::vector<double> work(n);
  return dlansy_("1", "L", &ni, a, &lda, work.data(), 1, 1);
}

double cholesky_factor(double* a, uint64_t n, double ridge) {
  const int ni = lapack_int(n, "dpotrf", "n");
  const int lda = at_least_one(ni);
  if (ridge != 0)
    for (uint64_t i = 0; i < n; ++i) a[i * n + i] += ridge;
  const double anorm = symmetric_norm1(a, n);
  int info = 0;
  {
    const OneBlasThread one;
    dpotrf_("L", &ni, a, &lda, &info, 1);
  }
  check_info(info, "dpotrf");
  if (info > 0)
    fail("linalg: Cholesky factorization of a ", n, " x ", n, " matrix failed: its leading minor of order ", info,
         " is not positive definite (or not finite), with ", ridge,
         " added to the diagonal\n---> HINT: the Gram matrices may be rank-deficient (too few tokens for the input "
         "width, or dead input channels); a ridge (RegMean's `ridge`, relative to the mean diagonal, e.g. 1e-6) makes "
         "it positive definite");
  return anorm;
}

void cholesky_solve(const double* factor, uint64_t n, double* b, uint64_t nrhs) {
  const int ni = lapack_int(n, "dpotrs", "n");
  const int nr = lapack_int(nrhs, "dpotrs", "nrhs");
  const int ld = at_least_one(ni);
  int info = 0;
  {
    const OneBlasThread one;
    dpotrs_("L", &ni, &nr, factor, &ld, b, &ld, &info, 1);
  }
  check_info(info, "dpotrs");
}

double cholesky_rcond(const double* factor, uint64_t n, double anorm) {
  const int ni = lapack_int(n, "dpocon", "n");
  if (ni == 0) return 1;
  const int lda = at_least_one(ni);
  std::vector<double> work(3 * n);
  std::vector<int> iwork(n);
  double rcond = 0;
  int info = 0;
  dpocon_("L", &ni, factor, &lda, &anorm, &rcond, work.data(), iwork.data(), &info, 1);
  check_info(info, "dpocon");
  return rcond;
}

void add_transposed_product(uint64_t m, uint64_t n, uint64_t k, const double* a, uint64_t lda, const double* b,
                            uint64_t ldb, double* c, uint64_t ldc) {
  const int mi = lapack_int(m, "dgemm", "m"), ni = lapack_int(n, "dgemm", "n"), ki = lapack_int(k, "dgemm", "k");
  const int la = at_least_one(lapack_int(lda, "dgemm", "lda")), lb = at_least_one(lapack_int(ldb, "dgemm", "ldb"));
  const int lc = at_least_one(lapack_int(ldc, "dgemm", "ldc"));
  if (mi == 0 || ni == 0) return;
  const double one = 1;
  const OneBlasThread single;
  dgemm_("T", "N", &mi, &ni, &ki, &one, a, &la, b, &lb, &one, c, &lc, 1, 1);
}

}  // namespace recall::linalg
