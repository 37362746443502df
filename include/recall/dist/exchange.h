// The deterministic merge exchange: the rows of a merged tensor [R, C] are split among the ranks
// of a stage's model axis; each rank receives its rows from every model and accumulates
// sum_m w_m * row_m in fixed model order with a wider accumulator. Every output element is
// computed by the same sequence of operations whatever the world size or layout, so the merged
// bytes are bitwise identical for every world size on one device type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "recall/dist/comm.h"
#include "recall/dist/grid.h"
#include "recall/util/dtype.h"

namespace recall::dist {

// out[r, c] = sum over m = 0..models-1, in that order, of weights[m] * inputs[m][r, c].
// inputs: `models` pointers to row-major [rows, cols] arrays of dtype_in (F16, BF16, F8_E4M3,
// F8_E5M2, F32 or F64). The accumulator is float for 16- and 8-bit inputs and double for F32/F64
// (weights are rounded to it once); the result is rounded to dtype_out (F16, BF16, F32 or F64;
// F16/BF16 with round-to-nearest-even) and written row-major to `out`. Rows are split among
// `threads` workers (0 = all cores); each element's arithmetic is the same for any split.
void weighted_sum_rows(const void* const* inputs, int models, DType dtype_in, const double* weights,
                       size_t rows, size_t cols, DType dtype_out, void* out, int threads = 1);

// This rank's share of one merged tensor after the exchange.
struct MergedRows {
  RowRange rows;               // rows of the full tensor held here
  std::vector<uint8_t> bytes;  // rows.count() x cols elements of dtype_out, row-major
};

struct ExchangeTensor {
  int64_t rows = 0, cols = 0;  // the tensor's shape as [rows, cols] (1-D tensors: [1, n] or [n, 1])
  DType dtype_in = DType::BF16;
  DType dtype_out = DType::BF16;
  // model -> the full [rows, cols] tensor of that model, for every model whose cell (m, stage)
  // this rank owns (host memory; the MPI backend). Other models' entries are ignored.
  std::map<int, const void*> local;
};

// Receive buffers of the exchange, kept between tensors: fresh memory costs a page fault per
// 4 KiB on first touch, which measured here more than the scatter itself.
struct ExchangeWorkspace {
  std::vector<std::vector<uint8_t>> pieces;  // one per model, grown as needed, never shrunk
};

// Collective over the model axis of `stage` (Context::model_axis(stage)): for each model in
// order, the owner of cell (model, stage) scatters the rows to the members (row_range over the
// axis size, by axis rank); each member accumulates its rows with weighted_sum_rows into `out`
// (row_range(rows, axis size, axis rank).count() x cols elements of dtype_out), and the range is
// returned. `weights` has grid.models() entries. Fails on every member alike if a tensor that a
// member owns is missing.
RowRange merge_exchange_into(Communicator& model_axis, const Grid& grid, int stage, int world_rank,
                             const ExchangeTensor& tensor, const std::vector<double>& weights,
                             void* out, ExchangeWorkspace& workspace, int threads = 1);

// The same, allocating the workspace and the result.
MergedRows merge_exchange(Communicator& model_axis, const Grid& grid, int stage, int world_rank,
                          const ExchangeTensor& tensor, const std::vector<double>& weights,
                          int threads = 1);

}  // namespace recall::dist
