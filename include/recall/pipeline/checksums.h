// The checksum phase's gathering, shared by both outputs: every tensor's XXH3-64 on every rank,
// those some rank hashed as it wrote them taken as they are, each other one hashed by one rank
// (tensor t by rank t % world) from the bytes as written, a failure on any rank shared before the
// gather so that no rank waits.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace recall {

// Collective over comm. `known`: tensor index -> checksum this rank computed as it wrote (see
// MergeStats); `hash(t)` reads tensor t back and hashes it. `progress(done, total)`, when set, is
// called on every rank after each tensor it read back (done of its total). Returns name -> checksum.
using ChecksumProgress = std::function<void(int64_t done, int64_t total)>;
std::map<std::string, uint64_t> collective_checksums(MPI_Comm comm, const std::vector<std::string>& names,
                                                     const std::map<size_t, uint64_t>& known,
                                                     const std::function<uint64_t(size_t)>& hash,
                                                     const ChecksumProgress& progress = {});

}  // namespace recall
