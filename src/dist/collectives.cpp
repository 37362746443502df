// Typed host collectives over the MPI communicator backend (see recall/dist/collectives.h).
#include "recall/dist/collectives.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "recall/dist/mpi_check.h"
#include "recall/dist/notice.h"
#include "recall/util/error.h"

namespace recall::dist {

namespace {

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<int>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<uint64_t>() { return DType::U64; }
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }

// Every rank's element count, checked equal on every rank first: a rank with another length would
// read or write past its buffer inside MPI.
std::vector<size_t> same_counts(Communicator& c, size_t n, const char* what) {
  const std::vector<size_t> counts = c.all_gather_counts(n);
  for (int r = 0; r < c.size(); ++r)
    if (counts[r] != counts[0])
      fail(what, ": rank ", r, " passes ", counts[r], " values and rank 0 passes ", counts[0],
           "; every rank must pass the same number");
  return counts;
}

}  // namespace

template <typename T>
void all_reduce(MPI_Comm comm, std::vector<T>& values, ReduceOp op, const CommOptions& options) {
  const auto c = make_mpi_communicator(comm, options);
  same_counts(*c, values.size(), "all-reduce");
  if (!values.empty()) c->all_reduce(values.data(), values.data(), values.size(), dtype_of<T>(), op);
}

template <typename T>
std::vector<T> all_gather(MPI_Comm comm, const std::vector<T>& mine, const CommOptions& options) {
  const auto c = make_mpi_communicator(comm, options);
  const std::vector<size_t> counts = same_counts(*c, mine.size(), "all-gather");
  std::vector<T> all(mine.size() * static_cast<size_t>(c->size()));
  if (!all.empty()) c->all_gather_v(mine.data(), all.data(), counts, dtype_of<T>());
  return all;
}

std::string all_gather_bytes(MPI_Comm comm, const std::string& mine, const CommOptions& options) {
  const auto c = make_mpi_communicator(comm, options);
  const std::vector<size_t> counts = c->all_gather_counts(mine.size());
  size_t total = 0;
  for (size_t n : counts) total += n;
  std::string all(total, '\0');
  if (total > 0) c->all_gather_v(mine.data(), all.data(), counts, DType::U8);
  return all;
}

#define RECALL_HOST_COLLECTIVES(T)                                                                   \
  template void all_reduce<T>(MPI_Comm, std::vector<T>&, ReduceOp, const CommOptions&);             \
  template std::vector<T> all_gather<T>(MPI_Comm, const std::vector<T>&, const CommOptions&);
RECALL_HOST_COLLECTIVES(int)
RECALL_HOST_COLLECTIVES(int64_t)
RECALL_HOST_COLLECTIVES(uint64_t)
RECALL_HOST_COLLECTIVES(float)
RECALL_HOST_COLLECTIVES(double)
#undef RECALL_HOST_COLLECTIVES

namespace {

// fn(offset, size) for consecutive pieces of at most 1 GiB covering [0, bytes) (one empty piece for
// 0 bytes, so that both sides make the same number of calls).
template <typename Fn>
void in_pieces(size_t bytes, Fn&& fn) {
  constexpr size_t kMessageBytes = size_t{1} << 30;
  size_t off = 0;
  do {
    const size_t n = std::min(kMessageBytes, bytes - off);
    fn(off, static_cast<int>(n));
    off += n;
  } while (off < bytes);
}

// "receiving 6656 bytes from rank 0", for the error of a transfer given up.
std::string transfer(const char* what, size_t bytes, const char* dir, int peer) {
  return std::string(what) + " " + std::to_string(bytes) + " bytes " + dir + " rank " + std::to_string(peer);
}

// Polls `req` for up to `seconds`; true when it completed.
bool completes_within(MPI_Request* req, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    int done = 0;
    MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
    if (done) return true;
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace

// Non-blocking and polled (notice.h) rather than MPI_Send/MPI_Recv: the same messages, but a rank
// whose peer failed stops at the peer's notice instead of waiting for data that never comes.
void send_bytes(MPI_Comm comm, const void* data, size_t bytes, int peer, int tag) {
  in_pieces(bytes, [&](size_t off, int n) {
    std::vector<MPI_Request> req(1);
    MPI_CHECK(MPI_Isend(static_cast<const char*>(data) + off, n, MPI_BYTE, peer, tag, comm, &req[0]));
    int noticed = -1;
    if (poll_requests(req, 0, &noticed) == WaitEnd::Notice) {
      // A receiver that already matched this message takes it within the grace (it may be alive
      // and stopping too); one that has not (the failed rank) never will, so MPI never reads the
      // buffer again and the request is freed (MPI_Cancel of a send is not reliable in MPI).
      if (!completes_within(&req[0], 1.0)) MPI_CHECK(MPI_Request_free(&req[0]));
      throw PeerFailedError(noticed, transfer("sending", bytes, "to", peer));
    }
  });
}

void recv_bytes(MPI_Comm comm, void* data, size_t bytes, int peer, int tag) {
  in_pieces(bytes, [&](size_t off, int n) {
    std::vector<MPI_Request> req(1);
    MPI_CHECK(MPI_Irecv(static_cast<char*>(data) + off, n, MPI_BYTE, peer, tag, comm, &req[0]));
    int noticed = -1;
    if (poll_requests(req, 0, &noticed) == WaitEnd::Notice) {
      // Cancelled and completed, so that MPI writes nothing into the buffer after this returns.
      MPI_CHECK(MPI_Cancel(&req[0]));
      MPI_CHECK(MPI_Wait(&req[0], MPI_STATUS_IGNORE));
      throw PeerFailedError(noticed, transfer("receiving", bytes, "from", peer));
    }
  });
}

}  // namespace recall::dist
