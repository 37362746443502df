// recall merge --config FILE.yaml [--set key=value ...]: merges the configured models with RECALL
// or a baseline across every rank of the MPI job (mpirun/srun), into output.dir.
// recall preflight --config FILE.yaml: the same checks and the plan, without reading weights.
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/dist/context.h"
#include "recall/dist/failure.h"
#include "recall/pipeline/merge_job.h"

namespace recall::jobs {

namespace {

int run(int argc, char** argv, bool preflight_only) {
  const char* name = preflight_only ? "preflight" : "merge";
  ArgParser args(name, preflight_only
                           ? "Checks a merge config from headers only (models compatible, data, output directory,\n"
                             "memory plan per rank) and prints the plan. Reads no weights."
                           : "Merges the models of a config with RECALL or a baseline. Run under mpirun/srun for\n"
                             "several ranks; the output appears in output.dir only when every rank succeeded.");
  args.option("config", "FILE", "merge config (YAML)", "", true)
      .repeated("set", "KEY=VALUE", "override a config key, e.g. --set typical.clusters=16")
      .flag("fresh", "restart from scratch instead of resuming an interrupted job with the same config");
  if (preflight_only)
    args.option("world", "N", "plan for N ranks (e.g. the nodes x GPUs of a Slurm job) instead of this job's", "0")
        .flag("shapes-only", "plan from config.json alone: models may be directories with only a config.json,\n"
                             "or absent paths described by --arch; no weights or data needed")
        .option("arch", "CONFIG.json", "with --shapes-only: the architecture of every model whose path is absent "
                                       "(e.g. configs/arch/llama3-70b.json)", "");
  args
      .flag("verbose", "more detail in the log")
      .flag("quiet", "only errors");
  if (!args.parse(argc, argv)) return 0;
  MergeJobOptions opt;
  opt.config_path = args.get("config");
  opt.overrides = args.get_all("set");
  opt.verbose = args.flag_set("verbose");
  opt.quiet = args.flag_set("quiet");
  opt.preflight_only = preflight_only;
  opt.fresh = args.flag_set("fresh");
  if (preflight_only) {
    opt.plan_world = static_cast<int>(args.get_integer("world", 0));
    opt.preflight.shapes_only = args.flag_set("shapes-only");
    opt.preflight.architecture = args.get("arch");
    if (!opt.preflight.architecture.empty() && !opt.preflight.shapes_only) {
      std::cerr << "recall preflight: --arch describes models without weights; it needs --shapes-only\n";
      return 2;
    }
  }
  dist::Context ctx(&argc, &argv);
  try {
    run_merge_job(ctx, opt);
  } catch (const dist::CollectiveError& e) {
    return dist::report_failure(ctx.control_mpi(), e);
  } catch (const std::exception& e) {
    // An error outside an agreed step: make every rank know, then fail together.
    const dist::Verdict v = dist::agree(ctx.control_mpi(), ctx.where(), name, e.what());
    return dist::report_failure(ctx.control_mpi(), dist::CollectiveError(v));
  }
  return 0;
}

}  // namespace

int merge(int argc, char** argv) { return run(argc, argv, false); }
int preflight(int argc, char** argv) { return run(argc, argv, true); }

}  // namespace recall::jobs
