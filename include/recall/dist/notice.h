// Failure notices: how a rank whose step failed stops, within milliseconds, the ranks that wait for
// it inside a transfer (the pipelined extraction's hand-over of hidden states, the collectives
// after it), instead of leaving them there until the failure agreement's deadline and MPI_Abort.
//
// agree() (failure.h) posts a notice (the rank's number, 4 bytes) to every other rank of its
// communicator before its status record, non-blocking. The waits that poll (send_bytes and
// recv_bytes in collectives.h, wait_all under a watchdog in comm.h, first_error in failure.h) probe
// the watched communicator (the Context's control communicator) for a notice as they poll; on one
// they give up their transfer and throw PeerFailedError, and their rank enters the step's
// agreement. The agreement names the rank that posted, never a rank that stopped on its notice;
// after the verdict every rank receives the notices addressed to it, so none stays in flight.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "recall/util/error.h"

namespace recall::dist {

// The communicator whose notices the polling waits check (MPI_COMM_NULL, the default: none). The
// Context watches its control communicator from construction until it frees it.
void watch_failure_notices(MPI_Comm comm);

// The rank that posted a notice pending on the watched communicator, or -1 (one MPI_Iprobe; the
// notice stays pending until the agreement receives it).
int pending_failure_notice();

// What a wait throws when it gave up for a notice: "rank 1 (host n7) stopped on a failure notice
// from rank 0 while it waited in receiving 6656 bytes from rank 0". The agreement reports rank 0's
// own message instead.
class PeerFailedError : public Error {
 public:
  PeerFailedError(int failed_rank, const std::string& waiting_in);
  int failed_rank() const { return failed_rank_; }

 private:
  int failed_rank_;
};

// True when this rank threw PeerFailedError since the last agreement; the next agreement reads it
// (its failure then follows another rank's) and clears it.
bool take_stopped_by_notice();

// How a poll ended.
enum class WaitEnd { Done, Notice, Timeout };

// Polls `requests` with MPI_Testall until all complete (Done), a notice is pending (Notice; the
// requests are left as they are and *noticed is the posting rank), or `timeout_s` seconds pass
// (Timeout; <= 0: no limit). Spins for the first 2 ms (most transfers finish within it and a sleep
// would add its latency to each), then sleeps 20 us between polls and, after 200 ms, 1 ms, so that
// a waiting rank leaves the core to the ranks it waits for.
WaitEnd poll_requests(std::vector<MPI_Request>& requests, double timeout_s, int* noticed);

// For agree(): posts this rank's notice to every other rank of `comm` (non-blocking), and, after a
// verdict, receives the `count` notices addressed to this rank and completes its own posts.
void post_failure_notice(MPI_Comm comm);
void settle_failure_notices(MPI_Comm comm, int count);

}  // namespace recall::dist
