// Fault injection for the reliability tests: RECALL_FAULT_INJECT="PHASE:RANK:COUNT" makes rank
// RANK kill itself with SIGKILL when fault_point(PHASE, RANK, COUNT) is reached (phases:
// "extract" after COUNT micro-batches, "merge" after COUNT tensors, "checkpoint" in the fsyncs of
// checkpoint COUNT, "record" in rank 0's progress record of checkpoint COUNT).
// "PHASE:RANK:COUNT:error" throws recall::Error there instead (an I/O error, not a crash).
// Unset: a no-op.
#pragma once

#include <cstdint>
#include <string>

namespace recall {

void fault_point(const std::string& phase, int rank, int64_t count);

}  // namespace recall
