// Cross-node lock files (recall/util/lock_file.h): one holder at a time, the file says who holds
// it, it is removed on release, a heartbeat keeps it fresh, and a stale lock (dead pid on this
// host, an earlier run of this Slurm job, an old heartbeat, an old unreadable file) is taken over
// while a live one (this process, a fresh heartbeat from another node) is respected.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utime.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <thread>

#include "recall/util/fs.h"
#include "recall/util/lock_file.h"
#include "testing_files.h"

using recall::LockFile;
using recall::LockOptions;
using recall::testing::TempDir;

namespace {

std::string host() {
  char b[256] = {0};
  ::gethostname(b, sizeof b - 1);
  return b;
}

void put(const std::string& path, const std::string& text, int64_t age_seconds = 0) {
  std::ofstream(path) << text;
  if (age_seconds > 0) {
    const time_t t = std::time(nullptr) - age_seconds;
    struct utimbuf u {t, t};
    ::utime(path.c_str(), &u);
  }
}

int64_t age_of(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return static_cast<int64_t>(std::time(nullptr)) - static_cast<int64_t>(st.st_mtime);
}

pid_t dead_pid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  ::waitpid(p, nullptr, 0);
  return p;
}

LockOptions job(const std::string& id, int64_t restart = 0) {
  LockOptions o;
  o.job = id;
  o.restart = restart;
  return o;
}

}  // namespace

TEST(LockFile, OneHolderAtATimeAndTheFileSaysWho) {
  TempDir d;
  const std::string path = d.file(".lock");
  {
    LockFile a(path, job("123", 2));
    ASSERT_TRUE(a.held());
    EXPECT_TRUE(a.takeover().empty());
    const std::string text = recall::read_text_file(path);
    EXPECT_NE(text.find("job=123 restart=2 host=" + host() + " pid=" + std::to_string(::getpid())), std::string::npos)
        << text;
    LockFile b(path, job("456"));  // this process is alive: the lock is respected
    EXPECT_FALSE(b.held());
    EXPECT_NE(b.holder().find("job 123 (restart 2) on " + host() + ", pid " + std::to_string(::getpid())),
              std::string::npos)
        << b.holder();
  }
  EXPECT_FALSE(recall::path_exists(path)) << "released on destruction";
  LockFile c(path, job(""));
  EXPECT_TRUE(c.held());
  EXPECT_NE(recall::read_text_file(path).find("job=- "), std::string::npos);
}

TEST(LockFile, ADeadProcessOnThisHostIsStale) {
  TempDir d;
  const std::string path = d.file(".lock");
  const pid_t gone = dead_pid();
  put(path, "job=9 restart=0 host=" + host() + " pid=" + std::to_string(gone) + " since=x nonce=1\n");
  LockFile l(path, job("10"));
  ASSERT_TRUE(l.held());
  EXPECT_NE(l.takeover().find("its process " + std::to_string(gone) + " no longer runs on this host"),
            std::string::npos)
      << l.takeover();
  EXPECT_NE(recall::read_text_file(path).find("job=10 "), std::string::npos);
  EXPECT_EQ(d.list(), std::vector<std::string>{".lock"}) << "the stale file moved aside is removed";
}

TEST(LockFile, AnotherNodesLockIsStaleOnlyWhenItsHeartbeatIsOld) {
  TempDir d;
  const std::string path = d.file(".lock");
  put(path, "job=9 restart=0 host=elsewhere-node pid=4242 since=x nonce=1\n", 100);
  {
    LockFile fresh(path, job("10"));
    EXPECT_FALSE(fresh.held()) << "100 s is within the 600 s limit";
    EXPECT_NE(fresh.holder().find("on elsewhere-node, pid 4242"), std::string::npos) << fresh.holder();
  }
  EXPECT_TRUE(recall::path_exists(path)) << "a lock that is not ours stays";
  put(path, "job=9 restart=0 host=elsewhere-node pid=4242 since=x nonce=1\n", 700);
  LockFile old(path, job("10"));
  ASSERT_TRUE(old.held());
  EXPECT_NE(old.takeover().find("heartbeat is 70"), std::string::npos) << old.takeover();
}

TEST(LockFile, AnEarlierRunOfThisSlurmJobIsStale) {
  TempDir d;
  const std::string path = d.file(".lock");
  const std::string other = "job=77 restart=0 host=elsewhere-node pid=4242 since=x nonce=1\n";
  put(path, other);
  {
    LockFile same_run(path, job("77", 0));  // the same run of the same job elsewhere: alive
    EXPECT_FALSE(same_run.held());
    LockFile other_job(path, job("78", 5));
    EXPECT_FALSE(other_job.held());
  }
  LockFile requeued(path, job("77", 1));
  ASSERT_TRUE(requeued.held());
  EXPECT_NE(requeued.takeover().find("from run 0 of this Slurm job, which is now in run 1"), std::string::npos)
      << requeued.takeover();
}

TEST(LockFile, AnUnreadableLockIsStaleOnlyWhenOld) {
  TempDir d;
  const std::string path = d.file(".lock");
  put(path, "");  // a holder between creating and writing it
  {
    LockFile l(path, job("1"));
    EXPECT_FALSE(l.held());
  }
  put(path, "garbage", 3600);
  LockFile l(path, job("1"));
  EXPECT_TRUE(l.held());
  EXPECT_NE(l.takeover().find("unreadable"), std::string::npos) << l.takeover();
}

TEST(LockFile, TheHeartbeatKeepsTheFileFresh) {
  TempDir d;
  const std::string path = d.file(".lock");
  LockOptions o = job("1");
  o.heartbeat_seconds = 1;
  LockFile l(path, o);
  ASSERT_TRUE(l.held());
  const time_t t = std::time(nullptr) - 5000;
  struct utimbuf u {t, t};
  ::utime(path.c_str(), &u);
  ASSERT_GE(age_of(path), 4999);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_LE(age_of(path), 3) << "refreshed by the heartbeat";
}

TEST(LockFile, ALockReplacedByAnotherHolderIsNotRemovedOnRelease) {
  TempDir d;
  const std::string path = d.file(".lock");
  {
    LockFile l(path, job("1"));
    ASSERT_TRUE(l.held());
    put(path, "job=2 restart=0 host=elsewhere-node pid=1 since=x nonce=2\n");  // someone judged us stale
  }
  EXPECT_NE(recall::read_text_file(path).find("job=2 "), std::string::npos);
}
