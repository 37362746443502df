// The merge job end to end, as named phases over one distributed context:
//   config -> preflight (headers only) -> grid plan -> [recall: typical samples -> representations
//   -> similarity -> weights] -> merge into merged.h5 -> HF export with checksums -> report ->
//   manifest -> commit (the output appears under its final name only when every rank succeeded).
#pragma once

#include <string>
#include <vector>

#include "recall/config/merge_config.h"
#include "recall/dist/context.h"
#include "recall/pipeline/preflight.h"

namespace recall {

struct MergeJobOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // --set key.sub=value
  bool verbose = false;
  bool quiet = false;
  bool preflight_only = false;         // `recall preflight`: stop after the plan
  bool fresh = false;                  // ignore an interrupted job's work instead of resuming
  PreflightOptions preflight;          // shapes-only planning (preflight_only)
  int plan_world = 0;                  // plan for this many ranks (0: the job's world)
};

// Runs the job on every rank of ctx; throws dist::CollectiveError (the same on every rank) on
// failure. Returns the resolved config.
MergeConfig run_merge_job(dist::Context& ctx, const MergeJobOptions& options);

}  // namespace recall
