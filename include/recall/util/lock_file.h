// A lock that works across the nodes of a cluster on any shared file system: the lock is a file
// created with O_CREAT | O_EXCL (atomic on NFSv3+ and Lustre), holding who took it:
//   job=<Slurm job id> restart=<SLURM_RESTART_COUNT> host=<hostname> pid=<pid> since=<UTC> nonce=<random>
// flock() is not used: Lustre mounted `noflock` refuses it and `localflock` makes it node-local,
// so two nodes would both "hold" the same point. While held, a thread refreshes the file's mtime
// (the heartbeat); the destructor removes the file if it is still this holder's.
//
// A lock file whose holder is gone is stale and is taken over:
//   - it is on this host and its pid no longer runs (or is a zombie);
//   - it names this Slurm job with an earlier restart count (Slurm runs a job once at a time, so
//     that holder is an earlier run of this job, requeued);
//   - its heartbeat is older than `stale_seconds` (the holder's node died or it was killed);
//   - it is unreadable (a holder killed between creating and writing it) and as old.
// A takeover renames the stale file aside and removes it only if it is the file judged stale (a
// lock created in the meantime is put back), so that two processes breaking the same stale lock
// do not both end up holding it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace recall {

struct LockOptions {
  std::string job;             // this process's Slurm job id ("" outside Slurm)
  int64_t restart = 0;         // SLURM_RESTART_COUNT
  int64_t stale_seconds = 600; // a heartbeat older than this is a dead holder
  int64_t heartbeat_seconds = 60;
  // This process's job and restart count from Slurm's environment (SLURM_JOB_ID,
  // SLURM_RESTART_COUNT), the other fields at their defaults.
  static LockOptions from_environment();
};

class LockFile {
 public:
  // Tries to take the lock once (breaking a stale one); see held().
  LockFile(std::string path, LockOptions options);
  ~LockFile();
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

  bool held() const { return fd_ >= 0; }
  // Not held: who holds it ("job 1234 (restart 0) on node7, pid 4242, since ..., heartbeat 12 s ago").
  const std::string& holder() const { return holder_; }
  // Held after breaking a stale lock: whose it was and why it was judged stale; else "".
  const std::string& takeover() const { return takeover_; }

 private:
  struct Heartbeat;
  std::string path_;
  LockOptions options_;
  int fd_ = -1;
  std::string nonce_;
  std::string holder_, takeover_;
  std::unique_ptr<Heartbeat> heartbeat_;
};

}  // namespace recall
