// Failure agreement on 1..4 ranks: one rank throws and every rank gets the same verdict naming
// that rank, its host and cells, the step and the cause; several failing ranks report the first;
// a rank that arrives too late becomes a timeout verdict naming it (abort disabled for the test);
// a failing rank's notice stops the ranks blocked in a transfer with it at once.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <thread>

#include "recall/dist/collectives.h"
#include "recall/dist/context.h"
#include "recall/dist/failure.h"
#include "recall/dist/notice.h"

using namespace recall;
using namespace recall::dist;

namespace {

AgreementOptions test_options(double timeout_s = 30) {
  AgreementOptions o;
  o.timeout_s = timeout_s;
  o.abort_on_timeout = false;
  return o;
}

}  // namespace

TEST(MpiFailure, AllSucceedReturnsTheValueOnEveryRank) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  const int v = run_collectively(ctx.control_mpi(), ctx.where(), "compute", [&] { return ctx.rank() * 2; },
                                 test_options());
  EXPECT_EQ(v, ctx.rank() * 2);
  const Verdict ok = agree(ctx.control_mpi(), ctx.where(), "noop", "", test_options());
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.failed_ranks, 0);
  EXPECT_EQ(ok.first_failed_rank, -1);
}

TEST(MpiFailure, OneRankThrowsEveryRankGetsItsMessage) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  GridSpec spec;
  spec.models = 2;
  spec.stages = 2;
  spec.block_bytes = {1, 1, 1, 1};
  ctx.set_grid(Grid(spec, ctx.world()));
  const int bad = ctx.world() - 1;
  // What the failing rank will say about itself, known to all for the check.
  const std::string bad_where = "rank " + std::to_string(bad) + " (host " + ctx.host() + ", cells " +
                                ctx.grid().describe_cells(bad) + ")";
  try {
    run_collectively(ctx.control_mpi(), ctx.where(), "loading shards", [&] {
      if (ctx.rank() == bad) throw Error("tensor 'model.layers.3.mlp.up_proj.weight' has wrong shape");
    }, test_options());
    FAIL() << "expected a CollectiveError on rank " << ctx.rank();
  } catch (const CollectiveError& e) {
    const std::string expected = "step 'loading shards': " + bad_where +
                                 " failed: tensor 'model.layers.3.mlp.up_proj.weight' has wrong shape" +
                                 (ctx.world() > 1 ? " (1 of " + std::to_string(ctx.world()) + " ranks failed)" : "");
    EXPECT_EQ(std::string(e.what()), expected);
    EXPECT_EQ(e.verdict().status, Verdict::Status::Failed);
    EXPECT_EQ(e.verdict().first_failed_rank, bad);
    EXPECT_EQ(e.verdict().failed_ranks, 1);
    EXPECT_EQ(report_failure(ctx.control_mpi(), e), 1);
  }
}

TEST(MpiFailure, SeveralFailuresReportTheFirstRank) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  const Verdict v = agree(ctx.control_mpi(), ctx.where(), "merge",
                          ctx.rank() % 2 == 1 || ctx.world() == 1 ? "out of memory on rank " + std::to_string(ctx.rank()) : "",
                          test_options());
  const int first = ctx.world() == 1 ? 0 : 1;
  const int count = ctx.world() == 1 ? 1 : ctx.world() / 2;
  EXPECT_EQ(v.status, Verdict::Status::Failed);
  EXPECT_EQ(v.first_failed_rank, first);
  EXPECT_EQ(v.failed_ranks, count);
  EXPECT_NE(v.message.find("out of memory on rank " + std::to_string(first)), std::string::npos) << v.message;
}

TEST(MpiFailure, SilentRankBecomesATimeoutNamingIt) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  if (ctx.world() < 2) GTEST_SKIP() << "needs a second rank to go silent";
  const int late = ctx.world() - 1;
  const auto t0 = std::chrono::steady_clock::now();
  if (ctx.rank() == late) std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const Verdict v = agree(ctx.control_mpi(), ctx.where(), "forward", "", test_options(0.5));
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(v.status, Verdict::Status::Timeout);
  EXPECT_EQ(v.not_answering, std::vector<int>{late});
  EXPECT_EQ(v.message, "step 'forward': no answer within 0.5 s from rank " + std::to_string(late) +
                           " (crashed, hung, or never reached this step)");
  // The ranks that were on time learned of the timeout well before the late rank showed up.
  if (ctx.rank() != 0 && ctx.rank() != late) {
    EXPECT_LT(waited, 2.0) << "rank " << ctx.rank();
  }
  // Keep the next test from starting while the late rank is still catching up.
  MPI_Barrier(ctx.control_mpi());
}

// The pipelined extraction's failure: the last rank throws while the others wait in a transfer with
// it (even ranks in a receive, odd ranks in a 1 MiB send, above every eager limit) that never
// completes. Its notice stops them within seconds (without it they waited there forever: the
// agreement's deadline passes with abort disabled, and rank 0 then waits for their records), the
// verdict names the failing rank alone, and no notice is left over for the next agreement.
TEST(MpiFailure, NoticeStopsTheRanksBlockedInATransferWithTheFailedOne) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  if (ctx.world() < 2) GTEST_SKIP() << "needs a rank to fail and one to wait for it";
  const int bad = ctx.world() - 1;
  const auto t0 = std::chrono::steady_clock::now();
  double waited = -1;
  int noticed = -1;
  std::vector<char> buffer(size_t{1} << 20, 'x');
  // A communicator of its own: the given-up send stays unmatched at the failed rank for good.
  MPI_Comm transfers = MPI_COMM_NULL;
  MPI_Comm_dup(ctx.world_mpi(), &transfers);
  try {
    run_collectively(ctx.control_mpi(), ctx.where(), "typical samples", [&] {
      if (ctx.rank() == bad) throw Error("fault injection: rank " + std::to_string(bad) + " fails");
      try {
        if (ctx.rank() % 2 == 0) recv_bytes(transfers, buffer.data(), buffer.size(), bad, 11);
        else send_bytes(transfers, buffer.data(), buffer.size(), bad, 11);
      } catch (const PeerFailedError& e) {
        waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        noticed = e.failed_rank();
        throw;
      }
      ADD_FAILURE() << "rank " << ctx.rank() << ": the transfer with the failed rank completed";
    }, test_options());
    ADD_FAILURE() << "expected a CollectiveError on rank " << ctx.rank();
  } catch (const CollectiveError& e) {
    EXPECT_EQ(e.verdict().first_failed_rank, bad);
    EXPECT_EQ(e.verdict().failed_ranks, 1);
    const std::string expected = "step 'typical samples': rank " + std::to_string(bad) + " (host " + ctx.host() +
                                 ") failed: fault injection: rank " + std::to_string(bad) + " fails (1 of " +
                                 std::to_string(ctx.world()) + " ranks failed)";
    EXPECT_EQ(std::string(e.what()), expected);
  }
  if (ctx.rank() != bad) {
    EXPECT_EQ(noticed, bad) << "rank " << ctx.rank();
    EXPECT_GE(waited, 0.0) << "rank " << ctx.rank();
    EXPECT_LT(waited, 5.0) << "rank " << ctx.rank();
  }
  // Every notice was received after the verdict: none is pending, and the next agreement is clean.
  EXPECT_EQ(pending_failure_notice(), -1) << "rank " << ctx.rank();
  const Verdict next = agree(ctx.control_mpi(), ctx.where(), "next", "", test_options());
  EXPECT_TRUE(next.ok()) << next.message;
  EXPECT_FALSE(take_stopped_by_notice());
  MPI_Comm_free(&transfers);
}
