// Failure notices: posted by a failing rank's agreement, probed by the polling waits, received
// after the verdict (see recall/dist/notice.h).
#include "recall/dist/notice.h"

#include <chrono>
#include <thread>

#include "recall/dist/mpi_check.h"

namespace recall::dist {

namespace {

constexpr int kNoticeTag = 7003;  // beside the agreement's 7001/7002, which never match it

// One process, one Context: set and read by the main thread only (MPI_THREAD_FUNNELED).
MPI_Comm g_watched = MPI_COMM_NULL;
bool g_stopped = false;                // this rank threw PeerFailedError since the last agreement
bool g_has_posted = false;             // this rank posted a notice since the last verdict
int g_notice_payload = -1;             // the send buffer of its notices
std::vector<MPI_Request> g_posted;     // those sends, until the verdict's settle_failure_notices

}  // namespace

void watch_failure_notices(MPI_Comm comm) { g_watched = comm; }

int pending_failure_notice() {
  if (g_watched == MPI_COMM_NULL) return -1;
  int flag = 0;
  MPI_Status status;
  MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kNoticeTag, g_watched, &flag, &status));
  return flag ? status.MPI_SOURCE : -1;
}

PeerFailedError::PeerFailedError(int failed_rank, const std::string& waiting_in)
    : Error("rank " + std::to_string(world_rank_or_minus_one()) + " (host " + host_name() +
            ") stopped on a failure notice from rank " + std::to_string(failed_rank) + " while it waited in " +
            waiting_in),
      failed_rank_(failed_rank) {
  g_stopped = true;
}

bool take_stopped_by_notice() {
  const bool stopped = g_stopped;
  g_stopped = false;
  return stopped;
}

WaitEnd poll_requests(std::vector<MPI_Request>& requests, double timeout_s, int* noticed) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout_s));
  for (;;) {
    int done = 0;
    MPI_CHECK(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE));
    if (done) return WaitEnd::Done;
    if (const int from = pending_failure_notice(); from >= 0) {
      *noticed = from;
      return WaitEnd::Notice;
    }
    const auto now = clock::now();
    if (timeout_s > 0 && now > deadline) return WaitEnd::Timeout;
    if (now - start < std::chrono::milliseconds(2)) continue;
    std::this_thread::sleep_for(std::chrono::microseconds(now - start < std::chrono::milliseconds(200) ? 20 : 1000));
  }
}

void post_failure_notice(MPI_Comm comm) {
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  if (g_has_posted) return;  // one notice per failure (settle_failure_notices clears it)
  g_has_posted = true;
  g_notice_payload = rank;
  for (int p = 0; p < size; ++p) {
    if (p == rank) continue;
    g_posted.emplace_back();
    MPI_CHECK(MPI_Isend(&g_notice_payload, 1, MPI_INT, p, kNoticeTag, comm, &g_posted.back()));
  }
}

void settle_failure_notices(MPI_Comm comm, int count) {
  // Every notice was sent before its rank's record reached rank 0, so each of these is on its way.
  const int addressed_here = count - (g_has_posted ? 1 : 0);
  for (int i = 0; i < addressed_here; ++i) {
    int from = -1;
    MPI_CHECK(MPI_Recv(&from, 1, MPI_INT, MPI_ANY_SOURCE, kNoticeTag, comm, MPI_STATUS_IGNORE));
  }
  MPI_CHECK(MPI_Waitall(static_cast<int>(g_posted.size()), g_posted.data(), MPI_STATUSES_IGNORE));
  g_posted.clear();
  g_has_posted = false;
}

}  // namespace recall::dist
