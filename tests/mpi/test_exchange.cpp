// Bitwise invariance of the merge exchange across world sizes: every rank computes the
// single-process weighted sum of the full tensors and compares a checksum of it with the
// checksum of the distributed result, gathered along each stage's model axis. ctest runs this on
// 1, 2 and 4 ranks, so the merged bytes are proven identical on every layout.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>

#include "recall/dist/context.h"
#include "recall/dist/exchange.h"
#include "recall/util/error.h"

using namespace recall;
using namespace recall::dist;

namespace {

// Deterministic values with a spread of magnitudes (so rounding matters), per (model, stage).
std::vector<uint8_t> make_tensor(int model, int stage, int64_t rows, int64_t cols, DType t) {
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols) * dtype_size(t));
  uint64_t x = 0x9E3779B97F4A7C15ull * (model * 131 + stage * 7 + 1);
  for (int64_t i = 0; i < rows * cols; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const double v = (static_cast<double>(x % 2000001) / 1000000.0 - 1.0) * std::ldexp(1.0, static_cast<int>(x % 11) - 5);
    if (t == DType::BF16) {
      const uint16_t h = float_to_bf16(static_cast<float>(v));
      std::memcpy(&bytes[2 * i], &h, 2);
    } else {
      const float f = static_cast<float>(v);
      std::memcpy(&bytes[4 * i], &f, 4);
    }
  }
  return bytes;
}

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct Case {
  DType in, out;
  int64_t rows, cols;
};

}  // namespace

TEST(MpiExchange, MergedBytesAreIdenticalForEveryWorldSize) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  GridSpec spec;
  spec.models = 3;
  spec.stages = 2;
  spec.block_bytes = {10, 10, 10, 10};
  const Grid grid(spec, ctx.world());
  ctx.set_grid(grid);
  const std::vector<double> weights = {0.2137, 0.5, 0.2863};
  ExchangeWorkspace ws;

  for (const Case& c : {Case{DType::BF16, DType::BF16, 37, 29}, Case{DType::F32, DType::F32, 5, 1000},
                        Case{DType::BF16, DType::F32, 3, 7}, Case{DType::F32, DType::BF16, 1, 64}}) {
    for (int s = 0; s < grid.stages(); ++s) {
      // Everyone builds all models' tensors for the reference; the exchange only sees the owned ones.
      std::vector<std::vector<uint8_t>> full;
      std::vector<const void*> ptrs;
      for (int m = 0; m < grid.models(); ++m) full.push_back(make_tensor(m, s, c.rows, c.cols, c.in));
      for (auto& f : full) ptrs.push_back(f.data());
      const size_t out_es = dtype_size(c.out);
      std::vector<uint8_t> reference(static_cast<size_t>(c.rows * c.cols) * out_es);
      weighted_sum_rows(ptrs.data(), grid.models(), c.in, weights.data(), c.rows, c.cols, c.out,
                        reference.data());

      if (!ctx.in_model_axis(s)) continue;
      ExchangeTensor t;
      t.rows = c.rows;
      t.cols = c.cols;
      t.dtype_in = c.in;
      t.dtype_out = c.out;
      for (int m = 0; m < grid.models(); ++m)
        if (grid.owner({m, s}) == ctx.rank()) t.local[m] = full[m].data();
      Communicator& axis = ctx.model_axis(s);
      const MergedRows mine = merge_exchange(axis, grid, s, ctx.rank(), t, weights, /*threads=*/2);
      ASSERT_EQ(mine.rows.first, row_range(c.rows, axis.size(), axis.rank()).first);
      ASSERT_EQ(mine.bytes.size(), static_cast<size_t>(mine.rows.count() * c.cols) * out_es);
      std::vector<uint8_t> gathered(reference.size());
      axis.all_gather_v(mine.bytes.data(), mine.bytes.size(), gathered.data(), gathered.size(), DType::U8);
      EXPECT_EQ(fnv1a(gathered.data(), gathered.size()), fnv1a(reference.data(), reference.size()))
          << "stage " << s << " " << dtype_name(c.in) << "->" << dtype_name(c.out) << " on "
          << ctx.world() << " ranks (axis of " << axis.size() << ")";
      ASSERT_EQ(gathered, reference);
      // The workspace variant, one workspace reused over tensors of every size, gives the same.
      std::vector<uint8_t> again(mine.bytes.size() + 1, 0xAB);
      const RowRange r = merge_exchange_into(axis, grid, s, ctx.rank(), t, weights, again.data(), ws);
      ASSERT_EQ(r.first, mine.rows.first);
      ASSERT_EQ(again.back(), 0xAB) << "wrote past the rows";
      again.pop_back();
      ASSERT_EQ(again, mine.bytes);
    }
  }
}

TEST(MpiExchange, MissingOwnedTensorFailsEveryMember) {
  int argc = 0;
  char** argv = nullptr;
  Context ctx(&argc, &argv);
  GridSpec spec;
  spec.models = 2;
  spec.stages = 1;
  spec.block_bytes = {10};
  if (ctx.world() > 2) GTEST_SKIP() << "grid of 2 cells";
  const Grid grid(spec, ctx.world());
  ctx.set_grid(grid);
  std::vector<uint8_t> data(4 * 4 * 2);
  ExchangeTensor t;
  t.rows = 4;
  t.cols = 4;
  // Model 1's owner "forgets" its tensor.
  if (grid.owner({0, 0}) == ctx.rank()) t.local[0] = data.data();
  try {
    merge_exchange(ctx.model_axis(0), grid, 0, ctx.rank(), t, {0.5, 0.5});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string want_owner = "merge exchange at stage 0: rank " + std::to_string(grid.owner({1, 0})) +
                                   " owns cell m1.s0 but was given no tensor for model 1";
    const std::string want_other =
        "merge exchange at stage 0: another rank of the model axis is missing a tensor";
    EXPECT_EQ(std::string(e.what()), grid.owner({1, 0}) == ctx.rank() ? want_owner : want_other);
  }
}
