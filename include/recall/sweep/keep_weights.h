// The spec key keep_weights: dropping a sweep point's merged weights once it is evaluated (none),
// or keeping only the best point's (best), decided under a sweep-wide lock so that points running
// at the same time (Slurm array tasks on different nodes) agree whatever order they finish in.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "recall/sweep/plan.h"
#include "recall/util/lock_file.h"

namespace recall {

// points/NNNN/out/weights_dropped.json: written before the first weight file is removed, so that
// a point whose weights are (being) dropped is known as such: finished, not broken.
std::string sweep_weights_dropped_path(const SweepPoint& point);
bool sweep_weights_dropped(const SweepPoint& point);

struct DroppedWeights {
  std::vector<std::string> removed;  // paths relative to out/ removed by this call
  std::vector<std::string> skipped;  // "hf/x: a symbolic link": not a file recall wrote
  uint64_t bytes = 0;                // freed by this call
};

// Removes the weight files the point's merge wrote: out/merged.h5, and in out/hf/ the shards
// out/manifest.json lists and model.safetensors.index.json. Only regular files, only when
// points/, points/NNNN and out/ are directories (not symbolic links) and out/manifest.json is a
// recall merge manifest; anything else fails and removes nothing. Records `reason` in
// weights_dropped.json first; calling it again finishes an interrupted drop.
DroppedWeights drop_sweep_point_weights(const SweepPlan& plan, const SweepPoint& point, const std::string& reason);

// <sweep>/best.json: the point whose weights keep_weights: best keeps, and its metric.
std::string sweep_best_path(const SweepPlan& plan);

struct KeepOutcome {
  std::string message;  // what was kept or dropped and the bytes freed ("" when nothing changed)
  uint64_t bytes = 0;   // freed, this point's or a replaced best point's
};

// Applies plan.keep_weights to a finished (merged and evaluated) point. best: under the lock
// <sweep>/.best.lock (a recall/util/lock_file.h lock, waited for), the point is compared with
// best.json's point by the report's metric (ties: the lower index); the better one keeps its
// weights and is recorded, the other's are dropped. Lines about waiting go to `log`, prefixed
// with `name`.
KeepOutcome apply_keep_weights(const SweepPlan& plan, const SweepPoint& point, const LockOptions& lock,
                               const std::string& name, std::ostream& log);

}  // namespace recall
