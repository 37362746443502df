// Symmetric positive-definite solves through LAPACK/BLAS's Fortran symbols; see linalg.h.
#include "recall/merge/linalg.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstddef>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "recall/util/error.h"

namespace recall::linalg {

namespace {

// gfortran's calling convention: every argument by pointer, each CHARACTER argument followed at
// the end by its length as a hidden size_t (GCC >= 8). Passing the lengths matters: LAPACK built
// by a recent gfortran may read them (the tail-call miscompilation R and SciPy hit without them).
using Dpotrf = void (*)(const char*, const int*, double*, const int*, int*, size_t);
using Dpotrs = void (*)(const char*, const int*, const int*, const double*, const int*, double*, const int*, int*,
                        size_t);
using Dpocon = void (*)(const char*, const int*, const double*, const int*, const double*, double*, double*, int*,
                        int*, size_t);
using Dlansy = double (*)(const char*, const char*, const int*, const double*, const int*, double*, size_t, size_t);
using Dgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                       const int*, const double*, const int*, const double*, double*, const int*, size_t, size_t);
using Dtrsm = void (*)(const char*, const char*, const char*, const char*, const int*, const int*, const double*,
                       const double*, const int*, double*, const int*, size_t, size_t, size_t, size_t);
using Dsyrk = void (*)(const char*, const char*, const int*, const int*, const double*, const double*, const int*,
                       const double*, double*, const int*, size_t, size_t);

// LAPACK (and the BLAS under it), loaded privately (RTLD_LOCAL) on first use: linked into the core,
// its dgemm_/sgemm_ would be in the process's global scope and take the place of libtorch's own
// (MKL's) for the engine's matrix products, changing the forward pass's numbers; loaded here, each
// side keeps its BLAS. Debian's alternatives choose the library (OpenBLAS when installed).
struct Lapack {
  void* handle = nullptr;
  Dpotrf dpotrf = nullptr;
  Dpotrs dpotrs = nullptr;
  Dpocon dpocon = nullptr;
  Dlansy dlansy = nullptr;
  Dgemm dgemm = nullptr;
  Dtrsm dtrsm = nullptr;
  Dsyrk dsyrk = nullptr;
  int (*get_threads)() = nullptr;       // OpenBLAS only
  char* (*core_name)() = nullptr;       // OpenBLAS only
  void (*set_threads)(int) = nullptr;   // OpenBLAS only
};

template <typename F>
F symbol(void* handle, const char* name, const std::string& library) {
  void* f = dlsym(handle, name);
  if (!f) fail("linalg: ", library, " has no symbol ", name, " (not a LAPACK library?)");
  return reinterpret_cast<F>(f);
}

// OpenBLAS (built with DYNAMIC_ARCH, as Debian's is) picks its kernels from the CPU's family and
// model; a CPU it does not know (a VM's "Intel(R) Xeon(R) Processor", a generation newer than the
// library) gets its oldest x86-64 kernels ("Prescott": SSE3, 9.5 GFLOP/s in dgemm on this VM's
// AVX-512 CPU against 49 with SkylakeX's). Unless the user chose (OPENBLAS_CORETYPE), name the
// kernels by the instructions the CPU has, before the library is loaded; OpenBLAS reads the
// variable once, at load.
void choose_openblas_kernels() {
  if (std::getenv("OPENBLAS_CORETYPE")) return;
#if defined(__x86_64__)
  __builtin_cpu_init();
  const char* core = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd"))
    core = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    core = "Haswell";
  if (core) ::setenv("OPENBLAS_CORETYPE", core, 0);
#endif
}

const Lapack& lapack() {
  static const Lapack l = [] {
    Lapack r;
    choose_openblas_kernels();
    std::string tried;
    for (const char* name : {"liblapack.so.3", "liblapack.so"}) {
      r.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (r.handle) {
        r.dpotrf = symbol<Dpotrf>(r.handle, "dpotrf_", name);
        r.dpotrs = symbol<Dpotrs>(r.handle, "dpotrs_", name);
        r.dpocon = symbol<Dpocon>(r.handle, "dpocon_", name);
        r.dlansy = symbol<Dlansy>(r.handle, "dlansy_", name);
        r.dgemm = symbol<Dgemm>(r.handle, "dgemm_", name);
        r.dtrsm = symbol<Dtrsm>(r.handle, "dtrsm_", name);
        r.dsyrk = symbol<Dsyrk>(r.handle, "dsyrk_", name);
        r.get_threads = reinterpret_cast<int (*)()>(dlsym(r.handle, "openblas_get_num_threads"));
        r.set_threads = reinterpret_cast<void (*)(int)>(dlsym(r.handle, "openblas_set_num_threads"));
        r.core_name = reinterpret_cast<char* (*)()>(dlsym(r.handle, "openblas_get_corename"));
        return r;
      }
      const char* why = dlerror();
      tried += std::string("\n  ") + name + ": " + (why ? why : "not found");
    }
    fail("linalg: RegMean's solves need LAPACK, which could not be loaded:", tried,
         "\n---> HINT: install it (Debian: apt-get install liblapack3 libopenblas0-pthread; scripts/setup.sh does)");
  }();
  return l;
}

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
  OneBlasThread() : l_(lapack()) {
    if (!l_.get_threads || !l_.set_threads) return;
    saved_ = l_.get_threads();
    if (saved_ != 1) l_.set_threads(1);
  }
  ~OneBlasThread() {
    if (l_.set_threads && saved_ != 1) l_.set_threads(saved_);
  }
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

 private:
  const Lapack& l_;
  int saved_ = 1;
};

// Runs f(i) for i in [0, count) on up to `threads` threads (the caller among them), in any order;
// rethrows the first error. Every call f makes is its own BLAS call on one thread (the caller holds
// a OneBlasThread), so which thread runs which i changes no bit.
template <typename F>
void parallel_for(uint64_t count, int threads, const F& f) {
  const uint64_t workers = std::min<uint64_t>(count, static_cast<uint64_t>(threads > 1 ? threads : 1));
  if (workers <= 1) {
    for (uint64_t i = 0; i < count; ++i) f(i);
    return;
  }
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::exception_ptr> errors(workers);
  auto work = [&](uint64_t w) {
    try {
      for (uint64_t i; !failed && (i = next++) < count;) f(i);
    } catch (...) {
      errors[w] = std::current_exception();
      failed = true;
    }
  };
  std::vector<std::thread> pool;
  for (uint64_t w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// [first, first + size) of the t-th piece of `step` elements out of n.
struct Piece {
  uint64_t first, size;
};
Piece piece(uint64_t t, uint64_t step, uint64_t n) { return {t * step, std::min(step, n - t * step)}; }
uint64_t pieces(uint64_t n, uint64_t step) { return (n + step - 1) / step; }

}  // namespace

double symmetric_norm1(const double* a, uint64_t n) {
  const int ni = lapack_int(n, "dlansy", "n");
  if (ni == 0) return 0;
  const int lda = at_least_one(ni);
  std::vector<double> work(n);
  return lapack().dlansy("1", "L", &ni, a, &lda, work.data(), 1, 1);
}

double cholesky_factor(double* a, uint64_t n, double ridge, int threads) {
  const int ni = lapack_int(n, "dpotrf", "n");
  const int ld = at_least_one(ni);
  if (ridge != 0)
    for (uint64_t i = 0; i < n; ++i) a[i * n + i] += ridge;
  const double anorm = symmetric_norm1(a, n);
  const Lapack& l = lapack();
  const OneBlasThread one;
  const double plus = 1, minus = -1;
  auto tile = [&](uint64_t r, uint64_t c) { return a + r * kTile + c * kTile * n; };  // column-major tiles
  const uint64_t nt = pieces(n, kTile);
  for (uint64_t k = 0; k < nt; ++k) {
    const int kb = static_cast<int>(piece(k, kTile, n).size);
    int info = 0;
    l.dpotrf("L", &kb, tile(k, k), &ld, &info, 1);
    check_info(info, "dpotrf");
    if (info > 0)
      fail("linalg: Cholesky factorization of a ", n, " x ", n, " matrix failed: its leading minor of order ",
           k * kTile + static_cast<uint64_t>(info), " is not positive definite (or not finite), with ", ridge,
           " added to the diagonal\n---> HINT: the Gram matrices may be rank-deficient (too few tokens for the input "
           "width, or dead input channels); a ridge (RegMean's `ridge`, relative to the mean diagonal, e.g. 1e-6) "
           "makes it positive definite");
    const uint64_t below = nt - k - 1;
    // The tiles under the diagonal one: L_ik = A_ik L_kk^-T.
    parallel_for(below, threads, [&](uint64_t t) {
      const int ib = static_cast<int>(piece(k + 1 + t, kTile, n).size);
      l.dtrsm("R", "L", "T", "N", &ib, &kb, &plus, tile(k, k), &ld, tile(k + 1 + t, k), &ld, 1, 1, 1, 1);
    });
    // The trailing lower triangle of tiles: A_ij -= L_ik L_jk^T (j <= i), tile (i, j) numbered
    // i (i + 1) / 2 + j within it.
    parallel_for(below * (below + 1) / 2, threads, [&](uint64_t t) {
      uint64_t i = 0;
      while ((i + 1) * (i + 2) / 2 <= t) ++i;
      const uint64_t j = t - i * (i + 1) / 2;
      const uint64_t ti = k + 1 + i, tj = k + 1 + j;
      const int ib = static_cast<int>(piece(ti, kTile, n).size), jb = static_cast<int>(piece(tj, kTile, n).size);
      if (ti == tj)
        l.dsyrk("L", "N", &ib, &kb, &minus, tile(ti, k), &ld, &plus, tile(ti, ti), &ld, 1, 1);
      else
        l.dgemm("N", "T", &ib, &jb, &kb, &minus, tile(ti, k), &ld, tile(tj, k), &ld, &plus, tile(ti, tj), &ld, 1, 1);
    });
  }
  return anorm;
}

void cholesky_solve(const double* factor, uint64_t n, double* b, uint64_t nrhs, int threads) {
  const int ni = lapack_int(n, "dpotrs", "n");
  lapack_int(nrhs, "dpotrs", "nrhs");
  const int ld = at_least_one(ni);
  const OneBlasThread one;
  parallel_for(pieces(nrhs, kPanel), threads, [&](uint64_t t) {
    const Piece p = piece(t, kPanel, nrhs);
    const int nr = static_cast<int>(p.size);
    int info = 0;
    lapack().dpotrs("L", &ni, &nr, factor, &ld, b + p.first * static_cast<uint64_t>(ld), &ld, &info, 1);
    check_info(info, "dpotrs");
  });
}

double cholesky_rcond(const double* factor, uint64_t n, double anorm) {
  const int ni = lapack_int(n, "dpocon", "n");
  if (ni == 0) return 1;
  const int lda = at_least_one(ni);
  std::vector<double> work(3 * n);
  std::vector<int> iwork(n);
  double rcond = 0;
  int info = 0;
  lapack().dpocon("L", &ni, factor, &lda, &anorm, &rcond, work.data(), iwork.data(), &info, 1);
  check_info(info, "dpocon");
  return rcond;
}

void add_transposed_product(uint64_t m, uint64_t n, uint64_t k, const double* a, uint64_t lda, const double* b,
                            uint64_t ldb, double* c, uint64_t ldc, int threads) {
  const int mi = lapack_int(m, "dgemm", "m"), ki = lapack_int(k, "dgemm", "k");
  lapack_int(n, "dgemm", "n");
  const int la = at_least_one(lapack_int(lda, "dgemm", "lda")), lb = at_least_one(lapack_int(ldb, "dgemm", "ldb"));
  const int lc = at_least_one(lapack_int(ldc, "dgemm", "ldc"));
  if (mi == 0 || n == 0) return;
  const double one = 1;
  const OneBlasThread single;
  parallel_for(pieces(n, kPanel), threads, [&](uint64_t t) {
    const Piece p = piece(t, kPanel, n);
    const int ni = static_cast<int>(p.size);
    lapack().dgemm("T", "N", &mi, &ni, &ki, &one, a, &la, b + p.first * ldb, &lb, &one, c + p.first * ldc, &lc, 1, 1);
  });
}

std::string blas_library() { return lapack().set_threads ? "OpenBLAS" : "reference BLAS"; }

std::string blas_kernels() {
  const Lapack& l = lapack();
  if (!l.core_name) return "";
  const char* name = l.core_name();
  return name ? name : "";
}

int blas_threads() { return lapack().get_threads ? lapack().get_threads() : 1; }

void set_blas_threads(int threads) {
  if (lapack().set_threads) lapack().set_threads(threads);
}

}  // namespace recall::linalg
