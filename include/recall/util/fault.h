// Fault injection for the reliability tests: RECALL_FAULT_INJECT="PHASE:RANK:COUNT" makes rank
// RANK kill itself with SIGKILL when fault_point(PHASE, RANK, COUNT) is reached (phases:
// "extract" after COUNT micro-batches, "merge" after COUNT tensors). Unset: a no-op.
#pragma once

#include <cstdint>
#include <string>

namespace recall {

void fault_point(const std::string& phase, int rank, int64_t count);

}  // namespace recall
