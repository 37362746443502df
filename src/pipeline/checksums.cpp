// The checksum phase's gathering (see recall/pipeline/checksums.h).
#include "recall/pipeline/checksums.h"

#include "recall/dist/collectives.h"
#include "recall/dist/failure.h"
#include "recall/util/error.h"

namespace recall {

std::map<std::string, uint64_t> collective_checksums(MPI_Comm comm, const std::vector<std::string>& names,
                                                     const std::map<size_t, uint64_t>& known,
                                                     const std::function<uint64_t(size_t)>& hash,
                                                     const ChecksumProgress& progress) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  std::vector<uint64_t> mine(names.size(), 0);
  // Which tensors some rank hashed as it wrote them: those are not read back.
  std::vector<int> hashed(names.size(), 0);
  for (const auto& [t, h] : known) {
    if (t >= names.size()) fail("internal error: checksum of tensor ", t, " of ", names.size());
    hashed[t] = 1;
    mine[t] = h;
  }
  std::vector<int> hashed_anywhere = hashed;
  dist::all_reduce(comm, hashed_anywhere, dist::ReduceOp::Max);
  // A failure is shared before the next collective, so that no rank waits for a failed peer, and
  // every rank reports the same one.
  dist::agreed(comm, [&] {
    std::vector<size_t> todo;
    for (size_t t = static_cast<size_t>(rank); t < names.size(); t += static_cast<size_t>(world))
      if (!hashed_anywhere[t]) todo.push_back(t);
    for (size_t i = 0; i < todo.size(); ++i) {
      mine[todo[i]] = hash(todo[i]);
      if (progress) progress(static_cast<int64_t>(i + 1), static_cast<int64_t>(todo.size()));
    }
  });
  // Each checksum is set on exactly one rank and zero on the others (or zero everywhere): the
  // maximum gathers them.
  std::vector<uint64_t> all = mine;
  dist::all_reduce(comm, all, dist::ReduceOp::Max);
  std::map<std::string, uint64_t> out;
  for (size_t t = 0; t < names.size(); ++t) out[names[t]] = all[t];
  return out;
}

}  // namespace recall
