// Running sweep points: merge under the MPI launcher, evaluate, record failures; a per-point
// lock file (recall/util/lock_file.h: O_EXCL, not flock, which Lustre may not offer across nodes)
// keeps two runs (a resubmitted array task and a straggler) off the same point.
#include "recall/sweep/run.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <ostream>

#include "recall/sweep/keep_weights.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"
#include "recall/util/lock_file.h"

extern char** environ;

namespace recall {

namespace {

std::string join_args(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// The log written since `offset`: its most telling line (the last "error:" line, else the last
// non-empty one) and its last lines.
struct LogExcerpt {
  std::string line, tail;
};

LogExcerpt excerpt(const std::string& path, uint64_t offset) {
  LogExcerpt x;
  if (!path_exists(path)) return x;
  const std::string text = read_text_file(path);
  std::vector<std::string> lines;
  size_t pos = std::min<size_t>(offset, text.size());
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  size_t err = lines.size();
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") != std::string::npos) x.line = lines[i];
    if (lines[i].find("error:") != std::string::npos || lines[i].find("Error:") != std::string::npos) err = i;
  }
  if (err < lines.size()) {
    // recall's messages continue on indented lines ("preflight found 1 problem:\n  - ...").
    x.line = lines[err];
    for (size_t i = err + 1; i < lines.size() && i < err + 6 && !lines[i].empty() && lines[i][0] == ' '; ++i)
      x.line += " " + lines[i].substr(lines[i].find_first_not_of(' '));
  }
  // The lines from the error on (or the last ones), which is where the cause is.
  const size_t first = err < lines.size() ? (err > 2 ? err - 2 : 0) : (lines.size() > 25 ? lines.size() - 25 : 0);
  for (size_t i = first; i < lines.size() && i < first + 25; ++i) x.tail += lines[i] + "\n";
  return x;
}

std::string describe(const SweepPlan& plan, const SweepPoint& p) {
  std::string s = "point " + sweep_point_name(p.index);
  if (plan.keys.empty()) return s;
  s += " (";
  for (size_t k = 0; k < plan.keys.size(); ++k) s += (k ? ", " : "") + plan.keys[k] + "=" + p.values[k];
  return s + ")";
}

}  // namespace

int run_logged(const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty()) fail("run_logged: empty command");
  const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot open the log '", log_path, "': ", std::strerror(errno));
  const std::string header = "=== " + utc_now() + " $ " + join_args(argv) + "\n";
  if (::write(fd, header.data(), header.size()) < 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot write the log '", log_path, "': ", std::strerror(err));
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, fd, 1);
  posix_spawn_file_actions_adddup2(&fa, fd, 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int err = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fd);
  if (err != 0) fail("cannot start '", argv[0], "': ", std::strerror(err));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) fail("waitpid for '", argv[0], "': ", std::strerror(errno));
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

std::string sweep_eval_result_path(const SweepPoint& point, const std::string& set) {
  return join_path(join_path(point.dir, "eval"), set + ".json");
}

bool sweep_point_finished(const SweepPlan& plan, const SweepPoint& point) {
  if (!path_exists(join_path(point.dir, "out/manifest.json"))) return false;
  for (const SweepEvalSet& s : plan.eval.sets)
    if (!path_exists(sweep_eval_result_path(point, s.name))) return false;
  return true;
}

namespace {

// A point's merge under the launcher; errors and log excerpts appended to `errors`/`details`.
void merge_point(const SweepRunOptions& o, const SweepPoint& p, const std::string& name, std::string& errors,
                 std::string& details, std::ostream& log) {
  const std::string out = join_path(p.dir, "out");
  log << name << ": merging on " << o.np << " rank(s)"
      << (sweep_weights_dropped(p) ? " (again: its weights were dropped and an evaluation is missing)" : "") << "\n"
      << std::flush;
  std::vector<std::string> argv = o.launcher;
  argv.insert(argv.end(), {"-n", std::to_string(o.np)});  // mpirun, mpiexec and srun all take -n
  if (o.oversubscribe) argv.push_back("--oversubscribe");
  argv.insert(argv.end(), {o.recall_bin, "merge", "--config", join_path(p.dir, "config.yaml"), "--set",
                           "output.dir=" + out});
  const std::string lp = join_path(p.dir, "merge.log");
  const uint64_t before = path_exists(lp) ? file_size_of(lp) : 0;
  const int rc = run_logged(argv, lp);
  if (rc != 0 || !path_exists(join_path(out, "manifest.json")) || sweep_weights_dropped(p)) {
    const LogExcerpt x = excerpt(lp, before);
    errors += "merge failed (exit status " + std::to_string(rc) + "): " + x.line + "\n";
    details += "--- merge.log (last lines) ---\n" + x.tail;
  }
}

// `recall eval` of the point's hf/ on every set without a result yet.
void evaluate_point(const SweepRunOptions& o, const SweepPlan& plan, const SweepPoint& p, const std::string& name,
                    std::string& errors, std::string& details, std::ostream& log) {
  make_directories(join_path(p.dir, "eval"));
  for (const SweepEvalSet& s : plan.eval.sets) {
    const std::string result = sweep_eval_result_path(p, s.name);
    if (path_exists(result)) continue;
    log << name << ": evaluating on '" << s.name << "'\n" << std::flush;
    const std::vector<std::string> argv = {o.recall_bin, "eval", "--model", join_path(join_path(p.dir, "out"), "hf"),
                                           "--data", s.path, "--out", result, "--batch", std::to_string(plan.eval.batch),
                                           "--dtype", plan.eval.dtype, "--device", plan.eval.device};
    const std::string lp = join_path(p.dir, "eval-" + s.name + ".log");
    const uint64_t before = path_exists(lp) ? file_size_of(lp) : 0;
    const int rc = run_logged(argv, lp);
    if (rc != 0 || !path_exists(result)) {
      const LogExcerpt x = excerpt(lp, before);
      errors += "eval '" + s.name + "' failed (exit status " + std::to_string(rc) + "): " + x.line + "\n";
      details += "--- eval-" + s.name + ".log (last lines) ---\n" + x.tail;
    }
  }
}

// keep_weights for a finished point. A failure here (a lock held too long, a file that cannot be
// removed) leaves the point finished: the next run applies it again.
bool keep_weights_of(const SweepRunOptions& o, const SweepPlan& plan, const SweepPoint& p, const std::string& name,
                     SweepRunSummary& sum, std::ostream& log) {
  LockOptions lo;
  lo.job = o.job_id;
  lo.restart = o.restart;
  try {
    const KeepOutcome k = apply_keep_weights(plan, p, lo, name, log);
    if (!k.message.empty()) log << name << ": " << k.message << "\n" << std::flush;
    sum.bytes_freed += k.bytes;
    return true;
  } catch (const std::exception& e) {
    log << name << ": FAILED to apply keep_weights: " << keep_weights_name(plan.keep_weights) << ": " << e.what() << "\n"
        << std::flush;
    return false;
  }
}

}  // namespace

SweepRunSummary run_sweep(const SweepRunOptions& o, std::ostream& log) {
  const SweepPlan plan = load_sweep_plan(o.dir);
  if (o.point >= static_cast<int>(plan.points.size()))
    fail("--point ", o.point, " is out of range: the sweep '", plan.dir, "' has ", plan.points.size(),
         " points (0-", plan.points.size() - 1, ")");
  if (o.np < 1) fail("--np must be at least 1, got ", o.np);
  SweepRunSummary sum;
  for (const SweepPoint& p : plan.points) {
    if (o.point >= 0 && p.index != o.point) continue;
    const std::string name = describe(plan, p);
    LockOptions lo;
    lo.job = o.job_id;
    lo.restart = o.restart;
    LockFile lock(join_path(p.dir, ".lock"), lo);
    if (!lock.held()) {
      log << name << ": skipped, another process is running it (" << lock.holder() << ")\n" << std::flush;
      ++sum.busy;
      continue;
    }
    if (!lock.takeover().empty()) log << name << ": " << lock.takeover() << "\n" << std::flush;
    if (sweep_point_finished(plan, p)) {
      log << name << ": already finished\n" << std::flush;
      ++sum.finished_before;
      // An earlier run may have stopped between the evaluation and keep_weights.
      if (!keep_weights_of(o, plan, p, name, sum, log)) ++sum.failed;
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const std::string error_path = join_path(p.dir, "error.txt");
    if (path_exists(error_path) && ::unlink(error_path.c_str()) != 0)
      fail("cannot remove the stale '", error_path, "': ", std::strerror(errno));
    std::string errors, details;
    // A point whose weights keep_weights dropped is merged again when an evaluation is missing.
    if (!path_exists(join_path(p.dir, "out/manifest.json")) || sweep_weights_dropped(p))
      merge_point(o, p, name, errors, details, log);
    if (errors.empty()) evaluate_point(o, plan, p, name, errors, details, log);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!errors.empty()) {
      write_file_atomic(error_path, errors + "\n" + details);
      log << name << ": FAILED after " << secs << " s: " << errors.substr(0, errors.find('\n')) << "\n" << std::flush;
      ++sum.failed;
    } else if (keep_weights_of(o, plan, p, name, sum, log)) {
      log << name << ": finished in " << secs << " s\n" << std::flush;
      ++sum.ran;
    } else {
      ++sum.failed;
    }
  }
  return sum;
}

}  // namespace recall
