// The MPI communicator backend on 1..4 ranks: all-gather-v content and rank order with unequal
// (and empty) pieces, in one call and split into rounds, blocking and under the watchdog;
// broadcast, all-reduce, scatter-v, send/recv and barrier.
#include <gtest/gtest.h>
#include <mpi.h>

#include <numeric>

#include "mpi_world.h"
#include "recall/dist/comm.h"
#include "recall/util/error.h"

using namespace recall;
using namespace recall::dist;

namespace {

// Rank r contributes (r * 3 + 1) % 5 elements (so some ranks contribute 0 on 4 ranks: r = 3
// gives 10 % 5 = 0), valued 1000 * r + i.
size_t piece_size(int r) { return static_cast<size_t>((r * 3 + 1) % 5); }
float piece_value(int r, size_t i) { return 1000.0f * r + static_cast<float>(i); }

std::vector<CommOptions> option_sets() {
  CommOptions blocking;
  CommOptions watchdog;
  watchdog.timeout_s = 60;
  CommOptions rounds;  // forces several rounds through the staging buffer
  rounds.max_elements_per_call = 3;
  CommOptions rounds_watchdog = rounds;
  rounds_watchdog.timeout_s = 60;
  return {blocking, watchdog, rounds, rounds_watchdog};
}

}  // namespace

TEST(MpiComm, AllGatherUnequalSizesInRankOrder) {
  const int me = world_rank(), P = world_size();
  for (const CommOptions& opt : option_sets()) {
    auto comm = make_mpi_communicator(MPI_COMM_WORLD, opt);
    ASSERT_EQ(comm->rank(), me);
    ASSERT_EQ(comm->size(), P);
    std::vector<float> mine(piece_size(me));
    for (size_t i = 0; i < mine.size(); ++i) mine[i] = piece_value(me, i);
    std::vector<float> all(64, -1.0f);
    const std::vector<size_t> counts = comm->all_gather_v(mine.data(), mine.size(), all.data(), all.size(), DType::F32);
    ASSERT_EQ(counts.size(), static_cast<size_t>(P));
    size_t k = 0;
    for (int r = 0; r < P; ++r) {
      ASSERT_EQ(counts[r], piece_size(r));
      for (size_t i = 0; i < counts[r]; ++i, ++k)
        ASSERT_EQ(all[k], piece_value(r, i)) << "rank " << r << " element " << i
                                             << " max_elements_per_call " << opt.max_elements_per_call;
    }
    for (; k < all.size(); ++k) ASSERT_EQ(all[k], -1.0f) << "wrote past the pieces at " << k;
  }
}

TEST(MpiComm, AllGatherEqualSizesBf16Bits) {
  const int me = world_rank(), P = world_size();
  auto comm = make_mpi_communicator(MPI_COMM_WORLD);
  std::vector<uint16_t> mine(7);
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = float_to_bf16(0.5f * me + i);
  std::vector<uint16_t> all(7 * P);
  comm->all_gather_v(mine.data(), all.data(), std::vector<size_t>(P, 7), DType::BF16);
  for (int r = 0; r < P; ++r)
    for (size_t i = 0; i < 7; ++i) ASSERT_EQ(all[r * 7 + i], float_to_bf16(0.5f * r + i));
}

TEST(MpiComm, AllGatherReceiveBufferTooSmallFailsOnEveryRank) {
  auto comm = make_mpi_communicator(MPI_COMM_WORLD);
  std::vector<float> mine(4), all(4 * world_size() - 1);
  try {
    comm->all_gather_v(mine.data(), mine.size(), all.data(), all.size(), DType::F32);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "all-gather: the pieces total " + std::to_string(4 * world_size()) +
                                         " elements but the receive buffer holds " +
                                         std::to_string(all.size()));
  }
}

TEST(MpiComm, BroadcastAndAllReduce) {
  const int me = world_rank(), P = world_size();
  for (const CommOptions& opt : option_sets()) {
    auto comm = make_mpi_communicator(MPI_COMM_WORLD, opt);
    std::vector<double> b(10, me == P - 1 ? 0.0 : -7.0);
    if (me == P - 1) std::iota(b.begin(), b.end(), 3.0);
    comm->broadcast(b.data(), b.size(), DType::F64, P - 1);
    for (size_t i = 0; i < b.size(); ++i) ASSERT_EQ(b[i], 3.0 + i);

    std::vector<int64_t> x(5), sum(5), mx(5), mn(5);
    for (int i = 0; i < 5; ++i) x[i] = (me + 1) * (i + 1) * (i % 2 ? -1 : 1);
    comm->all_reduce(x.data(), sum.data(), 5, DType::I64, ReduceOp::Sum);
    comm->all_reduce(x.data(), mx.data(), 5, DType::I64, ReduceOp::Max);
    comm->all_reduce(x.data(), mn.data(), 5, DType::I64, ReduceOp::Min);
    const int64_t ranks_sum = static_cast<int64_t>(P) * (P + 1) / 2;
    for (int i = 0; i < 5; ++i) {
      const int64_t sign = i % 2 ? -1 : 1;
      ASSERT_EQ(sum[i], ranks_sum * (i + 1) * sign);
      ASSERT_EQ(mx[i], sign > 0 ? P * (i + 1) : -(i + 1));
      ASSERT_EQ(mn[i], sign > 0 ? (i + 1) : -P * (i + 1));
    }
    std::vector<float> inplace(4, 1.5f);
    comm->all_reduce(inplace.data(), inplace.data(), 4, DType::F32, ReduceOp::Sum);
    for (float v : inplace) ASSERT_EQ(v, 1.5f * P);
  }
}

TEST(MpiComm, AllReduceOfBf16IsRefused) {
  auto comm = make_mpi_communicator(MPI_COMM_WORLD);
  uint16_t x = 0;
  try {
    comm->all_reduce(&x, &x, 1, DType::BF16, ReduceOp::Sum);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "mpi backend: all-reduce of BF16 is not supported (MPI has no such arithmetic type); reduce in F32");
  }
}

TEST(MpiComm, ScatterVFromEveryRoot) {
  const int me = world_rank(), P = world_size();
  for (const CommOptions& opt : option_sets()) {
    auto comm = make_mpi_communicator(MPI_COMM_WORLD, opt);
    std::vector<size_t> counts(P);
    for (int r = 0; r < P; ++r) counts[r] = piece_size(r);
    for (int root = 0; root < P; ++root) {
      std::vector<float> send;
      if (me == root)
        for (int r = 0; r < P; ++r)
          for (size_t i = 0; i < counts[r]; ++i) send.push_back(piece_value(r, i) + 0.25f * root);
      std::vector<float> got(counts[me] + 1, -1.0f);
      comm->scatter_v(send.data(), counts, got.data(), DType::F32, root);
      for (size_t i = 0; i < counts[me]; ++i) ASSERT_EQ(got[i], piece_value(me, i) + 0.25f * root);
      ASSERT_EQ(got[counts[me]], -1.0f);
    }
  }
}

TEST(MpiComm, SendRecvRingAndBarrier) {
  const int me = world_rank(), P = world_size();
  if (P < 2) GTEST_SKIP() << "needs 2 ranks";
  for (const CommOptions& opt : option_sets()) {
    auto comm = make_mpi_communicator(MPI_COMM_WORLD, opt);
    std::vector<int32_t> out(9, me), in(9, -1);
    const int next = (me + 1) % P, prev = (me + P - 1) % P;
    // Even ranks send first, odd ranks receive first: no cycle of blocking sends.
    if (me % 2 == 0) {
      comm->send(out.data(), out.size(), DType::I32, next);
      comm->recv(in.data(), in.size(), DType::I32, prev);
    } else {
      comm->recv(in.data(), in.size(), DType::I32, prev);
      comm->send(out.data(), out.size(), DType::I32, next);
    }
    for (int32_t v : in) ASSERT_EQ(v, prev);
    comm->barrier();
  }
}
