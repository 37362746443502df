// The NCCL communicator backend (CUDA device buffers), compiled only with RECALL_HAVE_NCCL.
// Bootstrapped over MPI (ncclGetUniqueId on rank 0 + MPI_Bcast); every call is enqueued on the
// communicator's own stream and the host waits for it under the watchdog, polling
// ncclCommGetAsyncError as nccl-tests does, so a peer that died becomes an error, not a hang.
#include "recall/dist/comm.h"
#include "recall/dist/mpi_check.h"
#include "recall/util/error.h"

#ifdef RECALL_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <thread>
#endif

namespace recall::dist {

#ifndef RECALL_HAVE_NCCL

bool have_nccl() { return false; }
std::string nccl_version() { return ""; }

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm, int, const CommOptions&) {
  fail("the NCCL backend is not in this build of recall (built without RECALL_HAVE_NCCL); "
       "---> HINT: rebuild with CUDA and NCCL (-DRECALL_WITH_NCCL=ON -DNCCL_HOME=<prefix>) or run "
       "with device: cpu");
}

#else

namespace {

void cuda_check(cudaError_t code, const char* call, const char* file, int line) {
  if (code == cudaSuccess) return;
  fail(call, " failed at ", file, ":", line, " on rank ", world_rank_or_minus_one(), " (host ",
       host_name(), "): ", cudaGetErrorName(code), ": ", cudaGetErrorString(code));
}

void nccl_check(ncclResult_t code, const char* call, const char* file, int line) {
  if (code == ncclSuccess || code == ncclInProgress) return;
  fail(call, " failed at ", file, ":", line, " on rank ", world_rank_or_minus_one(), " (host ",
       host_name(), "): ", ncclGetErrorString(code));
}

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define NCCL_CHECK(call) nccl_check((call), #call, __FILE__, __LINE__)

// NCCL element type for moving the bytes of `t`; reductions are checked separately.
ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::BOOL: case DType::U8: case DType::F8_E4M3: case DType::F8_E5M2: return ncclUint8;
    case DType::I8: return ncclInt8;
    case DType::I16: case DType::U16: case DType::F16: return ncclFloat16;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
    case DType::U32: return ncclUint32;
    case DType::I64: return ncclInt64;
    case DType::U64: return ncclUint64;
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
  }
  fail("nccl backend: unknown dtype ", static_cast<int>(t));
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(MPI_Comm comm, int device, const CommOptions& options)
      : Communicator(comm, options), device_(device) {
    CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id;
    if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi_comm_));
    NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  ~NcclCommunicator() override {
    // Teardown never throws: the codes are ignored on purpose (the job is ending).
    if (staging_) cudaFree(staging_);
    if (stream_) cudaStreamDestroy(stream_);
    if (comm_) ncclCommDestroy(comm_);
  }

  Backend backend() const override { return Backend::Nccl; }

  void all_gather_v(const void* send, void* recv, const std::vector<size_t>& counts,
                    DType dtype) override {
    check_counts(counts);
    const size_t es = dtype_size(dtype);
    const size_t largest = *std::max_element(counts.begin(), counts.end());
    const bool equal = std::all_of(counts.begin(), counts.end(), [&](size_t c) { return c == largest; });
    if (equal) {
      NCCL_CHECK(ncclAllGather(send, recv, largest, nccl_type(dtype), comm_, stream_));
      wait("all-gather");
      return;
    }
    // No all-gather-v in NCCL: pad every piece to the largest, gather, then compact.
    char* pad = static_cast<char*>(staging(largest * size_ * es));
    if (counts[rank_] > 0)
      CUDA_CHECK(cudaMemcpyAsync(pad + rank_ * largest * es, send, counts[rank_] * es,
                                 cudaMemcpyDeviceToDevice, stream_));
    NCCL_CHECK(ncclAllGather(pad + rank_ * largest * es, pad, largest, nccl_type(dtype), comm_, stream_));
    size_t off = 0;
    for (int p = 0; p < size_; ++p) {
      if (counts[p] > 0)
        CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(recv) + off * es, pad + p * largest * es,
                                   counts[p] * es, cudaMemcpyDeviceToDevice, stream_));
      off += counts[p];
    }
    wait("all-gather");
  }

  void broadcast(void* buffer, size_t count, DType dtype, int root) override {
    NCCL_CHECK(ncclBroadcast(buffer, buffer, count, nccl_type(dtype), root, comm_, stream_));
    wait("broadcast");
  }

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) override {
    if (dtype == DType::BOOL || dtype == DType::I16 || dtype == DType::U16 ||
        dtype == DType::F8_E4M3 || dtype == DType::F8_E5M2)
      fail("nccl backend: all-reduce of ", dtype_name(dtype), " is not supported; reduce in F32");
    const ncclRedOp_t nop = op == ReduceOp::Sum ? ncclSum : op == ReduceOp::Max ? ncclMax : ncclMin;
    NCCL_CHECK(ncclAllReduce(send, recv, count, nccl_type(dtype), nop, comm_, stream_));
    wait("all-reduce");
  }

  void scatter_v(const void* send, const std::vector<size_t>& counts, void* recv, DType dtype,
                 int root) override {
    check_counts(counts);
    const size_t es = dtype_size(dtype);
    const ncclDataType_t type = nccl_type(dtype);
    NCCL_CHECK(ncclGroupStart());
    if (rank_ == root) {
      size_t off = 0;
      for (int p = 0; p < size_; ++p) {
        const char* src = static_cast<const char*>(send) + off * es;
        if (p != root && counts[p] > 0) NCCL_CHECK(ncclSend(src, counts[p], type, p, comm_, stream_));
        off += counts[p];
      }
    } else if (counts[rank_] > 0) {
      NCCL_CHECK(ncclRecv(recv, counts[rank_], type, root, comm_, stream_));
    }
    NCCL_CHECK(ncclGroupEnd());
    if (rank_ == root && counts[root] > 0) {
      const size_t off = std::accumulate(counts.begin(), counts.begin() + root, size_t{0});
      CUDA_CHECK(cudaMemcpyAsync(recv, static_cast<const char*>(send) + off * es, counts[root] * es,
                                 cudaMemcpyDeviceToDevice, stream_));
    }
    wait("scatter");
  }

  void send(const void* buffer, size_t count, DType dtype, int peer) override {
    NCCL_CHECK(ncclSend(buffer, count, nccl_type(dtype), peer, comm_, stream_));
    wait("send");
  }

  void recv(void* buffer, size_t count, DType dtype, int peer) override {
    NCCL_CHECK(ncclRecv(buffer, count, nccl_type(dtype), peer, comm_, stream_));
    wait("recv");
  }

  void barrier() override {
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<MPI_Request> req(1);
    MPI_CHECK(MPI_Ibarrier(mpi_comm_, &req[0]));
    wait_all(req, options_, "barrier");
  }

 private:
  void check_counts(const std::vector<size_t>& counts) const {
    if (static_cast<int>(counts.size()) != size_)
      fail("nccl backend: ", counts.size(), " counts given for a communicator of ", size_, " ranks");
  }

  void* staging(size_t bytes) {
    if (bytes > staging_bytes_) {
      if (staging_) CUDA_CHECK(cudaFree(staging_));
      staging_ = nullptr;
      CUDA_CHECK(cudaMalloc(&staging_, bytes));
      staging_bytes_ = bytes;
    }
    return staging_;
  }

  // Waits for the stream; a peer failure shows up as an asynchronous NCCL error, a silent peer
  // as the deadline passing. Either way the communicator is aborted so no kernel spins forever.
  void wait(const char* what) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration<double>(options_.timeout_s);
    for (long polls = 0;; ++polls) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
      if (async != ncclSuccess && async != ncclInProgress) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail("nccl ", what, " on rank ", world_rank_or_minus_one(), " (host ", host_name(),
             "): asynchronous error ", ncclGetErrorString(async));
      }
      if (options_.timeout_s > 0 && clock::now() > deadline) {
        char msg[512];
        std::snprintf(msg, sizeof msg,
                      "rank %d (host %s): nccl %s did not complete within %.1f s; another rank "
                      "stopped answering", world_rank_or_minus_one(), host_name(), what,
                      options_.timeout_s);
        ncclCommAbort(comm_);
        comm_ = nullptr;
        std::fprintf(stderr, "recall: error: %s; aborting the job\n", msg);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
        fail(msg);  // not reached: MPI_Abort does not return
      }
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
};

}  // namespace

bool have_nccl() { return true; }

std::string nccl_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes MAJOR*10000 + MINOR*100 + PATCH.
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm, int device, const CommOptions& options) {
  return std::make_unique<NcclCommunicator>(comm, device, options);
}

#endif  // RECALL_HAVE_NCCL

}  // namespace recall::dist
