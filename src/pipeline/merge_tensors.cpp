// The merge phase: per-tensor weights, row split, merge kernels, collective HDF5 writes.
#include "recall/pipeline/merge_tensors.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <memory>

#include "recall/dist/failure.h"
#include "recall/pipeline/plan.h"
#include "recall/util/checksum.h"
#include "recall/util/error.h"

namespace recall {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Within a chunk, inputs are read and checked for NaN/infinity, and outputs merged and checked, in
// pieces of about this many bytes, so that each check reads bytes still in the core's cache
// instead of making another pass over the chunk in memory (this machine copies at ~4 GB/s).
constexpr uint64_t kPieceBytes = 256ull << 10;

// Index of the first NaN or infinity among n elements of a float dtype, or -1. Checked on the
// bytes the merge reads anyway, so a corrupt input is named instead of silently propagated. Blocks
// are tested without an early exit (the loop vectorizes); only a block with a hit is searched.
template <typename U>
int64_t first_all_ones(const uint8_t* p, uint64_t n, U exp_mask) {
  constexpr uint64_t kBlock = 2048;
  for (uint64_t b = 0; b < n; b += kBlock) {
    const uint64_t e = std::min(n, b + kBlock);
    U hit = 0;
    for (uint64_t i = b; i < e; ++i) {
      U v;
      std::memcpy(&v, p + sizeof(U) * i, sizeof(U));
      hit |= static_cast<U>((v & exp_mask) == exp_mask);
    }
    if (!hit) continue;
    for (uint64_t i = b; i < e; ++i) {
      U v;
      std::memcpy(&v, p + sizeof(U) * i, sizeof(U));
      if ((v & exp_mask) == exp_mask) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

int64_t first_non_finite(DType t, const uint8_t* p, uint64_t n) {
  switch (t) {
    case DType::BF16: return first_all_ones<uint16_t>(p, n, 0x7f80);
    case DType::F16: return first_all_ones<uint16_t>(p, n, 0x7c00);
    case DType::F32: return first_all_ones<uint32_t>(p, n, 0x7f800000u);
    case DType::F64: return first_all_ones<uint64_t>(p, n, 0x7ff0000000000000ull);
    default: {
      std::vector<float> f(n);
      decode_to_float(t, p, n, f.data());
      for (uint64_t i = 0; i < n; ++i)
        if (!std::isfinite(f[i])) return static_cast<int64_t>(i);
      return -1;
    }
  }
}

// A byte buffer that grows but never shrinks or zero-fills: the merge reuses it for every chunk.
class ByteBuffer {
 public:
  uint8_t* reserve(uint64_t n) {
    if (n > capacity_) {
      data_.reset(new uint8_t[n]);
      capacity_ = n;
    }
    size_ = n;
    return data_.get();
  }
  uint8_t* data() const { return data_.get(); }
  uint64_t size() const { return size_; }

 private:
  std::unique_ptr<uint8_t[]> data_;
  uint64_t capacity_ = 0, size_ = 0;
};

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

uint64_t row_elems(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= static_cast<uint64_t>(shape[i]);
  return n;
}

}  // namespace

MergeStats merge_into_h5(H5Writer& h5, MPI_Comm comm, const MergeConfig& c, const MergeInputs& in,
                         const std::vector<TensorParams>& params, bool resume,
                         const std::set<std::string>& done, HfShardWriter* hf,
                         const std::function<void(const std::string&)>& on_tensor_done) {
  const auto t0 = std::chrono::steady_clock::now();
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const DType out_dtype = c.output.dtype;
  const size_t M = in.models.size();
  const MethodSpec& method = *c.method;
  const bool whole = method.whole_tensor;
  MergeStats stats;

  if (!resume) {
    h5.create_group("/tensors");
    for (const TensorSlot& slot : in.slots) h5.create_dataset("/tensors/" + slot.name, out_dtype, slot.shape);
  }
  using Chunk = MergeChunk;
  const std::vector<Chunk> plan = plan_merge_chunks(c, in, rank, world, done);

  // Reads of the next chunk overlap the merge and writes of this one (two sets of input buffers;
  // whole-tensor methods, which hold whole tensors, read in turn). Reads run on a helper thread
  // that makes no MPI calls.
  const bool prefetch = !whole;
  std::vector<ByteBuffer> buffers[2] = {std::vector<ByteBuffer>(M), std::vector<ByteBuffer>(prefetch ? M : 0)};
  auto input_not_finite = [&](size_t m, const std::string& name, const std::vector<int64_t>& shape, uint64_t flat) {
    fail("model '", c.models[m].name, "' (", c.models[m].path, "): tensor '", name, "' holds NaN or infinity at ",
         position(shape, flat));
  };
  // Reads a chunk's rows of every model; each piece is checked for NaN/infinity as it arrives
  // (models with a LoRA adapter are checked after the adapter is applied, on the merging thread).
  auto read_chunk = [&](const Chunk& ch, std::vector<ByteBuffer>* dst) {
    const TensorSlot& slot = in.slots[ch.tensor];
    const uint64_t elems = row_elems(slot.shape), n_rows = ch.rows();
    if (n_rows == 0) return;
    for (size_t m = 0; m < M; ++m) {
      const Checkpoint::Entry& e = in.models[m].checkpoint.at(slot.name);
      const uint64_t esize = dtype_size(e.info->dtype), row_bytes = elems * esize;
      const uint64_t bytes = n_rows * row_bytes, piece = std::max<uint64_t>(esize, kPieceBytes / esize * esize);
      uint8_t* data = (*dst)[m].reserve(bytes);
      const bool check = !in.models[m].lora;
      with_context("reading '" + slot.name + "' of model '" + c.models[m].name + "'", [&] {
        for (uint64_t off = 0; off < bytes; off += piece) {
          const uint64_t n = std::min(piece, bytes - off);
          e.file->read(*e.info, ch.first_row * row_bytes + off, n, data + off);
          if (!check) continue;
          if (int64_t bad = first_non_finite(e.info->dtype, data + off, n / esize); bad >= 0)
            input_not_finite(m, slot.name, slot.shape, (ch.first_row * row_bytes + off) / esize + static_cast<uint64_t>(bad));
        }
      });
    }
  };
  std::future<void> pending;
  if (prefetch && !plan.empty()) pending = std::async(std::launch::async, read_chunk, plan[0], &buffers[0]);

  ByteBuffer out;
  std::unique_ptr<Xxh3Stream> hash;  // of the tensor being merged, when its chunks are hashed
  for (size_t k = 0; k < plan.size(); ++k) {
    const Chunk& chunk = plan[k];
    const size_t t = chunk.tensor;
    const TensorSlot& slot = in.slots[t];
    const uint64_t elems = row_elems(slot.shape);
    std::vector<ByteBuffer>& inputs = buffers[prefetch ? k % 2 : 0];
    {
      const uint64_t r0 = chunk.first_row, n_rows = chunk.rows(), numel = n_rows * elems;
      out.reserve(numel * dtype_size(out_dtype));
      // A failure on one rank must not leave the others waiting in the collective write: every
      // rank learns of it here, the loop stops everywhere, and the caller closes the file together.
      std::string error;
      std::future<void> hf_write;
      Clock::time_point h0 = Clock::now();
      try {
        const auto w0 = Clock::now();
        if (prefetch) {
          pending.get();  // this chunk's reads (rethrows their error)
          if (k + 1 < plan.size())
            pending = std::async(std::launch::async, read_chunk, plan[k + 1], &buffers[(k + 1) % 2]);
        } else {
          read_chunk(chunk, &inputs);
        }
        stats.wait_seconds += seconds_since(w0);
        if (numel > 0) {
          std::vector<TensorView> views(M);
          for (size_t m = 0; m < M; ++m) {
            const Checkpoint::Entry& e = in.models[m].checkpoint.at(slot.name);
            const uint64_t row_bytes = elems * dtype_size(e.info->dtype);
            stats.bytes_read += n_rows * row_bytes;
            if (in.models[m].lora) {
              in.models[m].lora->apply_rows(slot.name, e.info->dtype, r0, n_rows, elems, inputs[m].data());
              if (int64_t bad = first_non_finite(e.info->dtype, inputs[m].data(), numel); bad >= 0)
                input_not_finite(m, slot.name, slot.shape, r0 * elems + static_cast<uint64_t>(bad));
            }
            views[m] = TensorView{e.info->dtype, inputs[m].data()};
          }
          // Row-wise methods merge the chunk in pieces, each checked for NaN/infinity while it is
          // still in cache; whole-tensor methods merge and check it at once.
          auto merge_piece = [&](const std::vector<TensorView>& v, uint64_t first, uint64_t n, uint8_t* dst) {
            method.merge(MergeTask{v, in.base, params[t], slot.name, slot.shape, first, n, out_dtype, dst});
          };
          const auto m0 = Clock::now();
          const uint64_t out_esize = dtype_size(out_dtype);
          const uint64_t step = whole ? numel : std::max<uint64_t>(1, kPieceBytes / out_esize);
          std::vector<TensorView> piece(M);
          for (uint64_t p0 = 0; p0 < numel; p0 += step) {
            const uint64_t n = std::min(step, numel - p0);
            for (size_t m = 0; m < M; ++m)
              piece[m] = TensorView{views[m].dtype, static_cast<const uint8_t*>(views[m].data) + p0 * dtype_size(views[m].dtype)};
            uint8_t* dst = out.data() + p0 * out_esize;
            with_context("merging '" + slot.name + "'", [&] { merge_piece(piece, r0 * elems + p0, n, dst); });
            if (int64_t bad = first_non_finite(out_dtype, dst, n); bad >= 0)
              fail("merged tensor '", slot.name, "' is NaN or infinite at ",
                   position(slot.shape, r0 * elems + p0 + static_cast<uint64_t>(bad)), " (overflow in ",
                   output_dtype_name(out_dtype), "? check params.lambda and the weights)");
          }
          stats.merge_seconds += seconds_since(m0);
        }
        h0 = Clock::now();
        // The HF shard write (plain pwrite, no MPI) runs on a helper thread while this thread
        // writes the same rows to merged.h5; both finish before the chunk counts as written.
        if (chunk.whole && hf && chunk.first) hash = std::make_unique<Xxh3Stream>();
        if (hf && numel > 0) {
          const uint64_t esize = dtype_size(out_dtype);
          Xxh3Stream* h = chunk.whole ? hash.get() : nullptr;
          hf_write = std::async(std::launch::async, [&hf, &out, h, t, offset = r0 * elems * esize, n = numel * esize] {
            hf->write(t, offset, out.data(), n);
            if (h) h->update(out.data(), n);
          });
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
      // The pending HF write's error, if any ("" when none or none pending).
      auto finish_hf_write = [&hf_write]() -> std::string {
        if (!hf_write.valid()) return "";
        try {
          hf_write.get();
        } catch (const std::exception& e) {
          return e.what();
        }
        return "";
      };
      if (dist::any_rank_failed(comm, !error.empty())) {
        finish_hf_write();
        stats.aborted = true;
        stats.error = error;
        return stats;
      }
      try {
        h5.write_rows("/tensors/" + slot.name, r0, n_rows, out.data());
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (std::string hf_error = finish_hf_write(); error.empty()) error = hf_error;
      if (dist::any_rank_failed(comm, !error.empty())) {
        stats.aborted = true;
        stats.error = error;
        return stats;
      }
      stats.bytes_written += numel * dtype_size(out_dtype);
      stats.write_seconds += seconds_since(h0);
    }
    if (chunk.last && chunk.whole && hf) stats.checksums[t] = hash->digest();
    if (chunk.last && on_tensor_done) on_tensor_done(slot.name);
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace recall
