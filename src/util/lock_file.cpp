// Cross-node lock files: O_EXCL creation, a heartbeat, and stale-lock takeover.
#include "recall/util/lock_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "recall/util/error.h"
#include "recall/util/format.h"

namespace recall {

namespace {

std::string this_host() {
  char b[256] = {0};
  ::gethostname(b, sizeof b - 1);
  return b;
}

std::string random_nonce() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

// The file's text, or nullopt-like "missing" when it does not exist (any other error throws).
bool read_lock(const std::string& path, std::string* text, struct stat* st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    fail("cannot read the lock file '", path, "': ", std::strerror(errno));
  }
  text->clear();
  char buf[512];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      fail("cannot read the lock file '", path, "': ", std::strerror(err));
    }
    text->append(buf, static_cast<size_t>(n));
  }
  const int rc = ::fstat(fd, st);
  ::close(fd);
  if (rc != 0) fail("cannot stat the lock file '", path, "': ", std::strerror(errno));
  return true;
}

struct Holder {
  std::map<std::string, std::string> kv;
  bool valid = false;  // has host and pid
  std::string get(const std::string& k) const {
    auto it = kv.find(k);
    return it == kv.end() ? "" : it->second;
  }
  int64_t number(const std::string& k) const {
    try {
      return std::stoll(get(k));
    } catch (const std::exception&) {
      return -1;
    }
  }
};

Holder parse_holder(const std::string& text) {
  Holder h;
  std::istringstream in(text);
  for (std::string w; in >> w;)
    if (const auto eq = w.find('='); eq != std::string::npos) h.kv[w.substr(0, eq)] = w.substr(eq + 1);
  h.valid = !h.get("host").empty() && h.number("pid") > 0;
  return h;
}

std::string describe(const Holder& h, int64_t age) {
  if (!h.valid) return "an unreadable lock file (" + std::to_string(age) + " s old)";
  std::string s;
  if (h.get("job") != "-" && !h.get("job").empty()) s += "job " + h.get("job") + " (restart " + h.get("restart") + ") ";
  return s + "on " + h.get("host") + ", pid " + h.get("pid") + ", since " + h.get("since") + ", heartbeat " +
         std::to_string(age) + " s ago";
}

// Whether process `pid` of this host is gone: no such process, or a zombie nobody reaped yet (a
// killed MPI rank under a container's init stays one).
bool process_gone(int64_t pid) {
  if (pid <= 0) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return false;
  char buf[512] = {0};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const std::string stat(buf, n);
  const auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

// Why the holder is gone, or "" when it may be alive.
std::string stale_reason(const Holder& h, int64_t age, const LockOptions& o, const std::string& host) {
  if (!h.valid)
    return age > o.stale_seconds ? "it is unreadable and older than " + std::to_string(o.stale_seconds) + " s" : "";
  const int64_t pid = h.number("pid");
  if (h.get("host") == host && process_gone(pid))
    return "its process " + std::to_string(pid) + " no longer runs on this host";
  if (!o.job.empty() && h.get("job") == o.job && h.number("restart") < o.restart)
    return "it is from run " + h.get("restart") + " of this Slurm job, which is now in run " + std::to_string(o.restart);
  if (age > o.stale_seconds)
    return "its heartbeat is " + std::to_string(age) + " s old (a holder refreshes it every " +
           std::to_string(o.heartbeat_seconds) + " s; stale after " + std::to_string(o.stale_seconds) + " s)";
  return "";
}

int64_t age_of(const struct stat& st) {
  return static_cast<int64_t>(std::time(nullptr)) - static_cast<int64_t>(st.st_mtime);
}

}  // namespace

// Refreshes the lock file's mtime every heartbeat_seconds until destroyed.
struct LockFile::Heartbeat {
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  std::thread thread;

  Heartbeat(int fd, int64_t seconds) {
    thread = std::thread([this, fd, seconds] {
      std::unique_lock<std::mutex> lk(m);
      while (!cv.wait_for(lk, std::chrono::seconds(seconds), [this] { return stop; }))
        ::futimens(fd, nullptr);  // best effort: a missed beat only makes the lock look older
    });
  }
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lk(m);
      stop = true;
    }
    cv.notify_all();
    thread.join();
  }
};

LockFile::LockFile(std::string path, LockOptions options) : path_(std::move(path)), options_(std::move(options)) {
  const std::string host = this_host(), pid = std::to_string(::getpid());
  nonce_ = random_nonce();
  const std::string mine = "job=" + (options_.job.empty() ? std::string("-") : options_.job) +
                           " restart=" + std::to_string(options_.restart) + " host=" + host + " pid=" + pid +
                           " since=" + utc_now() + " nonce=" + nonce_ + "\n";
  for (int attempt = 0; attempt < 3; ++attempt) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ >= 0) {
      const bool ok = ::write(fd_, mine.data(), mine.size()) == static_cast<ssize_t>(mine.size()) && ::fsync(fd_) == 0;
      if (!ok) {
        const int err = errno;
        ::close(fd_);
        fd_ = -1;
        ::unlink(path_.c_str());
        fail("cannot write the lock file '", path_, "': ", std::strerror(err));
      }
      heartbeat_ = std::make_unique<Heartbeat>(fd_, options_.heartbeat_seconds);
      holder_.clear();
      return;
    }
    if (errno != EEXIST) fail("cannot create the lock file '", path_, "': ", std::strerror(errno));
    std::string text;
    struct stat st {};
    if (!read_lock(path_, &text, &st)) continue;  // released meanwhile: try again
    const Holder h = parse_holder(text);
    const int64_t age = age_of(st);
    holder_ = describe(h, age);
    const std::string why = stale_reason(h, age, options_, host);
    if (why.empty()) return;  // a live holder
    // Break it: move it aside, make sure it is the file judged stale, then remove it.
    const std::string aside = path_ + ".stale." + host + "." + pid + "." + nonce_;
    if (::rename(path_.c_str(), aside.c_str()) != 0) {
      if (errno == ENOENT) continue;  // another process broke it first
      fail("cannot move the stale lock file '", path_, "' aside: ", std::strerror(errno));
    }
    std::string moved;
    struct stat moved_st {};
    read_lock(aside, &moved, &moved_st);
    if (moved != text) {
      // A new holder created the lock between the read and the rename: put it back.
      if (::link(aside.c_str(), path_.c_str()) != 0 && errno != EEXIST)
        fail("cannot restore the lock file '", path_, "': ", std::strerror(errno));
      ::unlink(aside.c_str());
      holder_ = describe(parse_holder(moved), age_of(moved_st));
      return;
    }
    ::unlink(aside.c_str());
    takeover_ = "took over the stale lock of " + holder_ + ": " + why;
  }
  holder_ = "another process (the lock file changed hands during each of 3 attempts)";
}

LockFile::~LockFile() {
  heartbeat_.reset();
  if (fd_ < 0) return;
  std::string text;
  struct stat st {};
  try {
    if (read_lock(path_, &text, &st) && text.find("nonce=" + nonce_) != std::string::npos) ::unlink(path_.c_str());
  } catch (const std::exception&) {  // a destructor does not throw; the file is then left to go stale
  }
  ::close(fd_);
}

LockOptions LockOptions::from_environment() {
  LockOptions o;
  if (const char* job = std::getenv("SLURM_JOB_ID"); job && *job) o.job = job;
  if (const char* r = std::getenv("SLURM_RESTART_COUNT"); r && *r) o.restart = std::strtoll(r, nullptr, 10);
  return o;
}

}  // namespace recall
