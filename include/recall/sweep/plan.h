// Merge-config sweeps: a spec (base config + a grid of key values + explicit points + evaluation
// sets) expanded into one fully resolved merge config per point, written to a sweep directory
// (points/NNNN/config.yaml, index.csv, sweep.json) that `recall sweep run` and Slurm arrays use.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace recall {

struct SweepEvalSet {
  std::string name;  // names the result file points/NNNN/eval/<name>.json and report columns
  std::string path;  // JSONL samples for `recall eval` (absolute after planning)
};

// What a sweep keeps of each point's merged weights (merged.h5, hf/*.safetensors and the index)
// once the point is evaluated: every point's (`all`), none (`none`: only reports, configs and
// evaluation results stay), or only the best point's by the report's metric (`best`).
enum class KeepWeights { All, None, Best };
const char* keep_weights_name(KeepWeights k);  // "all", "none", "best"

struct SweepEvalConfig {
  std::vector<SweepEvalSet> sets;  // none = merge only
  int64_t batch = 8;               // `recall eval --batch`
  std::string dtype = "float32";   // `recall eval --dtype`
  std::string device = "cpu";      // `recall eval --device`
};

// One point before resolution: the overrides (dotted key, YAML value text) applied to the base.
struct SweepPointSpec {
  std::vector<std::pair<std::string, std::string>> overrides;
  std::string where;  // "spec.yaml:12:5" of the point (grid or points entry), for errors
  std::string label;  // "grid point 3" or "points[1]"
};

struct SweepSpec {
  std::string where;                // the spec file
  std::string text;                 // its text, saved as <sweep>/spec.yaml
  std::string base_text;            // YAML text of the base merge config
  std::string base_where;           // its file name, for the config parser's messages
  std::vector<std::string> keys;    // swept keys: grid keys in order, then new keys of `points`
  std::vector<SweepPointSpec> points;  // grid product (last key fastest), then `points`
  SweepEvalConfig eval;
  KeepWeights keep_weights = KeepWeights::All;  // `keep_weights`; none and best need eval sets
};

// Decodes a spec. `where` names the file (relative base_config paths are taken from its
// directory). Errors carry the YAML line and column.
SweepSpec parse_sweep_spec(const std::string& yaml_text, const std::string& where);
SweepSpec load_sweep_spec(const std::string& path);

// A planned point as `recall sweep run` and `report` see it.
struct SweepPoint {
  int index = 0;
  std::string dir;                  // <sweep>/points/NNNN (absolute)
  std::vector<std::string> values;  // resolved value of each swept key, in `keys` order
};

struct SweepPlan {
  std::string dir;                  // the sweep directory (absolute)
  std::vector<std::string> keys;
  std::vector<SweepPoint> points;
  SweepEvalConfig eval;
  KeepWeights keep_weights = KeepWeights::All;  // "all" for plans from before the key
};

// Resolves every point (parse_merge_config with the point's overrides; output.dir set to
// <dir>/points/NNNN/out) and writes the sweep directory atomically (<dir>.partial renamed).
// Fails, naming the point and its spec location, if any point's config is invalid; fails if
// `out_dir` already exists.
SweepPlan write_sweep_plan(const SweepSpec& spec, const std::string& out_dir);

// Reads <dir>/sweep.json.
SweepPlan load_sweep_plan(const std::string& dir);

// One CSV field (RFC 4180: quoted when it holds a comma, quote or newline).
std::string csv_field(const std::string& value);

// "0007": the name of point i's directory.
std::string sweep_point_name(int index);

// The value at a dotted key path of a YAML document, as flow YAML ("" when absent), numbers in
// their shortest round-trip form (0.1, not the 0.10000000000000001 that yaml-cpp emits).
std::string yaml_value_at(const std::string& yaml_text, const std::string& dotted_key);

}  // namespace recall
