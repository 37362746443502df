// The communicator interface the runtime moves data with, and its two backends: MPI (host
// buffers; what CI runs) and NCCL (CUDA device buffers; built only with RECALL_HAVE_NCCL).
// Torch stays out: buffers are raw pointers + element counts + a DType (wrap at::Tensor with
// data_ptr(), numel() and its dtype). Every member of the communicator makes every call
// (collectives behind `if (rank == ...)` are hangs); send/recv are the only point-to-point calls.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "recall/util/dtype.h"

namespace recall::dist {

enum class Backend { Mpi, Nccl };
enum class ReduceOp { Sum, Max, Min };

const char* backend_name(Backend b);

struct CommOptions {
  // Watchdog: a call that has not completed after this many seconds is a hang. 0 disables it
  // (blocking MPI calls). With it, MPI calls are non-blocking and polled; NCCL streams are
  // polled with ncclCommGetAsyncError, as nccl-tests does. On timeout one line naming the call,
  // rank and host is printed and the job is MPI_Abort'ed: the only way to free ranks stuck inside
  // a collective (a thrown error would leave the request, and the buffers it writes, in flight).
  double timeout_s = 0;
  // MPI counts are ints: calls larger than this many elements are split into rounds. Tests lower
  // it to exercise the rounds with small buffers.
  size_t max_elements_per_call = 1u << 30;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual Backend backend() const = 0;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // The MPI communicator over the same ranks in the same order (NCCL is bootstrapped over it and
  // host metadata such as counts travels on it).
  MPI_Comm mpi_comm() const { return mpi_comm_; }

  // Every rank's element count, in rank order (host memory, over MPI for both backends).
  std::vector<size_t> all_gather_counts(size_t count);

  // All-gather with unequal sizes (all-gather-v): rank r contributes counts[r] elements at `send`;
  // `recv` receives all pieces back to back in rank order (sum(counts) elements). `counts` must be
  // the same on every rank (all_gather_counts). NCCL has no all-gather-v: it pads to the largest
  // piece and compacts; MPI uses MPI_Allgather when all counts are equal, else MPI_Allgatherv.
  virtual void all_gather_v(const void* send, void* recv, const std::vector<size_t>& counts,
                            DType dtype) = 0;
  // Convenience: exchanges the counts first and returns them (recv must hold the sum).
  std::vector<size_t> all_gather_v(const void* send, size_t count, void* recv, size_t recv_capacity,
                                   DType dtype);

  virtual void broadcast(void* buffer, size_t count, DType dtype, int root) = 0;
  // In place when send == recv. Sum/max/min of integer and F32/F64 elements (and F16/BF16 on
  // NCCL); MPI has no 16-bit float type, so those fail there.
  virtual void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) = 0;
  // Root sends counts[p] elements to rank p, from `send` laid out back to back in rank order;
  // every rank receives its counts[rank] elements into `recv`. `send` is read on the root only.
  virtual void scatter_v(const void* send, const std::vector<size_t>& counts, void* recv,
                         DType dtype, int root) = 0;
  virtual void send(const void* buffer, size_t count, DType dtype, int peer) = 0;
  virtual void recv(void* buffer, size_t count, DType dtype, int peer) = 0;
  virtual void barrier() = 0;

 protected:
  Communicator(MPI_Comm comm, const CommOptions& options);
  MPI_Comm mpi_comm_;
  int rank_ = 0;
  int size_ = 1;
  CommOptions options_;
};

// MPI backend over `comm` (not owned; it must outlive the communicator). Buffers are host memory.
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm, const CommOptions& options = {});

// NCCL backend over the ranks of `comm`, bootstrapped with ncclGetUniqueId on rank 0 + MPI_Bcast,
// on CUDA device `device` (cudaSetDevice before ncclCommInitRank). Buffers are device memory.
// Fails with a clear message when recall was built without NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm, int device,
                                                     const CommOptions& options = {});

// True when this build has the NCCL backend; the NCCL library version ("2.28.9") or "".
bool have_nccl();
std::string nccl_version();

// Waits for MPI requests, polling under the watchdog (timeout_s <= 0: blocking MPI_Waitall).
// `what` names the call in the timeout message. While polling it also stops at a failure notice
// (notice.h): another rank failed, so the call cannot complete; it throws PeerFailedError and
// leaves the requests in flight (the job ends with that rank's agreement).
void wait_all(std::vector<MPI_Request>& requests, const CommOptions& options, const char* what);

}  // namespace recall::dist
