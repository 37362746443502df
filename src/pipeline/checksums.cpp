// The checksum phase's gathering (see recall/pipeline/checksums.h).
#include "recall/pipeline/checksums.h"

#include "recall/dist/failure.h"
#include "recall/dist/mpi_check.h"
#include "recall/util/error.h"

namespace recall {

std::map<std::string, uint64_t> collective_checksums(MPI_Comm comm, const std::vector<std::string>& names,
                                                     const std::map<size_t, uint64_t>& known,
                                                     const std::function<uint64_t(size_t)>& hash) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const int n = static_cast<int>(names.size());
  std::vector<uint64_t> mine(names.size(), 0), all(names.size(), 0);
  // Which tensors some rank hashed as it wrote them: those are not read back.
  std::vector<int> hashed(names.size(), 0), hashed_anywhere(names.size(), 0);
  for (const auto& [t, h] : known) {
    if (t >= names.size()) fail("internal error: checksum of tensor ", t, " of ", names.size());
    hashed[t] = 1;
    mine[t] = h;
  }
  MPI_CHECK(MPI_Allreduce(hashed.data(), hashed_anywhere.data(), n, MPI_INT, MPI_MAX, comm));
  // A failure is shared before the next collective, so that no rank waits for a failed peer, and
  // every rank reports the same one.
  dist::agreed(comm, [&] {
    for (size_t t = static_cast<size_t>(rank); t < names.size(); t += static_cast<size_t>(world))
      if (!hashed_anywhere[t]) mine[t] = hash(t);
  });
  // Each checksum is non-zero on exactly one rank (or zero everywhere): a bitwise OR gathers them.
  MPI_CHECK(MPI_Allreduce(mine.data(), all.data(), n, MPI_UINT64_T, MPI_BOR, comm));
  std::map<std::string, uint64_t> out;
  for (size_t t = 0; t < names.size(); ++t) out[names[t]] = all[t];
  return out;
}

}  // namespace recall
