// The typed host collectives (recall/dist/collectives.h) on 1..4 ranks: all-reduce of int, uint64
// and double vectors (sum/max/min, in one call and in rounds), all-gather of fixed-size records in
// rank order, all-gather of byte strings of unequal (and empty) sizes; unequal lengths fail on
// every rank with one message instead of corrupting memory inside MPI.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>

#include "mpi_world.h"
#include "recall/dist/collectives.h"
#include "recall/util/error.h"

using namespace recall;
using namespace recall::dist;

namespace {

// One call, and rounds of at most 3 elements per call.
std::vector<CommOptions> option_sets() {
  CommOptions rounds;
  rounds.max_elements_per_call = 3;
  return {CommOptions{}, rounds};
}

// Rank r's bytes: (r * 3 + 1) % 5 letters (empty on rank 3 of 4), 'a' + r repeated.
std::string piece(int r) { return std::string(static_cast<size_t>((r * 3 + 1) % 5), static_cast<char>('a' + r)); }

}  // namespace

TEST(MpiCollectives, AllReduceSumMaxMinOfEachType) {
  const int me = world_rank(), P = world_size();
  for (const CommOptions& opt : option_sets()) {
    std::vector<uint64_t> u(10), umax(10);
    std::vector<int> i(10);
    std::vector<double> d(10);
    for (size_t k = 0; k < 10; ++k) {
      u[k] = (uint64_t{1} << 40) + k * 1000 + static_cast<uint64_t>(me);  // beyond 32 bits
      umax[k] = me == static_cast<int>(k) % P ? 0xfedcba9876543210ull - k : 0;  // one rank's value, zero elsewhere
      i[k] = me - static_cast<int>(k);
      d[k] = 0.5 * me + static_cast<double>(k);
    }
    all_reduce(MPI_COMM_WORLD, u, ReduceOp::Sum, opt);
    all_reduce(MPI_COMM_WORLD, umax, ReduceOp::Max, opt);
    all_reduce(MPI_COMM_WORLD, i, ReduceOp::Min, opt);
    all_reduce(MPI_COMM_WORLD, d, ReduceOp::Max, opt);
    const uint64_t rank_sum = static_cast<uint64_t>(P) * (P - 1) / 2;
    for (size_t k = 0; k < 10; ++k) {
      EXPECT_EQ(u[k], P * ((uint64_t{1} << 40) + k * 1000) + rank_sum) << k;
      EXPECT_EQ(umax[k], 0xfedcba9876543210ull - k) << k;
      EXPECT_EQ(i[k], -static_cast<int>(k)) << k;
      EXPECT_EQ(d[k], 0.5 * (P - 1) + static_cast<double>(k)) << k;
    }
  }
  EXPECT_EQ(all_reduce(MPI_COMM_WORLD, uint64_t{3}, ReduceOp::Sum), 3u * static_cast<uint64_t>(P));
  EXPECT_EQ(all_reduce(MPI_COMM_WORLD, me, ReduceOp::Max), P - 1);
}

TEST(MpiCollectives, AllReduceOfUnequalLengthsFailsOnEveryRank) {
  const int me = world_rank(), P = world_size();
  if (P < 2) GTEST_SKIP() << "needs 2 ranks";
  std::vector<uint64_t> v(me == 1 ? 2 : 3, 1);
  try {
    all_reduce(MPI_COMM_WORLD, v, ReduceOp::Sum);
    FAIL() << "expected an error on rank " << me;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "all-reduce: rank 1 passes 2 values and rank 0 passes 3; every rank must pass the same number");
  }
}

TEST(MpiCollectives, AllGatherRecordsInRankOrder) {
  const int me = world_rank(), P = world_size();
  for (const CommOptions& opt : option_sets()) {
    const std::vector<double> loop = {1.0 * me, 10.0 + me, 100.0 + me};
    const std::vector<double> loops = all_gather(MPI_COMM_WORLD, loop, opt);
    ASSERT_EQ(loops.size(), 3u * static_cast<size_t>(P));
    const std::vector<uint64_t> mem = {uint64_t{1} << 33, static_cast<uint64_t>(me), 7, 8};
    const std::vector<uint64_t> mems = all_gather(MPI_COMM_WORLD, mem, opt);
    ASSERT_EQ(mems.size(), 4u * static_cast<size_t>(P));
    for (int r = 0; r < P; ++r) {
      EXPECT_EQ(loops[3 * r], 1.0 * r);
      EXPECT_EQ(loops[3 * r + 1], 10.0 + r);
      EXPECT_EQ(loops[3 * r + 2], 100.0 + r);
      EXPECT_EQ(mems[4 * r], uint64_t{1} << 33);
      EXPECT_EQ(mems[4 * r + 1], static_cast<uint64_t>(r));
      EXPECT_EQ(mems[4 * r + 3], 8u);
    }
  }
  EXPECT_TRUE(all_gather(MPI_COMM_WORLD, std::vector<int>{}).empty());
}

TEST(MpiCollectives, AllGatherOfUnequalRecordsFailsOnEveryRank) {
  const int me = world_rank(), P = world_size();
  if (P < 2) GTEST_SKIP() << "needs 2 ranks";
  const std::vector<int> mine(me == P - 1 ? 1 : 2, me);
  try {
    all_gather(MPI_COMM_WORLD, mine);
    FAIL() << "expected an error on rank " << me;
  } catch (const Error& e) {
    const std::string expected = "all-gather: rank " + std::to_string(P - 1) + " passes 1 values and "
                                 "rank 0 passes 2; every rank must pass the same number";
    EXPECT_EQ(std::string(e.what()), expected);
  }
}

TEST(MpiCollectives, AllGatherBytesOfAnySizesInRankOrder) {
  const int me = world_rank(), P = world_size();
  std::string expected;
  for (int r = 0; r < P; ++r) expected += piece(r);
  for (const CommOptions& opt : option_sets()) {
    EXPECT_EQ(all_gather_bytes(MPI_COMM_WORLD, piece(me), opt), expected);
    EXPECT_EQ(all_gather_bytes(MPI_COMM_WORLD, "", opt), "");
    // Binary bytes (zeros and high bits) come back as they went.
    const std::string bin = {'\0', static_cast<char>(0xff), static_cast<char>(me)};
    const std::string all = all_gather_bytes(MPI_COMM_WORLD, bin, opt);
    ASSERT_EQ(all.size(), 3u * static_cast<size_t>(P));
    for (int r = 0; r < P; ++r) EXPECT_EQ(all.substr(3 * r, 3), std::string({'\0', static_cast<char>(0xff), static_cast<char>(r)}));
  }
}
