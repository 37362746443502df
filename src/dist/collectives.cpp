// Typed host collectives over the MPI communicator backend (see recall/dist/collectives.h).
#include "recall/dist/collectives.h"

#include <algorithm>
#include <cstring>

#include "recall/dist/mpi_check.h"
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

}  // namespace

void send_bytes(MPI_Comm comm, const void* data, size_t bytes, int peer, int tag) {
  in_pieces(bytes, [&](size_t off, int n) {
    MPI_CHECK(MPI_Send(static_cast<const char*>(data) + off, n, MPI_BYTE, peer, tag, comm));
  });
}

void recv_bytes(MPI_Comm comm, void* data, size_t bytes, int peer, int tag) {
  in_pieces(bytes, [&](size_t off, int n) {
    MPI_CHECK(MPI_Recv(static_cast<char*>(data) + off, n, MPI_BYTE, peer, tag, comm, MPI_STATUS_IGNORE));
  });
}

}  // namespace recall::dist
