// GoogleTest main for the MPI tests (run by ctest under mpiexec -n 1, 2, 4): initialises MPI,
// runs every test on every rank, then prints each rank's failures in rank order (HighFive's
// MpiFixture style) and makes every rank exit non-zero if any rank failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Collects this rank's failed assertions instead of printing them as they happen (output of
// several ranks would interleave).
class RankLog : public testing::EmptyTestEventListener {
 public:
  // gtest holds its own mutex while calling these, so the test's name is remembered here rather
  // than asked for (UnitTest::current_test_info() inside OnTestPartResult deadlocks).
  void OnTestStart(const testing::TestInfo& t) override {
    current_ = std::string(t.test_suite_name()) + "." + t.name();
  }
  void OnTestEnd(const testing::TestInfo&) override { current_ = "(outside a test)"; }
  void OnTestPartResult(const testing::TestPartResult& r) override {
    if (!r.failed()) return;
    log_ << "  " << current_ << " at " << (r.file_name() ? r.file_name() : "?") << ":"
         << r.line_number() << "\n" << r.summary() << "\n";
  }
  std::string text() const { return log_.str(); }

 private:
  std::ostringstream log_;
  std::string current_ = "(outside a test)";
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  testing::InitGoogleTest(&argc, argv);
  auto& listeners = testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) delete listeners.Release(listeners.default_result_printer());
  auto* log = new RankLog;
  listeners.Append(log);

  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;

  // Every rank's failures, printed by rank 0 in rank order.
  const std::string mine = log->text();
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(size), displs(size);
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  int total = 0;
  for (int p = 0; p < size; ++p) {
    displs[p] = total;
    total += lens[p];
  }
  std::vector<char> all(rank == 0 ? total + 1 : 1);
  MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) {
    for (int p = 0; p < size; ++p)
      if (lens[p] > 0)
        std::printf("---- failures on rank %d of %d ----\n%.*s", p, size, lens[p], all.data() + displs[p]);
    std::printf("mpi tests on %d ranks: %s\n", size, any_failed ? "FAILED (some rank failed)" : "all ranks passed");
    std::fflush(stdout);
  }
  MPI_Finalize();
  return any_failed;
}
