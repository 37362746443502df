// The merge phase: per-tensor weights, row split, merge kernels, collective HDF5 writes.
#include "recall/pipeline/merge_tensors.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "recall/merge/methods.h"
#include "recall/merge/weights.h"
#include "recall/util/error.h"

namespace recall {

namespace {

// Bytes of one input's rows read per step; bounds memory at (M + 1) x this per rank.
constexpr uint64_t kChunkBytes = 64ull << 20;

// Index of the first NaN or infinity among n elements of a float dtype, or -1. Checked on the
// bytes the merge reads anyway, so a corrupt input is named instead of silently propagated.
int64_t first_non_finite(DType t, const uint8_t* p, uint64_t n) {
  auto scan16 = [&](uint16_t exp_mask) -> int64_t {
    for (uint64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      if ((v & exp_mask) == exp_mask) return static_cast<int64_t>(i);
    }
    return -1;
  };
  switch (t) {
    case DType::BF16: return scan16(0x7f80);
    case DType::F16: return scan16(0x7c00);
    case DType::F32:
      for (uint64_t i = 0; i < n; ++i) {
        uint32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        if ((v & 0x7f800000u) == 0x7f800000u) return static_cast<int64_t>(i);
      }
      return -1;
    default: {
      std::vector<float> f(n);
      decode_to_float(t, p, n, f.data());
      for (uint64_t i = 0; i < n; ++i)
        if (!std::isfinite(f[i])) return static_cast<int64_t>(i);
      return -1;
    }
  }
}

std::string position(const std::vector<int64_t>& shape, uint64_t flat) {
  std::vector<uint64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % static_cast<uint64_t>(shape[d]);
    flat /= static_cast<uint64_t>(shape[d]);
  }
  std::string s = "[";
  for (size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

uint64_t rows_of(const std::vector<int64_t>& shape) { return shape.empty() ? 1 : static_cast<uint64_t>(shape[0]); }

uint64_t row_elems(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= static_cast<uint64_t>(shape[i]);
  return n;
}

}  // namespace

DType output_dtype(const MergeConfig& c) {
  const auto t = parse_torch_dtype(c.output.dtype);
  if (t && (*t == DType::BF16 || *t == DType::F16 || *t == DType::F32)) return *t;
  fail("output.dtype '", c.output.dtype, "' is not one of bfloat16, float16, float32");
}

std::pair<uint64_t, uint64_t> row_range(uint64_t rows, int rank, int world) {
  const uint64_t w = static_cast<uint64_t>(world), r = static_cast<uint64_t>(rank);
  return {rows * r / w, rows * (r + 1) / w};
}

bool whole_tensor_method(const std::string& m) {
  return m == "ties" || m == "dare_linear" || m == "dare_ties" || m == "slerp";
}

std::vector<std::vector<double>> slot_weights(const MergeConfig& c, const MergeInputs& in,
                                              const std::vector<std::vector<double>>& block_weights) {
  const size_t M = in.models.size();
  std::vector<std::vector<double>> out;
  for (const TensorSlot& slot : in.slots) {
    if (c.method == "recall") {
      out.push_back(tensor_weights(parse_non_block_policy(c.recall.non_block), slot.role, slot.block,
                                   block_weights, static_cast<int64_t>(in.reference)));
    } else {
      out.push_back(c.params.weight.empty() ? std::vector<double>(M, 1.0) : c.params.weight);
    }
  }
  return out;
}

MergeStats merge_into_h5(H5Writer& h5, MPI_Comm comm, const MergeConfig& c, const MergeInputs& in,
                         const std::vector<std::vector<double>>& weights, bool resume,
                         const std::set<std::string>& done,
                         const std::function<void(const std::string&)>& on_tensor_done) {
  const auto t0 = std::chrono::steady_clock::now();
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const DType out_dtype = output_dtype(c);
  const size_t M = in.models.size();
  const MergeMethod method = parse_merge_method(c.method);
  const bool whole = whole_tensor_method(c.method);
  MergeStats stats;

  if (!resume) {
    h5.create_group("/tensors");
    for (const TensorSlot& slot : in.slots) h5.create_dataset("/tensors/" + slot.name, out_dtype, slot.shape);
  }

  // Task-vector methods: the base and the other models in config order.
  std::vector<size_t> task_models;
  std::vector<double> task_weights;
  for (size_t m = 0; m < M; ++m)
    if (!in.base || m != *in.base) {
      task_models.push_back(m);
      task_weights.push_back(c.params.weight.empty() ? 1.0 : c.params.weight[m]);
    }

  std::vector<std::vector<uint8_t>> inputs(M);
  std::vector<uint8_t> out;
  for (size_t t = 0; t < in.slots.size(); ++t) {
    const TensorSlot& slot = in.slots[t];
    if (done.count(slot.name)) continue;  // same decision on every rank: `done` is broadcast
    const uint64_t rows = rows_of(slot.shape), elems = row_elems(slot.shape);
    // This rank's rows, and the chunking every rank agrees on (same number of collective writes).
    uint64_t begin, end;
    if (whole) {
      const bool mine = static_cast<int>(t % static_cast<size_t>(world)) == rank;
      begin = 0;
      end = mine ? rows : 0;
    } else {
      std::tie(begin, end) = row_range(rows, rank, world);
    }
    const uint64_t max_rows = whole ? rows : (rows + world - 1) / world;
    uint64_t widest_row = 0;
    for (size_t m = 0; m < M; ++m)
      widest_row = std::max<uint64_t>(widest_row, elems * dtype_size(in.models[m].checkpoint.at(slot.name).info->dtype));
    const uint64_t rows_per_chunk =
        whole ? std::max<uint64_t>(rows, 1) : std::max<uint64_t>(1, kChunkBytes / std::max<uint64_t>(widest_row, 1));
    const uint64_t chunks = std::max<uint64_t>(1, (max_rows + rows_per_chunk - 1) / rows_per_chunk);

    for (uint64_t ch = 0; ch < chunks; ++ch) {
      const uint64_t r0 = std::min(end, begin + ch * rows_per_chunk);
      const uint64_t r1 = std::min(end, r0 + rows_per_chunk);
      const uint64_t n_rows = r1 - r0, numel = n_rows * elems;
      out.resize(numel * dtype_size(out_dtype));
      // A failure on one rank must not leave the others waiting in the collective write: every
      // rank learns of it here, the loop stops everywhere, and the caller closes the file together.
      std::string error;
      try {
        if (numel > 0) {
          std::vector<TensorView> views(M);
          for (size_t m = 0; m < M; ++m) {
            const Checkpoint::Entry& e = in.models[m].checkpoint.at(slot.name);
            const uint64_t row_bytes = elems * dtype_size(e.info->dtype);
            inputs[m].resize(n_rows * row_bytes);
            with_context("reading '" + slot.name + "' of model '" + c.models[m].name + "'", [&] {
              e.file->read(*e.info, r0 * row_bytes, n_rows * row_bytes, inputs[m].data());
            });
            stats.bytes_read += n_rows * row_bytes;
            if (in.models[m].lora)
              in.models[m].lora->apply_rows(slot.name, e.info->dtype, r0, n_rows, elems, inputs[m].data());
            if (int64_t bad = first_non_finite(e.info->dtype, inputs[m].data(), numel); bad >= 0)
              fail("model '", c.models[m].name, "' (", c.models[m].path, "): tensor '", slot.name,
                   "' holds NaN or infinity at ", position(slot.shape, r0 * elems + static_cast<uint64_t>(bad)));
            views[m] = TensorView{e.info->dtype, inputs[m].data()};
          }
          with_context("merging '" + slot.name + "'", [&] {
            switch (method) {
              case MergeMethod::Recall:
                merge_weighted(views, weights[t], false, numel, out_dtype, out.data());
                break;
              case MergeMethod::Linear:
                merge_weighted(views, weights[t], c.params.normalize, numel, out_dtype, out.data());
                break;
              case MergeMethod::Slerp:
                merge_slerp(views[0], views[1], c.params.t, numel, out_dtype, out.data());
                break;
              default: {
                TaskVectorOptions opt = task_vector_defaults(method);
                opt.lambda = c.params.lambda;
                opt.weights = task_weights;
                opt.densities.assign(task_models.size(), c.params.density);
                opt.seed = dare_tensor_seed(c.params.seed, slot.name);
                std::vector<TensorView> tv;
                for (size_t m : task_models) tv.push_back(views[m]);
                merge_task_vectors(views[*in.base], tv, numel, opt, out_dtype, out.data());
              }
            }
          });
        }
        if (int64_t bad = numel ? first_non_finite(out_dtype, out.data(), numel) : -1; bad >= 0)
          fail("merged tensor '", slot.name, "' is NaN or infinite at ",
               position(slot.shape, r0 * elems + static_cast<uint64_t>(bad)), " (overflow in ", c.output.dtype,
               "? check params.lambda and the weights)");
      } catch (const std::exception& e) {
        error = e.what();
      }
      int failed = error.empty() ? 0 : 1, any_failed = 0;
      if (MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
        fail("MPI_Allreduce failed while merging '", slot.name, "'");
      if (any_failed) {
        stats.aborted = true;
        stats.error = error;
        return stats;
      }
      try {
        h5.write_rows("/tensors/" + slot.name, r0, n_rows, out.data());
      } catch (const std::exception& e) {
        error = e.what();
      }
      failed = error.empty() ? 0 : 1;
      if (MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
        fail("MPI_Allreduce failed while writing '", slot.name, "'");
      if (any_failed) {
        stats.aborted = true;
        stats.error = error;
        return stats;
      }
      stats.bytes_written += numel * dtype_size(out_dtype);
    }
    for (auto& v : inputs) std::vector<uint8_t>().swap(v);
    if (on_tensor_done) {
      h5.flush();
      on_tensor_done(slot.name);
    }
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace recall
