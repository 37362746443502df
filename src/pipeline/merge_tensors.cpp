// The merge loop: reads, merge kernels, NaN checks and collective HDF5 writes, chunk by chunk.
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


// The loop's state: the plan of this rank, the input buffers (two sets when the next chunk's
// reads overlap this chunk's merge), the output buffer and the running hash of the tensor.
class MergeLoop {
 public:
  MergeLoop(H5Writer& h5, MPI_Comm comm, const MergeConfig& c, const MergeInputs& in,
            const std::vector<TensorParams>& params, HfShardWriter* hf)
      : h5_(h5), comm_(comm), c_(c), in_(in), params_(params), hf_(hf), method_(*c.method),
        prefetch_(!method_.whole_tensor) {
    MPI_Comm_rank(comm, &rank_);
    MPI_Comm_size(comm, &world_);
    const size_t M = in.models.size();
    buffers_[0].resize(M);
    buffers_[1].resize(prefetch_ ? M : 0);
  }

  MergeStats run(const std::set<std::string>& done, const std::function<void(const std::string&)>& on_tensor_done);

 private:
  [[noreturn]] void input_not_finite(size_t m, const TensorSlot& slot, uint64_t flat) const {
    fail("model '", c_.models[m].name, "' (", c_.models[m].path, "): tensor '", slot.name,
         "' holds NaN or infinity at ", position(slot.shape, flat));
  }
  void read_chunk(const MergeChunk& ch, std::vector<ByteBuffer>* dst) const;
  void merge_chunk(const MergeChunk& ch, std::vector<ByteBuffer>& inputs);
  std::future<void> start_hf_write(const MergeChunk& ch);
  // Agrees on this chunk's outcome; false (with stats_.aborted) when any rank failed.
  bool agree(const std::string& error) {
    if (!dist::any_rank_failed(comm_, !error.empty())) return true;
    stats_.aborted = true;
    stats_.error = error;
    return false;
  }

  H5Writer& h5_;
  MPI_Comm comm_;
  const MergeConfig& c_;
  const MergeInputs& in_;
  const std::vector<TensorParams>& params_;
  HfShardWriter* hf_;
  const MethodSpec& method_;
  const bool prefetch_;
  int rank_ = 0, world_ = 1;
  std::vector<ByteBuffer> buffers_[2];
  ByteBuffer out_;
  std::unique_ptr<Xxh3Stream> hash_;  // of the tensor being merged, when this rank writes it whole
  MergeStats stats_;
};

// Reads a chunk's rows of every model; each piece is checked for NaN/infinity as it arrives
// (models with a LoRA adapter are checked after the adapter is applied, on the merging thread).
// Runs on a helper thread: no MPI or HDF5 calls.
void MergeLoop::read_chunk(const MergeChunk& ch, std::vector<ByteBuffer>* dst) const {
  const TensorSlot& slot = in_.slots[ch.tensor];
  const uint64_t elems = row_elems(slot.shape), n_rows = ch.rows();
  if (n_rows == 0) return;
  for (size_t m = 0; m < in_.models.size(); ++m) {
    const Checkpoint::Entry& e = in_.models[m].checkpoint.at(slot.name);
    const uint64_t esize = dtype_size(e.info->dtype), row_bytes = elems * esize;
    const uint64_t bytes = n_rows * row_bytes, piece = std::max<uint64_t>(esize, kPieceBytes / esize * esize);
    uint8_t* data = (*dst)[m].reserve(bytes);
    const bool check = !in_.models[m].lora;
    with_context("reading '" + slot.name + "' of model '" + c_.models[m].name + "'", [&] {
      for (uint64_t off = 0; off < bytes; off += piece) {
        const uint64_t n = std::min(piece, bytes - off);
        e.file->read(*e.info, ch.first_row * row_bytes + off, n, data + off);
        if (!check) continue;
        if (int64_t bad = first_non_finite(e.info->dtype, data + off, n / esize); bad >= 0)
          input_not_finite(m, slot, (ch.first_row * row_bytes + off) / esize + static_cast<uint64_t>(bad));
      }
    });
  }
}

// Merges a chunk's rows into out_ with the method's kernel. Row-wise methods merge it in pieces,
// each checked for NaN/infinity while it is still in cache; whole-tensor methods at once.
void MergeLoop::merge_chunk(const MergeChunk& ch, std::vector<ByteBuffer>& inputs) {
  const TensorSlot& slot = in_.slots[ch.tensor];
  const size_t M = in_.models.size();
  const uint64_t elems = row_elems(slot.shape), r0 = ch.first_row, n_rows = ch.rows(), numel = n_rows * elems;
  const DType out_dtype = c_.output.dtype;
  std::vector<TensorView> views(M);
  for (size_t m = 0; m < M; ++m) {
    const Checkpoint::Entry& e = in_.models[m].checkpoint.at(slot.name);
    stats_.bytes_read += n_rows * elems * dtype_size(e.info->dtype);
    if (in_.models[m].lora) {
      in_.models[m].lora->apply_rows(slot.name, e.info->dtype, r0, n_rows, elems, inputs[m].data());
      if (int64_t bad = first_non_finite(e.info->dtype, inputs[m].data(), numel); bad >= 0)
        input_not_finite(m, slot, r0 * elems + static_cast<uint64_t>(bad));
    }
    views[m] = TensorView{e.info->dtype, inputs[m].data()};
  }
  const auto m0 = Clock::now();
  const uint64_t out_esize = dtype_size(out_dtype);
  const uint64_t step = method_.whole_tensor ? numel : std::max<uint64_t>(1, kPieceBytes / out_esize);
  std::vector<TensorView> piece(M);
  for (uint64_t p0 = 0; p0 < numel; p0 += step) {
    const uint64_t n = std::min(step, numel - p0);
    for (size_t m = 0; m < M; ++m)
      piece[m] = TensorView{views[m].dtype, static_cast<const uint8_t*>(views[m].data) + p0 * dtype_size(views[m].dtype)};
    uint8_t* dst = out_.data() + p0 * out_esize;
    with_context("merging '" + slot.name + "'", [&] {
      method_.merge(MergeTask{piece, in_.base, params_[ch.tensor], slot.name, slot.shape, r0 * elems + p0, n, out_dtype, dst});
    });
    if (int64_t bad = first_non_finite(out_dtype, dst, n); bad >= 0)
      fail("merged tensor '", slot.name, "' is NaN or infinite at ",
           position(slot.shape, r0 * elems + p0 + static_cast<uint64_t>(bad)), " (overflow in ",
           output_dtype_name(out_dtype), "? check params.lambda and the weights)");
  }
  stats_.merge_seconds += seconds_since(m0);
}

// The HF shard write (plain pwrite, no MPI) on a helper thread, while this thread writes the same
// rows to merged.h5; a tensor this rank writes whole is hashed as it goes.
std::future<void> MergeLoop::start_hf_write(const MergeChunk& ch) {
  if (ch.whole && hf_ && ch.first) hash_ = std::make_unique<Xxh3Stream>();
  const uint64_t numel = ch.rows() * row_elems(in_.slots[ch.tensor].shape);
  if (!hf_ || numel == 0) return {};
  const uint64_t esize = dtype_size(c_.output.dtype);
  Xxh3Stream* h = ch.whole ? hash_.get() : nullptr;
  return std::async(std::launch::async, [hf = hf_, &out = out_, h, t = ch.tensor,
                                         offset = ch.first_row * row_elems(in_.slots[ch.tensor].shape) * esize,
                                         n = numel * esize] {
    hf->write(t, offset, out.data(), n);
    if (h) h->update(out.data(), n);
  });
}

MergeStats MergeLoop::run(const std::set<std::string>& done,
                          const std::function<void(const std::string&)>& on_tensor_done) {
  const auto t0 = Clock::now();
  const std::vector<MergeChunk> plan = plan_merge_chunks(c_, in_, rank_, world_, done);
  std::future<void> pending;
  if (prefetch_ && !plan.empty()) pending = std::async(std::launch::async, [this, &plan] { read_chunk(plan[0], &buffers_[0]); });
  for (size_t k = 0; k < plan.size(); ++k) {
    const MergeChunk& chunk = plan[k];
    const TensorSlot& slot = in_.slots[chunk.tensor];
    const uint64_t numel = chunk.rows() * row_elems(slot.shape);
    std::vector<ByteBuffer>& inputs = buffers_[prefetch_ ? k % 2 : 0];
    out_.reserve(numel * dtype_size(c_.output.dtype));
    // A failure on one rank must not leave the others waiting in the collective write: every
    // rank learns of it here, the loop stops everywhere, and the caller closes the file together.
    std::string error;
    std::future<void> hf_write;
    Clock::time_point h0 = Clock::now();
    try {
      const auto w0 = Clock::now();
      if (prefetch_) {
        pending.get();  // this chunk's reads (rethrows their error)
        if (k + 1 < plan.size())
          pending = std::async(std::launch::async, [this, &plan, k] { read_chunk(plan[k + 1], &buffers_[(k + 1) % 2]); });
      } else {
        read_chunk(chunk, &inputs);
      }
      stats_.wait_seconds += seconds_since(w0);
      if (numel > 0) merge_chunk(chunk, inputs);
      h0 = Clock::now();
      hf_write = start_hf_write(chunk);
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
    if (!agree(error)) {
      finish_hf_write();
      return stats_;
    }
    try {
      h5_.write_rows("/tensors/" + slot.name, chunk.first_row, chunk.rows(), out_.data());
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (std::string hf_error = finish_hf_write(); error.empty()) error = hf_error;
    if (!agree(error)) return stats_;
    stats_.bytes_written += numel * dtype_size(c_.output.dtype);
    stats_.write_seconds += seconds_since(h0);
    if (chunk.last && chunk.whole && hf_) stats_.checksums[chunk.tensor] = hash_->digest();
    if (chunk.last && on_tensor_done) on_tensor_done(slot.name);
  }
  stats_.seconds = seconds_since(t0);
  return stats_;
}

}  // namespace

MergeStats merge_into_h5(H5Writer& h5, MPI_Comm comm, const MergeConfig& c, const MergeInputs& in,
                         const std::vector<TensorParams>& params, bool resume, const std::set<std::string>& done,
                         HfShardWriter* hf, const std::function<void(const std::string&)>& on_tensor_done) {
  if (!resume) {
    h5.create_group("/tensors");
    for (const TensorSlot& slot : in.slots) h5.create_dataset("/tensors/" + slot.name, c.output.dtype, slot.shape);
  }
  return MergeLoop(h5, comm, c, in, params, hf).run(done, on_tensor_done);
}

}  // namespace recall
