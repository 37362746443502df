// keep_weights: removing an evaluated sweep point's weight files (only what its merge wrote, never
// through a symbolic link) and choosing the one point whose weights a `best` sweep keeps.
#include "recall/sweep/keep_weights.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "recall/sweep/report.h"
#include "recall/sweep/run.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"

namespace recall {

using json = nlohmann::json;

namespace {

// What is at `path`, without following a symbolic link there.
struct Entry {
  enum Kind { Missing, File, Directory, Other } kind = Missing;
  uint64_t size = 0;
};

Entry entry_at(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    fail("cannot stat '", path, "': ", std::strerror(errno));
  }
  if (S_ISREG(st.st_mode)) return {Entry::File, static_cast<uint64_t>(st.st_size)};
  return {S_ISDIR(st.st_mode) ? Entry::Directory : Entry::Other, 0};
}

// A shard name as the merge writes them: a plain *.safetensors file name in hf/.
bool shard_name(const std::string& s) {
  return s.size() > 12 && s.find('/') == std::string::npos && s.compare(s.size() - 12, 12, ".safetensors") == 0;
}

// The weight files of a committed point output, relative to out/, after checking that the output
// is recall's and reached without symbolic links.
std::vector<std::string> weight_files(const SweepPlan& plan, const SweepPoint& p) {
  const std::string out = join_path(p.dir, "out");
  for (const std::string& d : {join_path(plan.dir, "points"), p.dir, out})
    if (entry_at(d).kind != Entry::Directory)
      fail("'", d, "' is not a directory (a symbolic link or missing); keep_weights removes nothing through it");
  const std::string manifest_path = join_path(out, "manifest.json");
  json manifest;
  if (entry_at(manifest_path).kind == Entry::File) manifest = json::parse(read_text_file(manifest_path), nullptr, false);
  if (!manifest.is_object() || manifest.value("format", std::string()) != "recall-merge-1")
    fail("'", manifest_path, "' is not a recall merge manifest (format recall-merge-1); keep_weights removes ",
         "weights only from outputs recall wrote");
  std::vector<std::string> files = {"merged.h5"};
  if (entry_at(join_path(out, "hf")).kind == Entry::Directory) {
    if (manifest.contains("hf_shards") && manifest["hf_shards"].is_array())
      for (const json& s : manifest["hf_shards"])
        if (s.is_string() && shard_name(s.get<std::string>())) files.push_back("hf/" + s.get<std::string>());
    files.push_back("hf/model.safetensors.index.json");
  }
  return files;
}

std::string describe_drop(const DroppedWeights& d) {
  std::string s;
  for (const std::string& f : d.removed) s += (s.empty() ? "" : ", ") + f;
  s = (s.empty() ? std::string("nothing left to remove") : "removed " + s) + "; freed " + std::to_string(d.bytes) +
      " bytes (" + format_bytes(d.bytes) + ")";
  for (const std::string& k : d.skipped) s += "; left alone " + k;
  return s;
}

// The point's metric as `recall sweep report` computes it (name: mean_accuracy or neg_mean_loss).
double point_metric(const SweepPlan& plan, const SweepPoint& p, std::string* name) {
  std::map<std::string, SweepEvalResult> eval;
  bool accuracy = false;
  for (const SweepEvalSet& s : plan.eval.sets) {
    eval[s.name] = read_eval_result(sweep_eval_result_path(p, s.name));
    accuracy |= eval[s.name].has_accuracy;
  }
  double m = 0;
  if (!sweep_metric(eval, accuracy, &m)) fail("point ", sweep_point_name(p.index), " has no metric in its evaluation results");
  *name = accuracy ? "mean_accuracy" : "neg_mean_loss";
  return m;
}

struct Best {
  int index = -1;  // -1: none recorded yet
  double metric = 0;
  std::string metric_name;
};

Best read_best(const SweepPlan& plan) {
  Best b;
  const std::string path = sweep_best_path(plan);
  if (!path_exists(path)) return b;
  try {
    const json j = json::parse(read_text_file(path));
    if (j.at("format") != "recall-sweep-best-1") fail("format is ", j.at("format").dump(), ", expected recall-sweep-best-1");
    b.index = j.at("point").get<int>();
    b.metric = j.at("metric").is_number() ? j.at("metric").get<double>() : NAN;  // a non-finite metric is null
    b.metric_name = j.at("metric_name").get<std::string>();
  } catch (const json::exception& e) {
    fail(path, ": not a best-point record: ", e.what());
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  if (b.index < 0 || b.index >= static_cast<int>(plan.points.size()))
    fail(path, ": point ", b.index, " is not a point of this sweep (0-", plan.points.size() - 1, ")");
  return b;
}

void write_best(const SweepPlan& plan, const Best& b) {
  const json j = {{"format", "recall-sweep-best-1"}, {"point", b.index}, {"name", sweep_point_name(b.index)},
                  {"metric_name", b.metric_name}, {"metric", std::isfinite(b.metric) ? json(b.metric) : json(nullptr)},
                  {"updated_utc", utc_now()}};
  write_file_atomic(sweep_best_path(plan), j.dump(2) + "\n");
}

// The sweep-wide lock, waited for: its holders only compare two points and remove files, which
// takes seconds; a dead holder's lock is taken over (lock_file.h), so the wait ends.
std::unique_ptr<LockFile> take_best_lock(const SweepPlan& plan, const LockOptions& options, const std::string& name,
                                         std::ostream& log) {
  const std::string path = join_path(plan.dir, ".best.lock");
  const auto start = std::chrono::steady_clock::now();
  for (bool said = false;; said = true) {
    auto lock = std::make_unique<LockFile>(path, options);
    if (lock->held()) {
      if (!lock->takeover().empty()) log << name << ": " << lock->takeover() << "\n" << std::flush;
      return lock;
    }
    if (!said) log << name << ": waiting for the sweep's best-point lock (" << lock->holder() << ")\n" << std::flush;
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(2 * options.stale_seconds))
      fail("the sweep's best-point lock '", path, "' is still held (", lock->holder(), "); rerun `recall sweep run` later");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

std::string metric_text(const std::string& name, double m) {
  char b[64];
  std::snprintf(b, sizeof b, "%.8g", m);  // enough digits that close metrics look different
  return name + " " + b;
}

// keep_weights: best for a finished point that still has its weights, under the lock. Replacing
// the previous best removes its files without taking its point lock: its runner may be waiting
// for this very sweep lock (taking both would deadlock), and a finished point's runner only reads
// hf/ again when an evaluation result went missing, which a rerun then redoes after a merge.
KeepOutcome decide_best(const SweepPlan& plan, const SweepPoint& p, const LockOptions& lock, const std::string& name,
                        std::ostream& log) {
  Best mine;
  mine.index = p.index;
  mine.metric = point_metric(plan, p, &mine.metric_name);
  const auto held = take_best_lock(plan, lock, name, log);
  const Best best = read_best(plan);
  KeepOutcome o;
  if (best.index >= 0 && best.index != p.index && best.metric_name != mine.metric_name)
    fail(sweep_best_path(plan), ": the best point's metric is ", best.metric_name, ", point ", sweep_point_name(p.index),
         "'s is ", mine.metric_name, "; the points' evaluation results do not compare");
  const std::string other = best.index >= 0 ? "point " + sweep_point_name(best.index) : "";
  if (best.index < 0 || best.index == p.index) {
    write_best(plan, mine);
    o.message = best.index < 0 ? "keeps its weights: the first point evaluated (" + metric_text(mine.metric_name, mine.metric) + ")"
                               : "";
  } else if (sweep_ranks_before(mine.metric, mine.index, best.metric, best.index)) {
    const std::string why = mine.metric == best.metric ? "ties with " + other + " and has the lower index" : "ranks above " + other;
    const DroppedWeights d = drop_sweep_point_weights(plan, plan.points[static_cast<size_t>(best.index)],
                                                      "keep_weights: best; point " + sweep_point_name(p.index) + " " + why);
    write_best(plan, mine);  // after the drop: an interrupted drop leaves the old record, which a rerun redoes
    o.bytes = d.bytes;
    o.message = "keeps its weights: " + why + " (" + metric_text(mine.metric_name, mine.metric) + " vs " +
                metric_text(best.metric_name, best.metric) + "); dropped " + other + "'s weights: " + describe_drop(d);
  } else {
    const DroppedWeights d = drop_sweep_point_weights(plan, p, "keep_weights: best; " + other + " ranks above it");
    o.bytes = d.bytes;
    o.message = "dropped its weights: " + other + " ranks above it (" + metric_text(best.metric_name, best.metric) +
                " vs " + metric_text(mine.metric_name, mine.metric) + "): " + describe_drop(d);
  }
  return o;
}

}  // namespace

std::string sweep_weights_dropped_path(const SweepPoint& point) {
  return join_path(join_path(point.dir, "out"), "weights_dropped.json");
}

bool sweep_weights_dropped(const SweepPoint& point) { return path_exists(sweep_weights_dropped_path(point)); }

std::string sweep_best_path(const SweepPlan& plan) { return join_path(plan.dir, "best.json"); }

DroppedWeights drop_sweep_point_weights(const SweepPlan& plan, const SweepPoint& p, const std::string& reason) {
  const std::string out = join_path(p.dir, "out");
  const std::vector<std::string> files = weight_files(plan, p);
  DroppedWeights d;
  std::vector<std::pair<std::string, uint64_t>> remove;
  uint64_t total = 0;
  for (const std::string& f : files) {
    const Entry e = entry_at(join_path(out, f));
    if (e.kind == Entry::File) remove.push_back({f, e.size}), total += e.size;
    else if (e.kind != Entry::Missing) d.skipped.push_back(f + " (not a regular file, so not one recall wrote)");
  }
  if (!sweep_weights_dropped(p)) {
    json listed = json::array();
    for (const auto& [f, size] : remove) listed.push_back(f);
    const json marker = {{"format", "recall-sweep-weights-dropped-1"}, {"reason", reason}, {"files", listed},
                         {"bytes", total}, {"dropped_utc", utc_now()}};
    write_file_atomic(sweep_weights_dropped_path(p), marker.dump(2) + "\n");
  }
  for (const auto& [f, size] : remove) {
    const std::string path = join_path(out, f);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail("cannot remove '", path, "': ", std::strerror(errno));
    d.removed.push_back(f);
    d.bytes += size;
  }
  return d;
}

KeepOutcome apply_keep_weights(const SweepPlan& plan, const SweepPoint& p, const LockOptions& lock,
                               const std::string& name, std::ostream& log) {
  KeepOutcome o;
  if (plan.keep_weights == KeepWeights::All) return o;
  if (plan.keep_weights == KeepWeights::Best && !sweep_weights_dropped(p)) return decide_best(plan, p, lock, name, log);
  // none, or a best sweep's point already dropped: (finish) removing its weights.
  const bool before = sweep_weights_dropped(p);
  const DroppedWeights d = drop_sweep_point_weights(plan, p, "keep_weights: none");
  o.bytes = d.bytes;
  if (!before || !d.removed.empty())  // said once: a rerun of a dropped point is quiet
    o.message = std::string(before ? "finished dropping its weights: " : "dropped its weights (keep_weights: none): ") +
                describe_drop(d);
  return o;
}

}  // namespace recall
