// The merge job: its phases in order, each agreed on by every rank before the next starts. Each
// phase lives in a file of its own; this file is the table of contents.
#include "recall/pipeline/merge_job.h"

#include <chrono>
#include <optional>
#include <sstream>

#include "recall/dist/failure.h"
#include "recall/merge/linalg.h"
#include "recall/pipeline/commit.h"
#include "recall/pipeline/extract.h"
#include "recall/pipeline/hf_shards.h"
#include "recall/pipeline/merge_phase.h"
#include "recall/pipeline/output_dir.h"
#include "recall/pipeline/plan.h"
#include "recall/pipeline/recall_weights.h"
#include "recall/pipeline/report.h"
#include "recall/pipeline/statistics.h"
#include "recall/pipeline/tensor_params.h"
#include "recall/util/cpus.h"
#include "recall/util/format.h"
#include "recall/util/fs.h"
#include "recall/util/log.h"
#include "recall/util/memory.h"

namespace recall {

namespace {

// Runs a job step on every rank and agrees on its outcome (recall/dist/failure.h); `timed` also
// records its seconds in the report.
class Steps {
 public:
  Steps(dist::Context& ctx, MergeReport* report) : ctx_(ctx), report_(report) {}
  template <typename Fn>
  auto step(const std::string& name, Fn&& fn) {
    return dist::run_collectively(ctx_.control_mpi(), ctx_.where(), name, std::forward<Fn>(fn));
  }
  template <typename Fn>
  auto timed(const std::string& name, Fn&& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    auto result = step(name, std::forward<Fn>(fn));
    report_->timings.emplace_back(name, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return result;
  }

 private:
  dist::Context& ctx_;
  MergeReport* report_;
};

// RECALL's phases: typical samples, representations, similarity and weights (or the weights an
// interrupted job saved).
RecallWeights recall_phases(Steps& steps, const dist::Grid& grid, MPI_Comm comm, int rank, const MergeConfig& cfg,
                            const MergeInputs& in, const OutputDir& out, bool resume, const Log& log) {
  if (resume && path_exists(out.recall_state())) {
    RecallWeights w = steps.step("load saved weights", [&] { return parse_recall_state(read_text_file(out.recall_state())); });
    log("resuming: typical samples and per-block weights from ", out.recall_state(), " (no extraction)");
    return w;
  }
  const auto task = steps.timed("tokenize", [&] { return load_task_samples(cfg, in); });
  log("data: ", task.size(), " samples (", task.tokens(), " tokens, ", format_bytes(task.bytes()), ") from ", cfg.data);
  const TypicalSelection sel =
      steps.timed("typical samples", [&] { return select_typical_samples(grid, comm, in, cfg, task, log); });
  log("typical samples: K=", sel.sample_ids.size(), " by k-means on hidden.", sel.hidden_state, " of '", cfg.reference,
      "' (", sel.iterations, " iterations on ", sel.clustered, " of ", task.size(), " samples, ", sel.kmeans_seconds,
      " s)");
  SampleTokens typical;
  for (int64_t i : sel.sample_ids) typical.add(task.sample(i));
  const Representations reps = steps.timed("representations", [&] {
    ExtractOptions eo;
    eo.device = cfg.parallel.device;
    eo.micro_batch = cfg.parallel.micro_batch;
    eo.stream_samples = cfg.parallel.stream_samples;
    eo.max_resident_bytes = stream_resident_bytes(cfg, in);
    eo.scratch_dir = cfg.parallel.scratch_dir;
    eo.pooling = cfg.kernel.pooling;
    return extract_representations(grid, comm, in, typical, eo, log);
  });
  RecallWeights w = steps.timed("similarity", [&] {
    return weights_from_representations(reps, cfg, in.reference, sel.sample_ids);
  });
  for (const auto& b : w.blocks) {
    std::ostringstream os;
    os << "block " << b.index << ": sigma2 " << b.sigma2 << "  similarity/weight";
    for (size_t m = 0; m < in.models.size(); ++m)
      os << "  " << cfg.models[m].name << " " << b.similarity[m] << "/" << b.weights[m];
    log(os.str());
  }
  steps.step("save weights", [&] {
    if (rank == 0) write_file_atomic(out.recall_state(), recall_state_json(w));
  });
  return w;
}

// What the totals say that a user should see: RegMean's worst-conditioned solve, and a rank whose
// memory passed its plan.
void log_merge_diagnostics(const MergeReport& report, const Log& log) {
  if (!report.rcond.empty()) {
    auto worst = report.rcond.begin();
    for (auto it = report.rcond.begin(); it != report.rcond.end(); ++it)
      if (it->second < worst->second) worst = it;
    const std::string kernels = linalg::blas_kernels();
    log("regmean: ", report.rcond.size(), " linear weights solved (rank 0: ", usable_cpus(), " thread(s) on ",
        linalg::blas_library(), kernels.empty() ? "" : " " + kernels, kernels.empty() ? "" : " kernels",
        "); the worst-conditioned Gram sum is '", worst->first, "'s (reciprocal condition ", worst->second,
        "; report.json \"regmean_rcond\" lists each)");
  }
  for (size_t r = 0; r < report.memory.size(); ++r)
    if (report.memory[r].peak_anon > report.memory[r].planned)
      log("warning: rank ", r, "'s resident anonymous memory peaked at ", format_bytes(report.memory[r].peak_anon),
          ", above its plan of ", format_bytes(report.memory[r].planned),
          "; size --mem with a margin and please report it (report.json \"memory\")");
}

}  // namespace

MergeConfig run_merge_job(dist::Context& ctx, const MergeJobOptions& opt) {
  const int rank = ctx.rank(), world = ctx.world();
  MPI_Comm comm = ctx.world_mpi();
  const Log log(rank, opt.quiet);
  MemoryPeaks peaks;  // this rank's resident memory, sampled until the report
  MergeReport report;
  Steps steps(ctx, &report);

  // ---- config and preflight (headers only) ----------------------------------------------------
  MergeConfig cfg = steps.step("config", [&] { return load_merge_config(opt.config_path, opt.overrides); });
  const std::string resolved_yaml = to_yaml(cfg);
  // The device before anything heavy: cuda on a node without a GPU fails every rank here. A
  // preflight that plans for another job (--world, --shapes-only) does not run on its nodes.
  if (opt.plan_world > 0 || opt.preflight.shapes_only) {
    if (cfg.parallel.device == Device::Cuda)
      log("note: parallel.device cuda is not checked here: this preflight plans for another job's nodes");
  } else {
    ctx.set_device(cfg.parallel.device, "parallel.device");
  }
  log(ctx.versions());
  log("resolved config:\n", resolved_yaml);
  for (const std::string& n : cfg.notes) log("note: ", n);
  if (opt.preflight.shapes_only && !opt.preflight_only) fail("shapes-only preflight is for `recall preflight` only");
  const MergeInputs in = steps.timed("preflight", [&] { return preflight(cfg, opt.preflight); });
  const int plan_world = opt.plan_world > 0 ? opt.plan_world : world;
  for (const std::string& n : in.notes) log("note: ", n);
  log(preflight_summary(in, plan_world, world));

  // ---- plan: grid and memory per rank -------------------------------------------------------
  const dist::GridSpec spec = grid_spec(in);
  std::optional<dist::Grid> grid;
  const StatisticsNeeds needs = statistics_needs(cfg);
  if (cfg.uses_representations() || needs.gram || needs.abs_sum) {
    grid = steps.step("plan", [&] {
      dist::GridSpec staged = spec;
      staged.stages = static_cast<int>(cfg.parallel.stages);
      return dist::Grid(staged, plan_world);
    });
    log("plan:\n", grid->plan());
  }
  // Every rank computes every planned rank's plan (cheap, deterministic): the budget verdict is the
  // same everywhere, and a preflight can plan a cluster's world from one process.
  std::vector<MemoryPlan> plans;
  for (int r = 0; r < plan_world; ++r) plans.push_back(memory_plan(cfg, in, spec, grid ? &*grid : nullptr, r, plan_world));
  log(memory_plan_text(plans, cfg.memory_budget, opt.verbose));
  steps.step("memory plan", [&] { check_memory_budget(plans, cfg.memory_budget); });
  if (opt.preflight_only) return cfg;

  // ---- output: <dir>.partial, committed at the end; a rerun with the same job key resumes ------
  const OutputDir out(cfg.output.dir);
  std::optional<OutputLock> lock;  // rank 0 holds <dir>.lock until the job ends, however it ends
  steps.step("lock output", [&] {
    if (rank != 0) return;
    lock.emplace(cfg.output.dir);
    // Checked again under the lock: another job may have committed since the preflight.
    for (const std::string& p : out.problems(cfg.output.overwrite, {}, {})) fail(p);
  });
  if (lock && !lock->takeover().empty()) log(lock->takeover());
  const std::string key = job_key(cfg, in);
  std::string removed;
  const bool resume = steps.step("prepare output", [&] { return rank == 0 && out.prepare(key, opt.fresh, &removed); });
  const bool resumed = dist::broadcast_flag(comm, resume, 0);
  if (!removed.empty()) log(removed);
  if (resumed) log("resuming the interrupted job in ", out.partial(), " (same config and inputs; --fresh restarts)");

  // ---- RECALL: typical samples -> representations -> similarity -> weights ---------------------
  if (cfg.uses_representations()) {
    const RecallWeights w = recall_phases(steps, *grid, comm, rank, cfg, in, out, resumed, log);
    report.typical_samples = w.typical_samples;
    report.blocks = w.blocks;
  }
  // ---- data-aware methods and AIM: calibration statistics ---------------------------------------
  std::optional<StatisticsStore> statistics;
  if (needs.any()) {
    report.calibration_samples = steps.timed("statistics", [&] {
      return compute_statistics(grid ? &*grid : nullptr, comm, cfg, in, out.statistics(), resumed, log);
    });
    steps.step("open statistics", [&] { statistics.emplace(cfg, in, out.statistics()); });
  }
  std::vector<std::vector<double>> block_w;
  for (const auto& b : report.blocks) block_w.push_back(b.weights);
  const std::vector<TensorParams> params =
      steps.step("parameters", [&] { return resolve_tensor_params(cfg, in, block_w); });
  fill_report_params(&report, in, params);

  // ---- merge into merged.h5 and the HF shards, then checksums ---------------------------------
  std::vector<TensorSpec> out_specs;
  for (const TensorSlot& slot : in.slots) out_specs.push_back({slot.name, cfg.output.dtype, slot.shape});
  HfShardWriter hf(out.hf(), out_specs, cfg.output.shard_bytes);
  const MergeStats ms = steps.timed("merge", [&] {
    return run_merge_phase(comm, cfg, in, params, out, resumed, hf, report, resolved_yaml, log,
                           statistics ? &*statistics : nullptr);
  });
  log("merge: ", format_bytes(ms.bytes_read), " read and ", format_bytes(ms.bytes_written), " written by rank 0 in ",
      report.timings.back().second, " s");
  const auto checksums =
      steps.timed("checksums", [&] { return write_checksums(comm, cfg, out.h5(), hf, in, ms.checksums, log); });
  std::vector<std::string> shard_files;
  if (cfg.output.writes(OutputFormat::Hf)) {
    for (const std::string& f : hf.files()) shard_files.push_back(f.substr(f.rfind('/') + 1));
    log("export: ", shard_files.size(), " shard(s) in hf/, written during the merge");
  }

  // ---- totals, report, manifest (last), commit --------------------------------------------------
  peaks.stop();
  gather_merge_totals(comm, cfg, in, ms, plans[rank].total(), peaks, &report);
  log_merge_diagnostics(report, log);
  report.method = cfg.method->name;
  report.reference = cfg.reference;
  report.world = world;
  report.output_dtype = output_dtype_name(cfg.output.dtype);
  for (const auto& m : cfg.models) report.models.push_back(m.name);
  steps.step("commit", [&] {
    if (rank == 0) write_outputs_and_commit({cfg, in, report, resolved_yaml, checksums, shard_files}, out);
  });
  log("done: ", out.final_dir(), " (merged.h5, hf/, report.json, report.svg, manifest.json)");
  return cfg;
}

}  // namespace recall
