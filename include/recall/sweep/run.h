// Running a planned sweep: each point's merge under an MPI launcher, then `recall eval` of the
// merged hf/ on every evaluation set. A failed point is recorded in points/NNNN/error.txt and
// the sweep goes on; finished points are skipped, so rerunning (or resubmitting) resumes. Then
// the spec's keep_weights drops weights no longer wanted (recall/sweep/keep_weights.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recall/sweep/plan.h"

namespace recall {

struct SweepRunOptions {
  std::string dir;                 // sweep directory
  int point = -1;                  // run only this point (-1 = every point)
  int np = 2;                      // ranks per merge
  std::vector<std::string> launcher = {"mpirun"};  // MPI launcher argv ("srun --mpi=pmix"); "-n N" is appended
  bool oversubscribe = false;      // add --oversubscribe (local runs on few cores)
  std::string recall_bin;          // the recall executable the points run
  std::string job_id;              // SLURM_JOB_ID ("" outside Slurm), recorded in point locks
  int64_t restart = 0;             // SLURM_RESTART_COUNT: a lock of an earlier run of this job is stale
};

// Finished: out/manifest.json exists and, when evaluation is configured, every eval result.
bool sweep_point_finished(const SweepPlan& plan, const SweepPoint& point);
// points/NNNN/eval/<set>.json
std::string sweep_eval_result_path(const SweepPoint& point, const std::string& set);

struct SweepRunSummary {
  int finished_before = 0;  // skipped: already finished
  int ran = 0;              // run now and finished
  int failed = 0;           // run now and failed (error.txt written)
  int busy = 0;             // skipped: another live process holds the point's lock
  uint64_t bytes_freed = 0; // weight files removed by keep_weights
};

// Runs the selected points; progress lines go to `log`.
SweepRunSummary run_sweep(const SweepRunOptions& options, std::ostream& log);

// Runs argv with stdout and stderr appended to log_path; returns the exit status (128 + signal
// when killed). Fails only if the program cannot be started.
int run_logged(const std::vector<std::string>& argv, const std::string& log_path);

}  // namespace recall
