// The statistics phase of data-aware methods and AIM (see statistics.h).
#include "recall/pipeline/statistics.h"

#include <nlohmann/json.hpp>

#include "recall/dist/collectives.h"
#include "recall/dist/failure.h"
#include "recall/engine/library.h"
#include "recall/pipeline/extract.h"
#include "recall/pipeline/merged_path.h"
#include "recall/pipeline/plan.h"
#include "recall/util/error.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"
#include "recall/util/progress.h"

namespace recall {

StatisticsNeeds statistics_needs(const MergeConfig& c) {
  StatisticsNeeds n;
  n.gram = c.method->statistics == Statistics::Gram || c.method->statistics == Statistics::MergedPathGram;
  n.merged_path = c.method->statistics == Statistics::MergedPathGram;
  n.fisher = c.method->statistics == Statistics::Fisher;
  n.abs_sum = c.aim.enabled();
  return n;
}

std::string fisher_path(const std::string& dir, size_t model) {
  return join_path(join_path(dir, std::to_string(model)), "fisher.safetensors");
}

namespace {

std::string complete_marker(const std::string& dir) { return join_path(dir, "complete.json"); }

// Each model's Fisher, model m on rank m % world (a whole model's backward on one rank), with
// progress lines from each rank that computes one.
void fisher_pass(MPI_Comm comm, const MergeConfig& c, const MergeInputs& in, const SampleTokens& samples,
                 const std::string& dir, const Log& log) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const Log here = log.printing_here(true);
  for (size_t m = 0; m < in.models.size(); ++m) {
    if (static_cast<int>(m % static_cast<size_t>(world)) != rank) continue;
    ProgressMeter meter(samples.size(), "samples");
    engine::FisherOptions fo;
    fo.model = &in.models[m];
    fo.samples = &samples;
    fo.device = c.parallel.device;
    fo.out_path = fisher_path(dir, m);
    const std::string what = "fisher of '" + c.models[m].name + "' (rank " + std::to_string(rank) + ")";
    fo.progress = [&](int64_t done, int64_t) {
      if (meter.advance(done - meter.done())) here(what, ": ", meter.line());
    };
    with_context("the Fisher of model '" + c.models[m].name + "' (" + c.models[m].path + ") on the calibration samples of " +
                     c.data,
                 [&] { engine::library().run_fisher(fo); });
  }
}

// What is wrong with a finished phase's files (naming the file), "" when nothing.
std::string saved_statistics_damage(const MergeConfig& c, const MergeInputs& in, const std::string& dir) {
  try {
    nlohmann::json::parse(read_text_file(complete_marker(dir))).at("samples").get<int64_t>();
  } catch (const std::exception& e) {
    return complete_marker(dir) + ": " + e.what();
  }
  try {
    return StatisticsStore(c, in, dir).damage();
  } catch (const std::exception& e) {  // the Fisher files are opened by the constructor
    return e.what();
  }
}

}  // namespace

int64_t compute_statistics(const dist::Grid* grid, MPI_Comm comm, const MergeConfig& c, const MergeInputs& in,
                           const std::string& dir, bool resume, const Log& log) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const StatisticsNeeds needs = statistics_needs(c);
  bool done = false;
  std::string damaged;
  dist::agreed(comm, [&] {
    if (rank != 0) return;
    done = resume && path_exists(complete_marker(dir));
    if (done) {
      damaged = saved_statistics_damage(c, in, dir);
      done = damaged.empty();
    }
    if (done) return;
    // An interrupted phase's files are recall's own: start them over.
    if (path_exists(dir)) remove_tree(dir);
    make_directories(dir);
    for (size_t m = 0; m < in.models.size(); ++m) make_directories(join_path(dir, std::to_string(m)));
  });
  if (!damaged.empty()) log("the saved calibration statistics are damaged (", damaged, "); computing them again");
  if (dist::broadcast_flag(comm, done, 0)) {  // rank 0 checked complete.json; every rank reads it
    const int64_t samples = nlohmann::json::parse(read_text_file(complete_marker(dir))).at("samples").get<int64_t>();
    log("resuming: calibration statistics from ", dir, " (", samples, " samples)");
    return samples;
  }
  const SampleTokens samples = load_samples(c, in, c.calibration.samples);
  log("calibration: ", samples.size(), " samples (", samples.tokens(), " tokens) from ", c.data, "; ",
      format_bytes(statistics_disk_bytes(c, in)), " of statistics files under ", dir, " (deleted at the commit)");
  if (needs.gram || needs.abs_sum) {
    ExtractOptions eo;
    eo.device = c.parallel.device;
    eo.micro_batch = c.parallel.micro_batch;
    eo.stream_samples = c.parallel.stream_samples;
    eo.max_resident_bytes = stream_resident_bytes(c, in);
    eo.scratch_dir = c.parallel.scratch_dir;
    eo.statistics.gram = needs.gram;
    eo.statistics.abs_sum = needs.abs_sum;
    eo.statistics.dir = dir;
    if (needs.merged_path) eo.merged_path = merged_path(c, in, dir);
    // AIM alone needs the base's activations only.
    const int only = needs.gram ? -1 : static_cast<int>(*in.base);
    extract_statistics(*grid, comm, in, samples, eo, log, only);
  }
  if (needs.fisher) fisher_pass(comm, c, in, samples, dir, log);
  dist::agreed(comm, [&] {
    if (rank != 0) return;
    const nlohmann::json j = {{"samples", samples.size()}, {"tokens", samples.tokens()}};
    write_file_atomic(complete_marker(dir), j.dump() + "\n");
  });
  return samples.size();
}

}  // namespace recall
