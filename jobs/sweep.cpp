// recall sweep plan|run|report|resolve: merge-config sweeps (see recall/sweep/*.h) and the
// config look-up the Slurm scripts use.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/config/merge_config.h"
#include "recall/sweep/plan.h"
#include "recall/sweep/report.h"
#include "recall/sweep/run.h"
#include "recall/util/lock_file.h"
#include "recall/util/error.h"
#include "recall/util/format.h"

namespace recall::jobs {

namespace {

const char* kSweepUsage =
    "usage: recall sweep <plan|run|report|resolve> ...\n\n"
    "  plan SPEC.yaml --out DIR     one resolved merge config per point, index.csv, the array size\n"
    "  run DIR [--local] [--np N] [--point I]\n"
    "                               merge and evaluate every unfinished point (or point I)\n"
    "  report DIR                   results.csv, results.md (best first, which points kept weights),\n"
    "                               results.svg\n"
    "  resolve CONFIG [--set k=v] [--key K]\n"
    "                               the resolved merge config (or one key), as the Slurm scripts read it\n";

int to_int(const std::string& name, const std::string& v, int min) {
  size_t used = 0;
  long x = 0;
  try {
    x = std::stol(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (v.empty() || used != v.size() || x < min) fail("--", name, " must be an integer >= ", min, ", got '", v, "'");
  return static_cast<int>(x);
}

std::string self_path() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) fail("cannot find the recall executable (/proc/self/exe): ", std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

int plan(int argc, char** argv) {
  ArgParser args("sweep plan",
                 "Expands a sweep spec (base_config or config, grid, points, eval, keep_weights) into one resolved\n"
                 "merge config per point under DIR/points/NNNN/, with index.csv, and prints the array size.");
  args.positional("spec", "sweep spec (YAML)").option("out", "DIR", "sweep directory to create", "", true);
  if (!args.parse(argc, argv)) return 0;
  const SweepSpec spec = load_sweep_spec(args.get("spec"));
  const SweepPlan p = write_sweep_plan(spec, args.get("out"));
  std::cout << "planned " << p.points.size() << " point(s) in " << p.dir;
  if (!p.keys.empty()) {
    std::cout << " over ";
    for (size_t i = 0; i < p.keys.size(); ++i) std::cout << (i ? ", " : "") << p.keys[i];
  }
  std::cout << (p.eval.sets.empty() ? "" : ", evaluated on " + std::to_string(p.eval.sets.size()) + " set(s)");
  if (p.keep_weights == KeepWeights::None) std::cout << "; weights dropped after evaluation (keep_weights: none)";
  if (p.keep_weights == KeepWeights::Best) std::cout << "; only the best point's weights kept (keep_weights: best)";
  std::cout << "\n";
  std::cout << "submit: sbatch --array=0-" << p.points.size() - 1 << " slurm/sweep.sbatch " << p.dir << "\n";
  std::cout << "array: 0-" << p.points.size() - 1 << "\n";
  return 0;
}

int run(int argc, char** argv) {
  ArgParser args("sweep run",
                 "Merges and evaluates every point not finished yet (or only --point I). Each merge runs as\n"
                 "LAUNCHER -n N recall merge; failures go to points/NNNN/error.txt and the sweep goes on.\n"
                 "With keep_weights none or best in the spec, an evaluated point's weight files are then removed\n"
                 "(best: unless it is the best point so far) and the bytes freed are printed.\n"
                 "Inside a Slurm job N defaults to SLURM_NTASKS; elsewhere (or with --local) to 2, oversubscribed.");
  args.positional("dir", "sweep directory (from `recall sweep plan`)")
      .flag("local", "run on this machine, ignoring any Slurm allocation (mpirun --oversubscribe)")
      .option("np", "N", "ranks per merge")
      .option("point", "I", "run only point I (Slurm arrays pass SLURM_ARRAY_TASK_ID)")
      .option("mpirun", "CMD", "MPI launcher, split on spaces; -n N is appended (slurm/sweep.sbatch passes "
                               "'srun --mpi=pmix' when the cluster's Slurm has PMIx)", "mpirun");
  if (!args.parse(argc, argv)) return 0;
  SweepRunOptions o;
  o.dir = args.get("dir");
  const char* slurm_job = std::getenv("SLURM_JOB_ID");
  const char* slurm_ntasks = std::getenv("SLURM_NTASKS");
  const bool in_slurm = !args.flag_set("local") && slurm_job && *slurm_job;
  o.oversubscribe = !in_slurm;
  o.np = args.has("np") ? to_int("np", args.get("np"), 1)
         : (in_slurm && slurm_ntasks && *slurm_ntasks) ? to_int("np (from SLURM_NTASKS)", slurm_ntasks, 1)
                                                      : 2;
  if (args.has("point")) o.point = to_int("point", args.get("point"), 0);
  o.launcher.clear();
  std::istringstream ls(args.get("mpirun"));
  for (std::string w; ls >> w;) o.launcher.push_back(w);
  if (o.launcher.empty()) fail("--mpirun must name a launcher, got '", args.get("mpirun"), "'");
  o.recall_bin = self_path();
  const LockOptions lock = LockOptions::from_environment();  // recorded in the point locks
  o.job_id = lock.job;
  o.restart = lock.restart;
  const SweepRunSummary s = run_sweep(o, std::cout);
  std::cout << "sweep run: " << s.ran << " finished now, " << s.finished_before << " already finished, " << s.failed
            << " failed, " << s.busy << " busy elsewhere";
  if (s.bytes_freed > 0) std::cout << "; keep_weights freed " << s.bytes_freed << " bytes (" << format_bytes(s.bytes_freed) << ")";
  std::cout << "\n";
  return s.failed > 0 ? 1 : 0;
}

int report(int argc, char** argv) {
  ArgParser args("sweep report",
                 "Gathers every point's report.json and evaluation results into DIR/results.csv,\n"
                 "DIR/results.md (best first) and DIR/results.svg; failed points are listed with their error,\n"
                 "and each finished point's weights as kept or dropped (the spec's keep_weights).");
  args.positional("dir", "sweep directory");
  if (!args.parse(argc, argv)) return 0;
  const SweepResults r = write_sweep_report(args.get("dir"));
  int finished = 0, failed = 0;
  for (const auto& p : r.points) finished += p.status == "finished", failed += p.status == "failed";
  std::cout << "sweep report: " << r.points.size() << " points, " << finished << " finished, " << failed
            << " failed; metric " << (r.metric.empty() ? "none" : r.metric);
  if (!r.points.empty() && r.points.front().has_metric)
    std::cout << ", best point " << sweep_point_name(r.points.front().index) << " (" << r.points.front().metric << ")";
  std::string kept;
  int n = 0;
  for (const auto& p : r.points)
    if (p.weights_kept) kept += (n++ ? ", " : "") + sweep_point_name(p.index);
  if (finished > 0)
    std::cout << "; weights kept for " << (n == finished ? "every finished point" : n == 0 ? "no point" : "point(s) " + kept)
              << " (keep_weights: " << keep_weights_name(r.keep_weights) << ")";
  std::cout << "\nwrote results.csv, results.md, results.svg in " << args.get("dir") << "\n";
  return 0;
}

int resolve(int argc, char** argv) {
  ArgParser args("sweep resolve",
                 "Prints a merge config as the merge job resolves it (defaults and --set overrides applied),\n"
                 "or one dotted key of it with --key; the Slurm scripts read output.dir this way.");
  args.positional("config", "merge config (YAML)")
      .repeated("set", "KEY=VALUE", "override a config key")
      .option("key", "KEY", "print only this dotted key (e.g. output.dir)");
  if (!args.parse(argc, argv)) return 0;
  const std::string yaml = to_yaml(load_merge_config(args.get("config"), args.get_all("set")));
  if (!args.has("key")) {
    std::cout << yaml;
    return 0;
  }
  const std::string v = yaml_value_at(yaml, args.get("key"));
  if (v.empty()) fail("the resolved config has no key '", args.get("key"), "'");
  std::cout << v << "\n";
  return 0;
}

}  // namespace

int sweep(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kSweepUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string sub = argv[1];
  if (sub == "plan") return plan(argc - 1, argv + 1);
  if (sub == "run") return run(argc - 1, argv + 1);
  if (sub == "report") return report(argc - 1, argv + 1);
  if (sub == "resolve") return resolve(argc - 1, argv + 1);
  std::cerr << "recall sweep: unknown subcommand '" << sub << "'\n\n" << kSweepUsage;
  return 2;
}

}  // namespace recall::jobs
