// The deterministic merge exchange and its accumulation kernel (weighted sum of rows in fixed
// model order with a wider accumulator).
#include "recall/dist/exchange.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <thread>

#include "recall/dist/mpi_check.h"
#include "recall/util/error.h"

// Bitwise invariance needs the same rounding for every element whichever loop (vectorised body
// or scalar tail) computes it: this file is compiled with -ffp-contract=off (CMakeLists.txt) so
// that w * x + acc is never fused into an FMA, whose single rounding would differ.

namespace recall::dist {

namespace {

bool is_narrow_float(DType t) {
  return t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3 || t == DType::F8_E5M2;
}

// acc[c] = acc[c] + w * x[c] for a row of float or double values.
template <typename T, typename Acc>
void accumulate_wide(const unsigned char* src, size_t cols, Acc w, Acc* acc) {
  for (size_t c = 0; c < cols; ++c) {
    T x;
    std::memcpy(&x, src + sizeof(T) * c, sizeof(T));
    acc[c] = acc[c] + w * static_cast<Acc>(x);
  }
}

// acc[c] = acc[c] + w * x[c] for one row of one model.
template <typename Acc>
void accumulate_row(DType t, const unsigned char* src, size_t cols, Acc w, Acc* acc, float* scratch) {
  switch (t) {
    case DType::BF16:
      for (size_t c = 0; c < cols; ++c) {
        uint16_t h;
        std::memcpy(&h, src + 2 * c, 2);
        const uint32_t u = static_cast<uint32_t>(h) << 16;
        float x;
        std::memcpy(&x, &u, 4);
        acc[c] = acc[c] + w * static_cast<Acc>(x);
      }
      return;
    case DType::F32:
      accumulate_wide<float>(src, cols, w, acc);
      return;
    case DType::F64:
      accumulate_wide<double>(src, cols, w, acc);
      return;
    default:  // F16, F8: exact decode to float first
      decode_to_float(t, src, cols, scratch);
      for (size_t c = 0; c < cols; ++c) acc[c] = acc[c] + w * static_cast<Acc>(scratch[c]);
      return;
  }
}

template <typename Acc>
void store_row(const Acc* acc, size_t cols, DType t, unsigned char* dst) {
  switch (t) {
    case DType::BF16:
      for (size_t c = 0; c < cols; ++c) {
        const uint16_t h = float_to_bf16(static_cast<float>(acc[c]));
        std::memcpy(dst + 2 * c, &h, 2);
      }
      return;
    case DType::F16:
      for (size_t c = 0; c < cols; ++c) {
        const uint16_t h = float_to_f16(static_cast<float>(acc[c]));
        std::memcpy(dst + 2 * c, &h, 2);
      }
      return;
    case DType::F32:
      for (size_t c = 0; c < cols; ++c) {
        const float f = static_cast<float>(acc[c]);
        std::memcpy(dst + 4 * c, &f, 4);
      }
      return;
    default:  // F64
      for (size_t c = 0; c < cols; ++c) {
        const double d = static_cast<double>(acc[c]);
        std::memcpy(dst + 8 * c, &d, 8);
      }
      return;
  }
}

template <typename Acc>
void sum_rows(const void* const* inputs, int models, DType in, const double* weights, size_t first,
              size_t end, size_t cols, DType out_t, void* out) {
  std::vector<Acc> acc(cols);
  std::vector<float> scratch(is_narrow_float(in) ? cols : 0);
  std::vector<Acc> w(weights, weights + models);
  const size_t in_row = cols * dtype_size(in), out_row = cols * dtype_size(out_t);
  for (size_t r = first; r < end; ++r) {
    std::fill(acc.begin(), acc.end(), Acc(0));
    for (int m = 0; m < models; ++m)
      accumulate_row<Acc>(in, static_cast<const unsigned char*>(inputs[m]) + r * in_row, cols, w[m],
                          acc.data(), scratch.data());
    store_row<Acc>(acc.data(), cols, out_t, static_cast<unsigned char*>(out) + r * out_row);
  }
}

}  // namespace

void weighted_sum_rows(const void* const* inputs, int models, DType dtype_in, const double* weights,
                       size_t rows, size_t cols, DType dtype_out, void* out, int threads) {
  if (models < 1) fail("weighted sum: ", models, " models; expected at least 1");
  if (!is_float(dtype_in))
    fail("weighted sum: input dtype ", dtype_name(dtype_in), " is not a float type");
  if (!(dtype_out == DType::F16 || dtype_out == DType::BF16 || dtype_out == DType::F32 ||
        dtype_out == DType::F64))
    fail("weighted sum: output dtype ", dtype_name(dtype_out), "; expected F16, BF16, F32 or F64");
  for (int m = 0; m < models; ++m)
    if (inputs[m] == nullptr && rows * cols > 0) fail("weighted sum: input of model ", m, " is null");
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Below ~64K elements per worker the thread start costs more than it saves.
  threads = static_cast<int>(std::min<size_t>(threads, std::max<size_t>(1, rows * cols / 65536)));
  threads = static_cast<int>(std::min<size_t>(threads, std::max<size_t>(rows, 1)));
  const bool wide = dtype_in == DType::F32 || dtype_in == DType::F64;
  auto run = [&](size_t first, size_t end) {
    if (wide)
      sum_rows<double>(inputs, models, dtype_in, weights, first, end, cols, dtype_out, out);
    else
      sum_rows<float>(inputs, models, dtype_in, weights, first, end, cols, dtype_out, out);
  };
  if (threads == 1) {
    run(0, rows);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        run(rows * t / threads, rows * (t + 1) / threads);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

RowRange merge_exchange_into(Communicator& axis, const Grid& grid, int stage, int world_rank,
                             const ExchangeTensor& t, const std::vector<double>& weights, void* out,
                             ExchangeWorkspace& ws, int threads) {
  const int models = grid.models();
  if (static_cast<int>(weights.size()) != models)
    fail("merge exchange: ", weights.size(), " weights for ", models, " models");
  if (axis.backend() != Backend::Mpi)
    fail("merge exchange: the ", backend_name(axis.backend()),
         " backend is not supported yet (host buffers only); use the MPI backend");
  const std::vector<int> members = grid.model_axis_ranks(stage);
  if (static_cast<int>(members.size()) != axis.size() || members[axis.rank()] != world_rank)
    fail("merge exchange: the communicator (rank ", axis.rank(), " of ", axis.size(),
         ") is not the model axis of stage ", stage, " for world rank ", world_rank);
  if (t.rows < 0 || t.cols < 0) fail("merge exchange: shape [", t.rows, ", ", t.cols, "]");
  // Every member checks only what it owns; the result of the check is agreed before any data
  // moves, so a missing tensor on one rank fails all of them instead of leaving them in a scatter.
  std::string missing;
  for (int m = 0; m < models; ++m)
    if (grid.owner({m, stage}) == world_rank && (!t.local.count(m) || t.local.at(m) == nullptr))
      missing = "rank " + std::to_string(world_rank) + " owns cell m" + std::to_string(m) + ".s" +
                std::to_string(stage) + " but was given no tensor for model " + std::to_string(m);
  int bad = missing.empty() ? 0 : 1, any_bad = 0;
  axis.all_reduce(&bad, &any_bad, 1, DType::I32, ReduceOp::Max);
  if (any_bad) fail("merge exchange at stage ", stage, ": ", missing.empty() ? "another rank of the model axis is missing a tensor" : missing);

  const int P = axis.size();
  std::vector<size_t> counts(P);
  for (int p = 0; p < P; ++p) counts[p] = static_cast<size_t>(row_range(t.rows, P, p).count() * t.cols);
  const RowRange mine = row_range(t.rows, P, axis.rank());
  const size_t my_elems = counts[axis.rank()];
  const size_t in_es = dtype_size(t.dtype_in);
  ws.pieces.resize(std::max<size_t>(ws.pieces.size(), models));
  for (int m = 0; m < models; ++m)
    if (ws.pieces[m].size() < std::max<size_t>(my_elems * in_es, 1)) ws.pieces[m].resize(std::max<size_t>(my_elems * in_es, 1));
  std::vector<const void*> inputs(models);
  for (int m = 0; m < models; ++m) {
    const int owner = grid.owner({m, stage});
    const int root = static_cast<int>(std::find(members.begin(), members.end(), owner) - members.begin());
    const void* src = owner == world_rank ? t.local.at(m) : nullptr;
    axis.scatter_v(src, counts, ws.pieces[m].data(), t.dtype_in, root);
    inputs[m] = ws.pieces[m].data();
  }
  weighted_sum_rows(inputs.data(), models, t.dtype_in, weights.data(), static_cast<size_t>(mine.count()),
                    static_cast<size_t>(t.cols), t.dtype_out, out, threads);
  return mine;
}

MergedRows merge_exchange(Communicator& axis, const Grid& grid, int stage, int world_rank,
                          const ExchangeTensor& t, const std::vector<double>& weights, int threads) {
  ExchangeWorkspace ws;
  MergedRows result;
  const RowRange r = row_range(std::max<int64_t>(t.rows, 0), axis.size(), axis.rank());
  result.bytes.resize(static_cast<size_t>(r.count() * std::max<int64_t>(t.cols, 0)) * dtype_size(t.dtype_out));
  result.rows = merge_exchange_into(axis, grid, stage, world_rank, t, weights, result.bytes.data(), ws, threads);
  return result;
}

}  // namespace recall::dist
