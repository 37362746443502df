// Failure agreement: an error on any rank stops every rank with one message naming the first
// failing rank, its host, where in the grid it was, the step and the cause; a rank that stops
// answering becomes a timeout error (then MPI_Abort) instead of a hang.
//
// Protocol (on a private communicator, Context::control_mpi()): every rank sends a fixed-size
// status record to rank 0 (non-blocking), rank 0 collects them under a deadline and broadcasts
// one verdict (non-blocking); everyone polls with the deadline. If a rank never arrives, rank 0's
// verdict names it as not answering; if rank 0 never answers, the others time out. With
// abort_on_timeout (the default) a timeout prints the verdict and calls MPI_Abort.
#pragma once

#include <mpi.h>

#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "recall/util/error.h"

namespace recall::dist {

struct AgreementOptions {
  double timeout_s = 300;         // a rank later than this is "not answering"
  bool abort_on_timeout = true;   // false: return the timeout verdict (tests)
};

struct Verdict {
  enum class Status { Ok, Failed, Timeout };
  Status status = Status::Ok;
  int first_failed_rank = -1;      // lowest failing rank (Failed), or -1
  int failed_ranks = 0;            // how many ranks reported an error
  std::vector<int> not_answering;  // ranks that missed the deadline (Timeout, rank 0's view)
  std::string message;             // the first failing rank's message, or the timeout message
  bool ok() const { return status == Status::Ok; }
};

// Collective over `comm`: every rank calls it once, with `error` empty when its part succeeded.
// `where` is the rank's description (Context::where()), `step` the job step ("loading shards").
// Every rank returns the same verdict (except on timeout, where ranks may see different parts).
Verdict agree(MPI_Comm comm, const std::string& where, const std::string& step,
              const std::string& error, const AgreementOptions& options = {});

// The error every rank throws after a failed agreement; what() is the one-line message
// ("step 'merge': rank 2 (host n7, cells m1.s0) failed: <cause> (1 of 4 ranks failed)").
class CollectiveError : public Error {
 public:
  explicit CollectiveError(const Verdict& v);
  const Verdict& verdict() const { return verdict_; }

 private:
  Verdict verdict_;
};

// Runs fn() on every rank, then agrees: returns fn's value on every rank if all succeeded, else
// throws the same CollectiveError on every rank. Exceptions of fn become the rank's error text.
template <typename Fn>
auto run_collectively(MPI_Comm comm, const std::string& where, const std::string& step, Fn&& fn,
                      const AgreementOptions& options = {}) -> decltype(fn());

// The cheap agreement of hot loops (one all-reduce, no messages): true on every rank when any
// rank passes `failed`. The loop's own errors travel separately (the caller keeps its rank's).
bool any_rank_failed(MPI_Comm comm, bool failed);

// Rank `root`'s decision, on every rank (one checked broadcast).
bool broadcast_flag(MPI_Comm comm, bool value, int root);

// Collective over `comm`, blocking (every rank calls it once, in the same order as its other
// collectives on `comm`): the `error` of the lowest rank whose `error` is non-empty, on every rank,
// or "" when no rank has one. For layers that make collective calls of their own (the HDF5 writer,
// the export): a rank that failed tells the others before anyone enters the next collective, and
// every rank throws the same message.
std::string first_error(MPI_Comm comm, const std::string& error);

// Runs fn() on this rank, then agrees over `comm` as first_error does: returns when fn() succeeded
// on every rank, else every rank throws the lowest failing rank's message. For work that some
// ranks do between collective calls, e.g. a file only rank 0 writes:
//   dist::agreed(comm, [&] { if (rank == 0) write_file_atomic(path, text); });
template <typename Fn>
void agreed(MPI_Comm comm, Fn&& fn);

// For the single catch in main: rank 0 prints the message once to stderr ("recall: error: ...")
// and every rank gets the exit code 1. Non-collective errors caught in main go through agree()
// first so that every rank knows.
int report_failure(MPI_Comm comm, const CollectiveError& e);

}  // namespace recall::dist

namespace recall::dist {

// fn()'s exception as the rank's error text ("" when fn() returned).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return what.empty() ? "unknown error" : what;
  } catch (...) {
    return "unknown exception (not derived from std::exception)";
  }
  return "";
}

template <typename Fn>
void agreed(MPI_Comm comm, Fn&& fn) {
  if (std::string first = first_error(comm, error_of(fn)); !first.empty()) throw Error(first);
}

template <typename Fn>
auto run_collectively(MPI_Comm comm, const std::string& where, const std::string& step, Fn&& fn,
                      const AgreementOptions& options) -> decltype(fn()) {
  if constexpr (std::is_void_v<decltype(fn())>) {
    const Verdict v = agree(comm, where, step, error_of(fn), options);
    if (!v.ok()) throw CollectiveError(v);
  } else {
    std::optional<decltype(fn())> result;
    const Verdict v = agree(comm, where, step, error_of([&] { result.emplace(fn()); }), options);
    if (!v.ok()) throw CollectiveError(v);
    return std::move(*result);
  }
}

}  // namespace recall::dist

