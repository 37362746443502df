// Failure agreement over a private communicator: status records to rank 0, one verdict back,
// everything non-blocking and polled under a deadline so that a silent rank becomes a timeout.
#include "recall/dist/failure.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <thread>

#include "recall/dist/mpi_check.h"
#include "recall/dist/notice.h"

namespace recall::dist {

namespace {

constexpr int kRecordTag = 7001;
constexpr int kVerdictTag = 7002;
constexpr size_t kText = 3000;     // bytes of one rank's message (longer ones are cut)
constexpr int kMaxListed = 64;     // not-answering ranks named in a verdict

struct Record {
  int32_t failed = 0;
  int32_t stopped = 0;     // failed only because another rank's notice stopped it (notice.h)
  char text[kText] = {0};  // "<where>: <cause>"
};

struct WireVerdict {
  int32_t status = 0;
  int32_t first_failed_rank = -1;
  int32_t failed_ranks = 0;
  int32_t not_answering_count = 0;
  int32_t notices = 0;  // ranks that posted a failure notice (failed, not stopped by one)
  int32_t not_answering[kMaxListed] = {0};
  char message[kText + 512] = {0};
};

void copy_text(char* dst, size_t cap, const std::string& s) {
  const size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

using Clock = std::chrono::steady_clock;

// Polls until all requests complete or the deadline passes; returns false on timeout. `done[i]`
// tells which completed.
bool poll_until(std::vector<MPI_Request>& reqs, Clock::time_point deadline, std::vector<int>& done) {
  done.assign(reqs.size(), 0);
  for (long polls = 0;; ++polls) {
    bool all = true;
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (!done[i]) {
        int flag = 0;
        MPI_CHECK(MPI_Test(&reqs[i], &flag, MPI_STATUS_IGNORE));
        done[i] = flag;
        all = all && flag;
      }
    }
    if (all) return true;
    if (Clock::now() > deadline) return false;
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

Verdict from_wire(const WireVerdict& w) {
  Verdict v;
  v.status = static_cast<Verdict::Status>(w.status);
  v.first_failed_rank = w.first_failed_rank;
  v.failed_ranks = w.failed_ranks;
  v.not_answering.assign(w.not_answering, w.not_answering + std::min(w.not_answering_count, kMaxListed));
  v.message = w.message;
  return v;
}

[[noreturn]] void abort_job(const std::string& message) {
  std::fprintf(stderr, "recall: error: %s; aborting the job\n", message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 3);
  std::abort();  // MPI_Abort does not return; keeps the compiler's [[noreturn]] promise
}

// Rank 0's verdict from the records of the ranks that answered (done[p - 1] for rank p > 0). The
// first failing rank is the lowest that failed on its own; ranks that only stopped on its notice
// are neither named nor counted (unless no rank failed on its own: then the lowest failing).
WireVerdict decide(const std::vector<Record>& records, const std::vector<int>& done, const std::string& step,
                   double timeout_s) {
  const int size = static_cast<int>(records.size());
  std::vector<int> missing;
  for (int p = 1; p < size; ++p)
    if (!done[p - 1]) missing.push_back(p);
  int first_failed = -1, failed = 0, first_stopped = -1, stopped = 0;
  for (int p = 0; p < size; ++p) {
    const bool answered = p == 0 || done[p - 1];
    if (!answered || !records[p].failed) continue;
    int& first = records[p].stopped ? first_stopped : first_failed;
    ++(records[p].stopped ? stopped : failed);
    if (first < 0) first = p;
  }
  WireVerdict wire;
  wire.notices = failed;
  if (first_failed < 0) {
    first_failed = first_stopped;
    failed = stopped;
  }
  std::ostringstream msg;
  if (!missing.empty()) {
    wire.status = static_cast<int32_t>(Verdict::Status::Timeout);
    msg << "step '" << step << "': no answer within " << timeout_s << " s from rank";
    msg << (missing.size() > 1 ? "s" : "");
    for (size_t i = 0; i < missing.size() && i < static_cast<size_t>(kMaxListed); ++i)
      msg << (i ? ", " : " ") << missing[i];
    msg << " (crashed, hung, or never reached this step)";
    if (first_failed >= 0) msg << "; meanwhile " << records[first_failed].text;
  } else if (first_failed >= 0) {
    wire.status = static_cast<int32_t>(Verdict::Status::Failed);
    msg << "step '" << step << "': " << records[first_failed].text;
    if (size > 1) msg << " (" << failed << " of " << size << " ranks failed)";
  }
  wire.first_failed_rank = first_failed;
  wire.failed_ranks = failed;
  wire.not_answering_count = static_cast<int32_t>(missing.size());
  for (size_t i = 0; i < missing.size() && i < static_cast<size_t>(kMaxListed); ++i)
    wire.not_answering[i] = missing[i];
  copy_text(wire.message, sizeof wire.message, msg.str());
  return wire;
}

}  // namespace

Verdict agree(MPI_Comm comm, const std::string& where, const std::string& step,
              const std::string& error, const AgreementOptions& options) {
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  Record mine;
  mine.failed = error.empty() ? 0 : 1;
  mine.stopped = take_stopped_by_notice() && mine.failed ? 1 : 0;
  copy_text(mine.text, kText, where + (error.empty() ? "" : " failed: " + error));
  // Before the record: the ranks waiting for this one in a transfer stop now, not at the deadline.
  if (mine.failed && !mine.stopped) post_failure_notice(comm);
  const auto start = Clock::now();
  const auto timeout = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options.timeout_s));
  WireVerdict wire;

  if (rank != 0) {
    std::vector<MPI_Request> reqs(2);
    MPI_CHECK(MPI_Isend(&mine, sizeof mine, MPI_BYTE, 0, kRecordTag, comm, &reqs[0]));
    MPI_CHECK(MPI_Irecv(&wire, sizeof wire, MPI_BYTE, 0, kVerdictTag, comm, &reqs[1]));
    // Rank 0 decides `timeout` after it arrives; it may itself arrive late, hence the margin.
    std::vector<int> done;
    if (!poll_until(reqs, start + 2 * timeout + std::chrono::seconds(5), done)) {
      std::ostringstream os;
      os << "step '" << step << "': " << where << ": rank 0 gave no verdict within "
         << 2 * options.timeout_s + 5 << " s (rank 0 crashed, hung, or never reached this step)";
      if (options.abort_on_timeout) abort_job(os.str());
      MPI_CHECK(MPI_Waitall(2, reqs.data(), MPI_STATUSES_IGNORE));
    }
    if (wire.status != static_cast<int32_t>(Verdict::Status::Timeout)) settle_failure_notices(comm, wire.notices);
    return from_wire(wire);
  }

  // Rank 0: collect every record under the deadline.
  std::vector<Record> records(size);
  records[0] = mine;
  std::vector<MPI_Request> reqs;
  for (int p = 1; p < size; ++p) {
    reqs.emplace_back();
    MPI_CHECK(MPI_Irecv(&records[p], sizeof(Record), MPI_BYTE, p, kRecordTag, comm, &reqs.back()));
  }
  std::vector<int> done;
  const bool all_answered = poll_until(reqs, start + timeout, done);
  wire = decide(records, done, step, options.timeout_s);

  if (!all_answered && options.abort_on_timeout) abort_job(wire.message);

  // The verdict goes point to point, so a silent rank cannot keep it from the others.
  std::vector<MPI_Request> sends;
  for (int p = 1; p < size; ++p) {
    sends.emplace_back();
    MPI_CHECK(MPI_Isend(&wire, sizeof wire, MPI_BYTE, p, kVerdictTag, comm, &sends.back()));
  }
  if (!all_answered) {
    // Only without abort (tests): the late ranks still arrive; complete their records.
    MPI_CHECK(MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE));
  }
  MPI_CHECK(MPI_Waitall(static_cast<int>(sends.size()), sends.data(), MPI_STATUSES_IGNORE));
  if (all_answered) settle_failure_notices(comm, wire.notices);
  return from_wire(wire);
}

std::string first_error(MPI_Comm comm, const std::string& error) {
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  // Non-blocking and polled: a rank that failed outside this agreement (in its step's own agree,
  // notice.h) stops the ranks waiting here at once. The two ints live on the heap, deliberately
  // leaked when the wait is given up: MPI may still write the result of the abandoned reduction.
  std::unique_ptr<int[]> buf(new int[2]{error.empty() ? size : rank, size});
  std::vector<MPI_Request> req(1);
  MPI_CHECK(MPI_Iallreduce(&buf[0], &buf[1], 1, MPI_INT, MPI_MIN, comm, &req[0]));
  int noticed = -1;
  if (poll_requests(req, 0, &noticed) == WaitEnd::Notice) {
    buf.release();
    throw PeerFailedError(noticed, "an agreement on the previous calls' errors");
  }
  const int first = buf[1];
  if (first == size) return "";
  std::string text = rank == first ? error.substr(0, 1u << 20) : std::string();
  uint64_t n = text.size();
  MPI_CHECK(MPI_Bcast(&n, 1, MPI_UINT64_T, first, comm));
  text.resize(n);
  MPI_CHECK(MPI_Bcast(text.data(), static_cast<int>(n), MPI_CHAR, first, comm));
  return text;
}

CollectiveError::CollectiveError(const Verdict& v) : Error(v.message), verdict_(v) {}

int report_failure(MPI_Comm comm, const CollectiveError& e) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) {
    std::fprintf(stderr, "recall: error: %s\n", e.what());
    std::fflush(stderr);
  }
  return 1;
}

bool any_rank_failed(MPI_Comm comm, bool failed) {
  int mine = failed ? 1 : 0, any = 0;
  MPI_CHECK(MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm));
  return any != 0;
}

bool broadcast_flag(MPI_Comm comm, bool value, int root) {
  int v = value ? 1 : 0;
  MPI_CHECK(MPI_Bcast(&v, 1, MPI_INT, root, comm));
  return v != 0;
}

}  // namespace recall::dist
