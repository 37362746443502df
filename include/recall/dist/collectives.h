// Typed collectives on host values over an MPI communicator, for the job's bookkeeping outside the
// model data (totals, per-rank statistics, checksum records, flags). They go through the MPI
// communicator backend (comm.h), so every MPI call is checked (MPI_CHECK names the call, rank and
// host) and element counts beyond MPI's int go in rounds. Every rank of `comm` makes every call.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "recall/dist/comm.h"

namespace recall::dist {

// Element-wise reduction of `values` across the ranks, in place (every rank passes the same
// number of elements). T: int, int64_t, uint64_t, float or double.
template <typename T>
void all_reduce(MPI_Comm comm, std::vector<T>& values, ReduceOp op, const CommOptions& options = {});

// One value reduced across the ranks.
template <typename T>
T all_reduce(MPI_Comm comm, T value, ReduceOp op, const CommOptions& options = {}) {
  std::vector<T> v{value};
  all_reduce(comm, v, op, options);
  return v[0];
}

// Every rank's record (`mine`, the same number of elements on every rank), rank after rank: element
// i of rank r is at r * mine.size() + i. Records of unequal sizes fail on every rank, naming them.
template <typename T>
std::vector<T> all_gather(MPI_Comm comm, const std::vector<T>& mine, const CommOptions& options = {});

// Every rank's bytes, of any sizes, concatenated in rank order (rounds below MPI's 2^31 limits).
std::string all_gather_bytes(MPI_Comm comm, const std::string& mine, const CommOptions& options = {});

// Point-to-point transfer of `bytes` bytes to / from rank `peer` with `tag`, in pieces of at most
// 1 GiB (MPI counts are ints); every call checked. For the pipelined extraction's hand-over of
// hidden states between the stages of one model. Returns when the bytes are sent / received, or
// throws PeerFailedError when another rank's failure notice arrives first (notice.h): a receive is
// cancelled; a send gets 1 s to complete, else it is freed (its receiver stopped too and never
// posts the receive, so MPI does not read `data` again).
void send_bytes(MPI_Comm comm, const void* data, size_t bytes, int peer, int tag);
void recv_bytes(MPI_Comm comm, void* data, size_t bytes, int peer, int tag);

}  // namespace recall::dist
