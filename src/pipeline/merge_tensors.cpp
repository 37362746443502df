// The merge loop: chunks of rows read from each tensor's sources, merged by the method's kernel,
// written to the HF shards and merged.h5 (see merge_tensors.h).
#include "recall/pipeline/merge_tensors.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <future>
#include <memory>
#include <optional>

#include "recall/dist/failure.h"
#include "recall/merge/aim.h"
#include "recall/pipeline/plan.h"
#include "recall/util/checksum.h"
#include "recall/util/cpus.h"
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

// One merge loop: the chunks of this rank (plan_merge_chunks), their reads on a helper thread,
// the kernel calls, and the writes to the outputs.
class MergeLoop {
 public:
  MergeLoop(H5Writer* h5, MPI_Comm comm, const MergeConfig& c, const MergeInputs& in,
            const std::vector<TensorParams>& params, HfShardWriter* hf, const StatisticsStore* statistics)
      : h5_(h5), comm_(comm), c_(c), in_(in), params_(params), hf_(hf), statistics_(statistics), method_(*c.method),
        out_dtype_(c.output.dtype) {
    MPI_Comm_rank(comm, &rank_);
    MPI_Comm_size(comm, &world_);
    // Reads of the next chunk overlap the merge and writes of this one (two sets of input
    // buffers; whole-tensor methods, which hold whole tensors, read in turn).
    prefetch_ = !method_.whole_tensor;
    const size_t M = in.models.size();
    buffers_[0].resize(M);
    buffers_[1].resize(prefetch_ ? M : 0);
  }

  MergeStats run(bool resume, const std::set<std::string>& done,
                 const std::function<void(const std::string&)>& on_tensor_done);

 private:
  [[noreturn]] void input_not_finite(size_t m, const std::string& name, const std::vector<int64_t>& shape,
                                     uint64_t flat) const {
    fail("model '", c_.models[m].name, "' (", c_.models[m].path, "): tensor '", name, "' holds NaN or infinity at ",
         position(shape, flat));
  }
  void read_chunk(const MergeChunk& ch, std::vector<ByteBuffer>* dst) const;
  void merge_chunk(const MergeChunk& ch, std::vector<ByteBuffer>& inputs);
  // Writes the chunk's output rows (HF shards on a helper thread, merged.h5 collectively); false
  // when some rank failed (stats_ then says whether it was this one).
  bool write_chunk(const MergeChunk& ch, std::string error, std::future<void>* hf_write, Clock::time_point h0);

  H5Writer* h5_;
  MPI_Comm comm_;
  const MergeConfig& c_;
  const MergeInputs& in_;
  const std::vector<TensorParams>& params_;
  HfShardWriter* hf_;
  const StatisticsStore* statistics_;
  size_t stats_tensor_ = SIZE_MAX;  // the tensor tensor_stats_ belongs to
  TensorStatistics tensor_stats_;
  const MethodSpec& method_;
  const DType out_dtype_;
  int rank_ = 0, world_ = 1;
  bool prefetch_ = true;
  std::vector<ByteBuffer> buffers_[2];  // per source of the chunk's tensor
  ByteBuffer out_;
  std::unique_ptr<Xxh3Stream> hash_;  // of the tensor being merged, when its chunks are hashed
  MergeStats stats_;
};

// Reads a chunk's rows of every source; each piece is checked for NaN/infinity as it arrives
// (models with a LoRA adapter are checked after the adapter is applied, on the merging thread).
void MergeLoop::read_chunk(const MergeChunk& ch, std::vector<ByteBuffer>* dst) const {
  const TensorSlot& slot = in_.slots[ch.tensor];
  const uint64_t elems = row_elems(slot.shape), n_rows = ch.rows();
  if (n_rows == 0) return;
  const std::vector<TensorSource>& sources = in_.layout[ch.tensor].sources;
  for (size_t j = 0; j < sources.size(); ++j) {
    const size_t m = sources[j].model;
    const Checkpoint::Entry& e = in_.models[m].checkpoint.at(sources[j].name);
    const uint64_t esize = dtype_size(e.info->dtype), row_bytes = elems * esize;
    const uint64_t bytes = n_rows * row_bytes, piece = std::max<uint64_t>(esize, kPieceBytes / esize * esize);
    uint8_t* data = (*dst)[j].reserve(bytes);
    const bool check = !in_.models[m].lora;
    with_context("reading '" + sources[j].name + "' of model '" + c_.models[m].name + "'", [&] {
      for (uint64_t off = 0; off < bytes; off += piece) {
        const uint64_t n = std::min(piece, bytes - off);
        e.file->read(*e.info, ch.first_row * row_bytes + off, n, data + off);
        if (!check) continue;
        if (int64_t bad = first_non_finite(e.info->dtype, data + off, n / esize); bad >= 0)
          input_not_finite(m, sources[j].name, slot.shape,
                           (ch.first_row * row_bytes + off) / esize + static_cast<uint64_t>(bad));
      }
    });
  }
}

// Merges a chunk's rows into out_. Row-wise methods merge it in pieces, each checked for
// NaN/infinity while it is still in cache; whole-tensor methods merge and check it at once.
void MergeLoop::merge_chunk(const MergeChunk& ch, std::vector<ByteBuffer>& inputs) {
  const size_t t = ch.tensor;
  const TensorSlot& slot = in_.slots[t];
  const std::vector<TensorSource>& sources = in_.layout[t].sources;
  const uint64_t elems = row_elems(slot.shape), r0 = ch.first_row, n_rows = ch.rows(), numel = n_rows * elems;
  std::vector<TensorView> views(sources.size());
  for (size_t j = 0; j < sources.size(); ++j) {
    const size_t m = sources[j].model;
    const Checkpoint::Entry& e = in_.models[m].checkpoint.at(sources[j].name);
    stats_.bytes_read += n_rows * elems * dtype_size(e.info->dtype);
    if (in_.models[m].lora) {
      in_.models[m].lora->apply_rows(sources[j].name, e.info->dtype, r0, n_rows, elems, inputs[j].data());
      if (int64_t bad = first_non_finite(e.info->dtype, inputs[j].data(), numel); bad >= 0)
        input_not_finite(m, sources[j].name, slot.shape, r0 * elems + static_cast<uint64_t>(bad));
    }
    views[j] = TensorView{e.info->dtype, inputs[j].data()};
  }
  const std::optional<size_t> base = in_.base_source(t);
  // A tensor's statistics (files opened, AIM's importance computed) once for all its chunks, which
  // come one after another on a rank.
  if (statistics_ && stats_tensor_ != t) {
    tensor_stats_ = statistics_->of(t);
    stats_tensor_ = t;
  }
  const TensorStatistics& stats = tensor_stats_;
  const bool aim = c_.aim.enabled() && base && !stats.aim_importance.empty();
  const auto m0 = Clock::now();
  const uint64_t out_esize = dtype_size(out_dtype_);
  const uint64_t step = method_.whole_tensor ? numel : std::max<uint64_t>(1, kPieceBytes / out_esize);
  std::vector<TensorView> piece(views.size());
  for (uint64_t p0 = 0; p0 < numel; p0 += step) {
    const uint64_t n = std::min(step, numel - p0);
    for (size_t j = 0; j < views.size(); ++j)
      piece[j] = TensorView{views[j].dtype, static_cast<const uint8_t*>(views[j].data) + p0 * dtype_size(views[j].dtype)};
    uint8_t* dst = out_.data() + p0 * out_esize;
    with_context("merging '" + slot.name + "'", [&] {
      method_.merge(MergeTask{piece, base, params_[t], slot.name, slot.shape, r0 * elems + p0, n, out_dtype_, dst,
                              statistics_ ? &stats : nullptr, usable_cpus()});
      if (aim)
        apply_aim(piece[*base], out_dtype_, dst, stats.aim_importance, c_.aim.omega, elems, r0 * elems + p0, n);
    });
    if (int64_t bad = first_non_finite(out_dtype_, dst, n); bad >= 0)
      fail("merged tensor '", slot.name, "' is NaN or infinite at ",
           position(slot.shape, r0 * elems + p0 + static_cast<uint64_t>(bad)), " (overflow in ",
           output_dtype_name(out_dtype_), "? check params.lambda and the weights)");
  }
  if (stats.rcond >= 0) stats_.rcond[t] = stats.rcond;
  stats_.merge_seconds += seconds_since(m0);
}

bool MergeLoop::write_chunk(const MergeChunk& ch, std::string error, std::future<void>* hf_write, Clock::time_point h0) {
  // The pending HF write's error, if any ("" when none or none pending).
  auto finish_hf_write = [hf_write]() -> std::string {
    if (!hf_write->valid()) return "";
    try {
      hf_write->get();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  };
  // A failure on one rank must not leave the others waiting in the collective write: every rank
  // learns of it here, the loop stops everywhere, and the caller closes the files together.
  if (dist::any_rank_failed(comm_, !error.empty())) {
    finish_hf_write();
    stats_.aborted = true;
    stats_.error = error;
    return false;
  }
  const TensorSlot& slot = in_.slots[ch.tensor];
  if (h5_) {
    try {
      h5_->write_rows("/tensors/" + slot.name, ch.first_row, ch.rows(), out_.data());
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (std::string hf_error = finish_hf_write(); error.empty()) error = hf_error;
  if (dist::any_rank_failed(comm_, !error.empty())) {
    stats_.aborted = true;
    stats_.error = error;
    return false;
  }
  stats_.bytes_written += ch.rows() * row_elems(slot.shape) * dtype_size(out_dtype_);
  stats_.write_seconds += seconds_since(h0);
  return true;
}

MergeStats MergeLoop::run(bool resume, const std::set<std::string>& done,
                          const std::function<void(const std::string&)>& on_tensor_done) {
  const auto t0 = Clock::now();
  if (!resume && h5_) {
    h5_->create_group("/tensors");
    for (const TensorSlot& slot : in_.slots) h5_->create_dataset("/tensors/" + slot.name, out_dtype_, slot.shape);
  }
  const std::vector<MergeChunk> plan = plan_merge_chunks(c_, in_, rank_, world_, done);
  auto read = [this](const MergeChunk& ch, std::vector<ByteBuffer>* dst) { read_chunk(ch, dst); };
  std::future<void> pending;
  if (prefetch_ && !plan.empty()) pending = std::async(std::launch::async, read, plan[0], &buffers_[0]);
  for (size_t k = 0; k < plan.size(); ++k) {
    const MergeChunk& chunk = plan[k];
    const size_t t = chunk.tensor;
    std::vector<ByteBuffer>& inputs = buffers_[prefetch_ ? k % 2 : 0];
    const uint64_t numel = chunk.rows() * row_elems(in_.slots[t].shape);
    out_.reserve(numel * dtype_size(out_dtype_));
    std::string error;
    std::future<void> hf_write;
    Clock::time_point h0 = Clock::now();
    try {
      const auto w0 = Clock::now();
      if (prefetch_) {
        pending.get();  // this chunk's reads (rethrows their error)
        if (k + 1 < plan.size()) pending = std::async(std::launch::async, read, plan[k + 1], &buffers_[(k + 1) % 2]);
      } else {
        read_chunk(chunk, &inputs);
      }
      stats_.wait_seconds += seconds_since(w0);
      if (numel > 0) merge_chunk(chunk, inputs);
      h0 = Clock::now();
      // The HF shard write (plain pwrite, no MPI) runs on a helper thread while this thread
      // writes the same rows to merged.h5; both finish before the chunk counts as written.
      // A tensor merged whole by this rank is hashed as written (its checksum needs no read-back).
      if (chunk.whole && chunk.first) hash_ = std::make_unique<Xxh3Stream>();
      const uint64_t esize = dtype_size(out_dtype_);
      Xxh3Stream* h = chunk.whole ? hash_.get() : nullptr;
      if (hf_ && numel > 0) {
        hf_write = std::async(std::launch::async, [this, h, t, offset = chunk.first_row * row_elems(in_.slots[t].shape) * esize,
                                                   n = numel * esize] {
          hf_->write(t, offset, out_.data(), n);
          if (h) h->update(out_.data(), n);
        });
      } else if (h && numel > 0) {
        h->update(out_.data(), numel * esize);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!write_chunk(chunk, error, &hf_write, h0)) return stats_;
    if (chunk.last && chunk.whole) stats_.checksums[t] = hash_->digest();
    if (chunk.last && on_tensor_done) on_tensor_done(in_.slots[t].name);
  }
  stats_.seconds = seconds_since(t0);
  return stats_;
}

}  // namespace

MergeStats merge_tensors(H5Writer* h5, MPI_Comm comm, const MergeConfig& c, const MergeInputs& in,
                         const std::vector<TensorParams>& params, bool resume, const std::set<std::string>& done,
                         HfShardWriter* hf, const std::function<void(const std::string&)>& on_tensor_done,
                         const StatisticsStore* statistics) {
  MergeLoop loop(h5, comm, c, in, params, hf, statistics);
  return loop.run(resume, done, on_tensor_done);
}

}  // namespace recall
