// The MPI communicator backend (host buffers), the shared parts of the interface, and the
// watchdog that turns a collective that never completes into an error instead of a hang.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "recall/dist/comm.h"
#include "recall/dist/mpi_check.h"
#include "recall/dist/notice.h"
#include "recall/util/error.h"

namespace recall::dist {

const char* backend_name(Backend b) { return b == Backend::Mpi ? "mpi" : "nccl"; }

Communicator::Communicator(MPI_Comm comm, const CommOptions& options)
    : mpi_comm_(comm), options_(options) {
  if (comm == MPI_COMM_NULL) fail("communicator: MPI_COMM_NULL given; this rank is not a member");
  MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  MPI_CHECK(MPI_Comm_size(comm, &size_));
  if (options_.max_elements_per_call == 0 || options_.max_elements_per_call > INT32_MAX)
    fail("communicator: max_elements_per_call = ", options_.max_elements_per_call,
         "; expected 1..", INT32_MAX);
}

void wait_all(std::vector<MPI_Request>& requests, const CommOptions& options, const char* what) {
  if (options.timeout_s <= 0) {
    MPI_CHECK(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE));
    return;
  }
  // Polled with back-off, so oversubscribed ranks leave the core to the rank they wait for.
  int noticed = -1;
  const WaitEnd end = poll_requests(requests, options.timeout_s, &noticed);
  if (end == WaitEnd::Done) return;
  if (end == WaitEnd::Notice) {
    // Another rank failed and went to its step's agreement: this collective cannot complete. Its
    // requests are left in flight (MPI can neither cancel nor free a pending collective); the
    // job ends with the agreement, and this communicator sees no further call.
    throw PeerFailedError(noticed, what);
  }
  char msg[512];
  std::snprintf(msg, sizeof msg,
                "rank %d (host %s): %s did not complete within %.1f s; another rank stopped "
                "answering (crashed, hung, or skipped the call)",
                world_rank_or_minus_one(), host_name(), what, options.timeout_s);
  std::fprintf(stderr, "recall: error: %s; aborting the job\n", msg);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 3);
  fail(msg);  // not reached: MPI_Abort does not return
}

std::vector<size_t> Communicator::all_gather_counts(size_t count) {
  std::vector<uint64_t> all(size_);
  const uint64_t mine = count;
  std::vector<MPI_Request> req(1);
  MPI_CHECK(MPI_Iallgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, mpi_comm_, &req[0]));
  wait_all(req, options_, "all-gather of counts");
  return std::vector<size_t>(all.begin(), all.end());
}

std::vector<size_t> Communicator::all_gather_v(const void* send, size_t count, void* recv,
                                               size_t recv_capacity, DType dtype) {
  std::vector<size_t> counts = all_gather_counts(count);
  const size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
  // Every rank sees the same total, so every rank fails (no rank is left in the collective).
  if (total > recv_capacity)
    fail("all-gather: the pieces total ", total, " elements but the receive buffer holds ",
         recv_capacity);
  all_gather_v(send, recv, counts, dtype);
  return counts;
}

namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::BOOL: case DType::U8: case DType::F8_E4M3: case DType::F8_E5M2: return MPI_UINT8_T;
    case DType::I8: return MPI_INT8_T;
    case DType::I16: return MPI_INT16_T;
    case DType::U16: case DType::F16: case DType::BF16: return MPI_UINT16_T;
    case DType::I32: return MPI_INT32_T;
    case DType::U32: return MPI_UINT32_T;
    case DType::I64: return MPI_INT64_T;
    case DType::U64: return MPI_UINT64_T;
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
  }
  fail("mpi backend: unknown dtype ", static_cast<int>(t));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  fail("mpi backend: unknown reduce op");
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, const CommOptions& options) : Communicator(comm, options) {}

  Backend backend() const override { return Backend::Mpi; }

  void all_gather_v(const void* send, void* recv, const std::vector<size_t>& counts,
                    DType dtype) override {
    check_counts(counts, "all-gather");
    const size_t es = dtype_size(dtype);
    const MPI_Datatype type = mpi_type(dtype);
    const size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
    const size_t largest = *std::max_element(counts.begin(), counts.end());
    const bool equal = std::all_of(counts.begin(), counts.end(), [&](size_t c) { return c == largest; });
    const size_t limit = options_.max_elements_per_call;
    std::vector<MPI_Request> req(1);
    if (total <= limit) {  // one call; ints cannot overflow
      if (equal) {
        MPI_CHECK(MPI_Iallgather_or_blocking(send, static_cast<int>(largest), type, recv, &req[0]));
      } else {
        std::vector<int> c(size_), d(size_);
        for (int p = 0, off = 0; p < size_; ++p) {
          c[p] = static_cast<int>(counts[p]);
          d[p] = off;
          off += c[p];
        }
        MPI_CHECK(blocking() ? MPI_Allgatherv(send, c[rank_], type, recv, c.data(), d.data(), type, mpi_comm_)
                             : MPI_Iallgatherv(send, c[rank_], type, recv, c.data(), d.data(), type,
                                               mpi_comm_, &req[0]));
      }
      finish(req, "all-gather");
      return;
    }
    // Rounds of at most `chunk` elements per rank through a staging buffer, then each piece to
    // its place (only for calls beyond MPI's int counts; one extra copy).
    const size_t chunk = std::max<size_t>(1, limit / size_);
    std::vector<size_t> offset(size_ + 1, 0);
    for (int p = 0; p < size_; ++p) offset[p + 1] = offset[p] + counts[p];
    std::vector<char> staging(chunk * size_ * es);
    std::vector<int> c(size_), d(size_);
    for (size_t start = 0; start < largest; start += chunk) {
      int off = 0;
      for (int p = 0; p < size_; ++p) {
        c[p] = static_cast<int>(counts[p] > start ? std::min(chunk, counts[p] - start) : 0);
        d[p] = off;
        off += c[p];
      }
      const char* src = static_cast<const char*>(send) + std::min(start, counts[rank_]) * es;
      MPI_CHECK(blocking() ? MPI_Allgatherv(src, c[rank_], type, staging.data(), c.data(), d.data(),
                                            type, mpi_comm_)
                           : MPI_Iallgatherv(src, c[rank_], type, staging.data(), c.data(), d.data(),
                                             type, mpi_comm_, &req[0]));
      finish(req, "all-gather");
      for (int p = 0; p < size_; ++p)
        if (c[p] > 0)
          std::memcpy(static_cast<char*>(recv) + (offset[p] + start) * es,
                      staging.data() + static_cast<size_t>(d[p]) * es, static_cast<size_t>(c[p]) * es);
    }
  }

  void broadcast(void* buffer, size_t count, DType dtype, int root) override {
    check_peer(root, "broadcast root");
    for_chunks(count, dtype, [&](size_t off, int n, MPI_Datatype type, MPI_Request* r) {
      char* p = static_cast<char*>(buffer) + off;
      return blocking() ? MPI_Bcast(p, n, type, root, mpi_comm_) : MPI_Ibcast(p, n, type, root, mpi_comm_, r);
    }, "broadcast");
  }

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) override {
    if (!(dtype == DType::F32 || dtype == DType::F64 || dtype == DType::I32 || dtype == DType::I64 ||
          dtype == DType::U32 || dtype == DType::U64 || dtype == DType::U8 || dtype == DType::I8 ||
          dtype == DType::I16))
      fail("mpi backend: all-reduce of ", dtype_name(dtype),
           " is not supported (MPI has no such arithmetic type); reduce in F32");
    const MPI_Op mop = mpi_op(op);
    const bool in_place = send == recv;
    for_chunks(count, dtype, [&](size_t off, int n, MPI_Datatype type, MPI_Request* r) {
      const void* s = in_place ? MPI_IN_PLACE : static_cast<const char*>(send) + off;
      char* d = static_cast<char*>(recv) + off;
      return blocking() ? MPI_Allreduce(s, d, n, type, mop, mpi_comm_)
                        : MPI_Iallreduce(s, d, n, type, mop, mpi_comm_, r);
    }, "all-reduce");
  }

  void scatter_v(const void* send, const std::vector<size_t>& counts, void* recv, DType dtype,
                 int root) override {
    check_counts(counts, "scatter");
    check_peer(root, "scatter root");
    const size_t es = dtype_size(dtype);
    const MPI_Datatype type = mpi_type(dtype);
    const size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
    const size_t largest = *std::max_element(counts.begin(), counts.end());
    const size_t limit = options_.max_elements_per_call;
    std::vector<MPI_Request> req(1);
    const size_t chunk = total <= limit ? std::max<size_t>(largest, 1) : std::max<size_t>(1, limit / size_);
    std::vector<size_t> offset(size_ + 1, 0);
    for (int p = 0; p < size_; ++p) offset[p + 1] = offset[p] + counts[p];
    const bool direct = total <= limit;
    std::vector<char> staging(direct || rank_ != root ? 0 : chunk * size_ * es);
    std::vector<int> c(size_), d(size_);
    for (size_t start = 0; start < std::max<size_t>(largest, 1); start += chunk) {
      int off = 0;
      for (int p = 0; p < size_; ++p) {
        c[p] = static_cast<int>(counts[p] > start ? std::min(chunk, counts[p] - start) : 0);
        d[p] = direct ? static_cast<int>(offset[p]) : off;
        off += c[p];
      }
      const void* src = send;
      if (!direct && rank_ == root) {
        for (int p = 0; p < size_; ++p)
          if (c[p] > 0)
            std::memcpy(staging.data() + static_cast<size_t>(d[p]) * es,
                        static_cast<const char*>(send) + (offset[p] + start) * es,
                        static_cast<size_t>(c[p]) * es);
        src = staging.data();
      }
      char* dst = static_cast<char*>(recv) + std::min(start, counts[rank_]) * es;
      MPI_CHECK(blocking() ? MPI_Scatterv(src, c.data(), d.data(), type, dst, c[rank_], type, root, mpi_comm_)
                           : MPI_Iscatterv(src, c.data(), d.data(), type, dst, c[rank_], type, root,
                                           mpi_comm_, &req[0]));
      finish(req, "scatter");
    }
  }

  void send(const void* buffer, size_t count, DType dtype, int peer) override {
    check_peer(peer, "send peer");
    for_chunks(count, dtype, [&](size_t off, int n, MPI_Datatype type, MPI_Request* r) {
      const char* p = static_cast<const char*>(buffer) + off;
      return blocking() ? MPI_Send(p, n, type, peer, kTag, mpi_comm_)
                        : MPI_Isend(p, n, type, peer, kTag, mpi_comm_, r);
    }, "send");
  }

  void recv(void* buffer, size_t count, DType dtype, int peer) override {
    check_peer(peer, "recv peer");
    for_chunks(count, dtype, [&](size_t off, int n, MPI_Datatype type, MPI_Request* r) {
      char* p = static_cast<char*>(buffer) + off;
      return blocking() ? MPI_Recv(p, n, type, peer, kTag, mpi_comm_, MPI_STATUS_IGNORE)
                        : MPI_Irecv(p, n, type, peer, kTag, mpi_comm_, r);
    }, "recv");
  }

  void barrier() override {
    std::vector<MPI_Request> req(1);
    MPI_CHECK(blocking() ? MPI_Barrier(mpi_comm_) : MPI_Ibarrier(mpi_comm_, &req[0]));
    finish(req, "barrier");
  }

 private:
  static constexpr int kTag = 4242;

  bool blocking() const { return options_.timeout_s <= 0; }

  int MPI_Iallgather_or_blocking(const void* send, int n, MPI_Datatype type, void* recv, MPI_Request* r) {
    return blocking() ? MPI_Allgather(send, n, type, recv, n, type, mpi_comm_)
                      : MPI_Iallgather(send, n, type, recv, n, type, mpi_comm_, r);
  }

  void finish(std::vector<MPI_Request>& req, const char* what) {
    if (!blocking()) wait_all(req, options_, what);
  }

  // Runs call(byte offset, count, type, request) over rounds of at most max_elements_per_call.
  template <typename Call>
  void for_chunks(size_t count, DType dtype, Call&& call, const char* what) {
    const size_t es = dtype_size(dtype);
    const MPI_Datatype type = mpi_type(dtype);
    const size_t limit = options_.max_elements_per_call;
    std::vector<MPI_Request> req(1);
    for (size_t start = 0; start < count; start += limit) {
      const int n = static_cast<int>(std::min(limit, count - start));
      MPI_CHECK(call(start * es, n, type, &req[0]));
      finish(req, what);
    }
  }

  void check_counts(const std::vector<size_t>& counts, const char* what) const {
    if (static_cast<int>(counts.size()) != size_)
      fail(what, ": ", counts.size(), " counts given for a communicator of ", size_, " ranks");
  }
  void check_peer(int peer, const char* what) const {
    if (peer < 0 || peer >= size_) fail(what, " ", peer, " out of range [0, ", size_, ")");
  }
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm, const CommOptions& options) {
  return std::make_unique<MpiCommunicator>(comm, options);
}

}  // namespace recall::dist
